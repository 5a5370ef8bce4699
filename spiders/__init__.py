"""Example spiders; `config.toml` names them by their `name`."""
