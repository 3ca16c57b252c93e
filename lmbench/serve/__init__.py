"""The local HTTP API: one route table, three dialects, models in supervised worker processes."""

from ._server import Server
from ._service import ROUTES, Settings, routes_table

__all__ = ["ROUTES", "Server", "Settings", "routes_table"]
