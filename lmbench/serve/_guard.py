"""Who may talk to ``lmbench serve``: Host names (DNS rebinding), browser origins (CSRF, CORS) and the API key.

Pure functions over header values, so each rule is tested without a server. A web page the user
visits can send requests to 127.0.0.1 too: only the checks here keep it from using the model,
reading the run history or writing into the store.
"""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse

from ._errors import ApiError
from ._settings import Settings

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, x-api-key, anthropic-version"


def _is_local_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str | None) -> str:
    """The host of a ``Host`` header, lower case, without port or brackets."""
    value = (header or "").strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(header: str | None, settings: Settings, bound_host: str) -> bool:
    """Whether a request's ``Host`` names this server: localhost, an IP address, the bound name or an allowed one.

    A DNS-rebinding page reaches the server under its own domain name, so other names are refused.
    """
    name = host_name(header).rstrip(".")
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True  # an address cannot be rebound
    except ValueError:
        pass
    allowed = {bound_host.lower(), *(h.lower() for h in settings.allow_hosts)}
    return _is_local_name(name) or name in allowed


def origin_allowed(origin: str, settings: Settings) -> bool:
    """Whether a browser page from ``origin`` may call the API: pages from this machine and ``cors_origins``."""
    if origin in settings.cors_origins or "*" in settings.cors_origins:
        return True
    parts = urllib.parse.urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.hostname is not None and _is_local_name(parts.hostname)


def key_matches(authorization: str | None, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``key`` (the Bearer scheme, in any case)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def check(
    *,
    host: str | None,
    origin: str | None,
    authorization: str | None,
    settings: Settings,
    bound_host: str,
    x_api_key: str | None = None,
) -> ApiError | None:
    """The refusal a request gets before any routing, or None when it may go on.

    The key may come as ``Authorization: Bearer KEY`` or, as Anthropic's clients send it, ``x-api-key: KEY``.
    """
    if not host_allowed(host, settings, bound_host):
        return ApiError(
            403, f"host {host_name(host)!r} is not served here (add it with --allow-host)", kind="permission_error"
        )
    if origin is not None and not origin_allowed(origin, settings):
        return ApiError(
            403,
            f"requests from web pages at {origin!r} are not allowed (allow one with --cors-origin)",
            kind="permission_error",
        )
    if settings.api_key and not (
        key_matches(authorization, settings.api_key)
        or (x_api_key is not None and hmac.compare_digest(x_api_key.strip().encode(), settings.api_key.encode()))
    ):
        return ApiError(
            401,
            "missing or wrong API key (Authorization: Bearer ... or x-api-key: ...)",
            kind="authentication_error",
            code="invalid_api_key",
        )
    return None


def is_json(content_type: str | None) -> bool:
    """Whether a request body is declared as JSON (browsers cannot send that cross-site without a preflight)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"
