"""The run store: every run in SQLite, read back as pandas through a columnar snapshot."""

from ._store import Store, default_store_path, environments, export, get_store, runs, use_store

__all__ = ["Store", "default_store_path", "environments", "export", "get_store", "runs", "use_store"]
