"""load_config: defaults, one readable line per problem, and paths relative to the config file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from crawler import __version__
from crawler.config import load_config
from crawler.exceptions import ConfigError
from crawler.retry import TRANSIENT_STATUSES

MINIMAL = '[[spiders]]\nspider = "products"\n'


def write(folder: Path, toml: str, name: str = "config.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(toml), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


# -- a good config --------------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))

    assert [entry.spider for entry in config.spiders] == ["products"]
    assert config.spiders[0].args == {}
    assert config.crawl.workers == 16
    assert config.crawl.shutdown_grace == 10.0
    assert (config.http.timeout.connect, config.http.timeout.read) == (10.0, 30.0)
    assert config.http.user_agent == f"crawler/{__version__}"
    assert config.http.max_redirects == 10
    assert config.http.verify_tls is True
    assert config.http.ca_bundle is None
    assert config.retry.attempts == 4
    assert config.retry.statuses == TRANSIENT_STATUSES
    assert config.output.format == "jsonl"
    assert config.checkpoint.path == Path(".crawler/checkpoint.db")
    assert config.practice_site.serve is False


def test_values_from_the_file_override_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [[spiders]]
            spider = "products"
            args = { start_url = "http://127.0.0.1:1/", pages = 3 }

            [crawl]
            workers = 4

            [http.timeout]
            read = 2.5

            [retry]
            statuses = [429, 503]

            [output]
            format = "csv"
            """,
        )
    )

    assert config.spiders[0].args == {"start_url": "http://127.0.0.1:1/", "pages": 3}
    assert config.crawl.workers == 4
    assert config.http.timeout.read == 2.5
    assert config.http.timeout.connect == 10.0  # the rest of the section keeps its defaults
    assert config.retry.statuses == frozenset({429, 503})
    assert config.output.format == "csv"


def test_config_is_immutable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(Exception, match="frozen"):
        config.crawl.workers = 2  # type: ignore[misc]


# -- one line per problem -------------------------------------------------------------------------


def test_unknown_key_at_top_level_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "typo = 1\n" + MINIMAL)
    assert problems(path) == [f"{path}: typo: unknown key"]


def test_unknown_key_in_a_spider_entry_names_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, '[[spiders]]\nspider = "products"\ntypo = 2\n')
    assert problems(path) == [f"{path}: spiders[0].typo: unknown key"]


def test_unknown_key_in_a_nested_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[http.timeout]\nconect = 5\n")
    assert problems(path) == [f"{path}: http.timeout.conect: unknown key"]


def test_message_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[[spiders]]\nspider = "products"\ntypo = 2\n')
    monkeypatch.chdir(tmp_path)
    assert problems(Path("config.toml")) == ["config.toml: spiders[0].typo: unknown key"]


def test_zero_read_timeout_must_be_greater_than_zero(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[http.timeout]\nread = 0\n")
    assert problems(path) == [f"{path}: http.timeout.read: must be greater than 0"]


@pytest.mark.parametrize(
    ("toml", "field", "message"),
    [
        ('[crawl]\nworkers = "many"\n', "crawl.workers", "must be a valid integer"),
        ("[crawl]\nworkers = 0\n", "crawl.workers", "must be greater than or equal to 1"),
        ("[http]\nmax_redirects = 1.5\n", "http.max_redirects", "must be a valid integer"),
        ("[http]\nverify_tls = 3\n", "http.verify_tls", "must be a valid boolean"),
        ('[output]\nformat = "xml"\n', "output.format", "must be 'jsonl', 'json', 'csv' or 'parquet'"),
        ("[retry]\nattempts = 0\n", "retry.attempts", "must be greater than or equal to 1"),
        ("http = 5\n", "http", "must be a valid dictionary"),
    ],
)
def test_wrong_type_or_value_names_the_field(tmp_path: Path, toml: str, field: str, message: str) -> None:
    # Top-level keys must come before the [[spiders]] table in TOML.
    path = write(tmp_path, toml + MINIMAL if toml.startswith("http =") else MINIMAL + toml)
    (line,) = problems(path)
    assert line.startswith(f"{path}: {field}: {message}")


def test_wrong_types_in_a_spider_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "[[spiders]]\nspider = 5\nargs = 3\n")
    assert problems(path) == [
        f"{path}: spiders[0].spider: must be a valid string",
        f"{path}: spiders[0].args: must be a valid dictionary",
    ]


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        typo = 1
        [[spiders]]
        spider = "products"
        other = 2
        [http.timeout]
        read = 0
        [retry]
        statuses = [200]
        """,
    )
    lines = problems(path)
    assert sorted(lines) == sorted(
        [
            f"{path}: typo: unknown key",
            f"{path}: spiders[0].other: unknown key",
            f"{path}: http.timeout.read: must be greater than 0",
            f"{path}: retry.statuses: not error statuses: [200]",
        ]
    )
    assert all("\n" not in line for line in lines)


def test_missing_spiders_list_is_required(tmp_path: Path) -> None:
    path = write(tmp_path, "[crawl]\nworkers = 2\n")
    assert problems(path) == [f"{path}: spiders: required, but missing"]


def test_empty_spiders_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "spiders = []\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: spiders: ")
    assert "at least 1" in line


def test_a_spider_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + MINIMAL + '[[spiders]]\nspider = "other"\n')
    assert problems(path) == [f"{path}: spiders: listed more than once: products"]


@pytest.mark.parametrize("status", [200, 399, 600, 302])
def test_retry_statuses_outside_400_to_599_are_refused(tmp_path: Path, status: int) -> None:
    path = write(tmp_path, MINIMAL + f"[retry]\nstatuses = [503, {status}]\n")
    assert problems(path) == [f"{path}: retry.statuses: not error statuses: [{status}]"]


@pytest.mark.parametrize("status", [400, 599])
def test_retry_statuses_bounds_are_accepted(tmp_path: Path, status: int) -> None:
    config = load_config(write(tmp_path, MINIMAL + f"[retry]\nstatuses = [{status}]\n"))
    assert config.retry.statuses == frozenset({status})


# -- files that cannot be read --------------------------------------------------------------------


def test_invalid_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[spiders]\nspider = "products"\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: not valid TOML: ")
    assert "line 1" in line
    assert "\n" not in line


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert problems(path) == [f"{path}: no such file"]


def test_a_directory_is_not_readable_as_config(tmp_path: Path) -> None:
    (line,) = problems(tmp_path)
    assert line.startswith(f"{tmp_path}: cannot read: ")


def test_non_utf8_file_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(MINIMAL.encode() + b"# \xff\xfe\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: cannot read: ")


# -- paths ----------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, MINIMAL + '[checkpoint]\npath = "state/cp.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(Path("../project/config.toml"))

    assert config.base_dir == project.resolve()
    assert config.base_dir.is_absolute()
    assert config.resolve(config.checkpoint.path) == project.resolve() / "state" / "cp.db"
    assert config.output_path("products") == project.resolve() / "output" / "products.jsonl"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "cp.db"
    config = load_config(write(tmp_path, MINIMAL + f'[checkpoint]\npath = "{target}"\n'))
    assert config.resolve(config.checkpoint.path) == target
    assert config.resolve(str(target)) == target


def test_output_path_fills_in_spider_and_format(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + '[output]\nformat = "csv"\npath = "out/{format}/{spider}.data"\n'))
    assert config.output_path("books") == tmp_path.resolve() / "out" / "csv" / "books.data"


def test_unknown_output_path_placeholder_is_a_config_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[output]\npath = "out/{name}.jsonl"\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: output.path: ")


def test_shared_output_file_for_several_spiders_is_a_config_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[spiders]]\nspider = "other"\n[output]\npath = "out/all.jsonl"\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: output.path: ")


def test_a_literal_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[spiders]]\nspider = "s"\n[spiders.login]\nurl = "http://h/login"\n'
        'fields = { username = "me", password = "hunter2" }\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    [line] = error.value.problems
    assert line.startswith(f"{path}: spiders[0].login.fields: password looks like a credential")
    assert "hunter2" not in line


def test_a_field_given_both_literally_and_from_the_environment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[spiders]]\nspider = "s"\n[spiders.token]\nurl = "http://h/token"\n'
        'fields = { client_id = "x" }\nenv_fields = { client_id = "CLIENT_ID" }\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "client_id also given in fields" in error.value.problems[0]


# -- what `crawler check` must catch, because the crawl cannot ------------------------------------


@pytest.mark.parametrize(
    ("toml", "field", "message"),
    [
        ("[http.timeout]\nread = inf\n", "http.timeout.read", "must be a finite number"),
        ("[http.timeout]\ntotal = nan\n", "http.timeout.total", "must be a finite number"),
        ("[politeness]\ndelay = inf\n", "politeness.delay", "must be a finite number"),
        ("[politeness]\ndelay = 1e300\n", "politeness.delay", "must be less than or equal to 86400"),
        ("[retry]\nmax_retry_after = 1e300\n", "retry.max_retry_after", "must be less than or equal to 86400"),
        ('[http]\nuser_agent = "bot\\r\\nX-Injected: 1"\n', "http.user_agent", "must not contain control characters"),
    ],
)
def test_numbers_and_header_values_the_crawl_cannot_use_are_refused(
    tmp_path: Path, toml: str, field: str, message: str
) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + toml))
    assert problem.startswith(f"{tmp_path / 'config.toml'}: {field}: {message}"), problem


def test_a_ca_bundle_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + '[http]\nca_bundle = "certs/missing.pem"\n'))
    assert problem == f"{tmp_path / 'config.toml'}: http.ca_bundle: no such file: {tmp_path / 'certs' / 'missing.pem'}"
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "missing.pem").write_text("")
    assert load_config(tmp_path / "config.toml").http.ca_bundle == Path("certs/missing.pem")
