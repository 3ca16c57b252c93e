"""Optional dependencies: each belongs to an extra of lmbench, and a missing one is a clear error naming it.

``pip install lmbench`` brings the engine, the store, sweeps, the CLI and the HTTP API; the panel,
magics, plots and notebooks (``[notebook]``), the reference scores (``[eval]``) and Dask sweeps
(``[dask]``) come with extras.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise ``MissingExtraError`` saying that ``what`` needs lmbench's ``extra``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name.split(".")[0]):
            raise
        raise MissingExtraError(
            f"{what} needs the {exc.name!r} package, which comes with lmbench's {extra!r} extra: "
            f"pip install 'lmbench[{extra}]'"
        ) from None
