"""The run store: every run in SQLite, read back as pandas through a columnar snapshot."""

from ._store import (
    Store,
    add_rating,
    default_store_path,
    environments,
    export,
    get_store,
    ratings,
    runs,
    use_store,
)

__all__ = [
    "Store",
    "add_rating",
    "default_store_path",
    "environments",
    "export",
    "get_store",
    "ratings",
    "runs",
    "use_store",
]
