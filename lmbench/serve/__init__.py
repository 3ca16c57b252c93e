"""The local HTTP API: one route table, three dialects, models in supervised worker processes."""

from ._routes import ROUTES, routes_table
from ._server import Server
from ._settings import Settings

__all__ = ["ROUTES", "Server", "Settings", "routes_table"]
