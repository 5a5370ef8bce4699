"""Databases that committed items are written to, beside the output file: SQLite and
PostgreSQL tables made from a spider's item model, upserted by a key, in batches, each sink from
its own position recorded in the checkpoint (see ``crawler.delivery``)."""
