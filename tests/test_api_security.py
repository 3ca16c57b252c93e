"""No web page can drive ``lmbench serve``: cross-site requests, DNS rebinding, keys.

Each class of attack is a generated corpus of requests (fixed lists crossed with every route), sent
to a real server; nothing of it may run the model or read the store.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import jupyterserver
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import ROUTES, Server, Settings
from lmbench.serve import _guard as _http_guard

EVIL_ORIGINS = [
    "http://evil.example",
    "https://evil.example:8443",
    "null",
    "http://127.0.0.1.evil.example",
    "http://localhost.evil.example",
    "file://",
]
EVIL_HOSTS = ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "attacker"]
SIMPLE_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
BODY = b'{"prompt": "Once upon a time", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}'


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    options = getattr(request, "param", {})
    with Server(Settings(model=str(TEST_MODEL), **options), port=0) as running:
        yield running


def _routes(method: str) -> list[str]:
    return [f"/{p}" for r in ROUTES if r.method == method for p in r.paths]


def test_cross_site_simple_posts_are_refused(server: Server) -> None:
    cases = itertools.product(_routes("POST"), EVIL_ORIGINS, SIMPLE_TYPES)
    for path, origin, kind in cases:
        headers = {"Origin": origin, **({"Content-Type": kind} if kind else {})}
        response = requests.post(f"{server.url}{path}", data=BODY, headers=headers, timeout=30)
        refused = {403, 400} if kind and kind.startswith("multipart") else {403}  # tornado rejects a bad form first
        assert response.status_code in refused, (path, origin, kind, response.status_code)
        assert "Access-Control-Allow-Origin" not in response.headers
    assert lmbench.runs().empty


def test_evil_origins_cannot_read_either(server: Server) -> None:
    for path, origin in itertools.product(_routes("GET"), EVIL_ORIGINS):
        if path.endswith("health"):
            continue
        response = requests.get(f"{server.url}{path}", headers={"Origin": origin}, timeout=30)
        assert response.status_code == 403, (path, origin)


def test_bodies_must_be_json_even_without_an_origin(server: Server) -> None:
    for path, kind in itertools.product(_routes("POST"), SIMPLE_TYPES):
        if kind and kind.startswith("multipart"):
            continue  # tornado answers a malformed form with 400 before any handler
        headers = {"Content-Type": kind} if kind else {}
        response = requests.post(f"{server.url}{path}", data=BODY, headers=headers, timeout=30)
        assert response.status_code == 415 and "application/json" in response.json()["error"]["message"]
    assert lmbench.runs().empty


def test_dns_rebinding_hosts_are_refused(server: Server) -> None:
    for (method, path), host in itertools.product(
        [("GET", p) for p in _routes("GET")] + [("POST", "/api/generate")], EVIL_HOSTS
    ):
        response = requests.request(
            method, f"{server.url}{path}", json={"prompt": "x"}, headers={"Host": host}, timeout=30
        )
        assert response.status_code == 403, (path, host)
        assert "runs" not in response.text
    for host in ["localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]", "LOCALHOST"]:
        assert requests.get(f"{server.url}/api/status", headers={"Host": host}, timeout=10).status_code == 200, host


@pytest.mark.parametrize(
    "server", [{"allow_hosts": ("lab.internal",), "cors_origins": ("https://app.example",)}], indirect=True
)
def test_allowed_hosts_and_origins_get_proper_cors_answers(server: Server) -> None:
    assert requests.get(f"{server.url}/api/status", headers={"Host": "lab.internal:80"}, timeout=10).ok
    for origin in ["https://app.example", "http://localhost:5173", f"http://127.0.0.1:{server.port}"]:
        answer = requests.post(
            f"{server.url}/api/generate",
            json={"prompt": "Once", "max_tokens": 2},
            headers={"Origin": origin},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
        preflight = requests.options(
            f"{server.url}/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
            timeout=10,
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    refused = requests.options(f"{server.url}/api/generate", headers={"Origin": "http://evil.example"}, timeout=10)
    assert refused.status_code == 403


@pytest.mark.parametrize("server", [{"api_key": "s3cret"}], indirect=True)
def test_the_key_is_checked_before_routing_in_any_case(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for path in ["/nothing/here", "/v1/models", "/api/runs"]:
        response = requests.get(f"{server.url}{path}", timeout=10)
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    for scheme in ["Bearer", "bearer", "BEARER"]:
        ok = requests.get(f"{server.url}/api/status", headers={"Authorization": f"{scheme} s3cret"}, timeout=10)
        assert ok.status_code == 200, scheme
    for wrong in ["s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2", "Token s3cret"]:
        assert requests.get(f"{server.url}/api/status", headers={"Authorization": wrong}, timeout=10).status_code == 401
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200, "health needs no key"
    preflight = requests.options(f"{server.url}/api/generate", headers={"Origin": "http://localhost:3000"}, timeout=10)
    assert preflight.status_code == 204, "preflights carry no key"
    assert "s3cret" not in caplog.text, "keys are never logged"


@pytest.mark.no_test_model
def test_the_guard_rules_one_by_one() -> None:
    settings = Settings(allow_hosts=("box.lan",), cors_origins=("https://ok.example",))
    assert _http_guard.host_name("[::1]:8080") == "::1" and _http_guard.host_name("Example.COM:80") == "example.com"
    assert _http_guard.host_allowed("10.0.0.5:8080", settings, "0.0.0.0"), "an IP address cannot be rebound"
    assert _http_guard.host_allowed("box.lan", settings, "127.0.0.1")
    assert _http_guard.host_allowed("myhost", settings, "myhost")
    assert not _http_guard.host_allowed("", settings, "127.0.0.1")
    assert _http_guard.origin_allowed("https://ok.example", settings)
    assert not _http_guard.origin_allowed("https://ok.example.evil", settings)
    assert _http_guard.key_matches("bearer  k ", "k") and not _http_guard.key_matches(None, "k")
    assert _http_guard.is_json("application/json; charset=utf-8") and not _http_guard.is_json("text/json")


def test_jupyter_extension_refuses_cross_site_requests(tmp_path, lmbench_home) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    with jupyterserver.running(tmp_path, lmbench_home, root) as jupyter:
        base = f"{jupyter.url}/lmbench"
        auth = {"Authorization": f"token {jupyter.token}"}
        evil = requests.post(
            f"{base}/api/generate",
            data=BODY,
            headers={**auth, "Origin": "http://evil.example", "Content-Type": "text/plain"},
            timeout=30,
        )
        assert evil.status_code in (403, 415), evil.status_code
        rebound = requests.get(f"{base}/api/runs", headers={**auth, "Host": "evil.example"}, timeout=30)
        assert rebound.status_code in (403, 404), rebound.status_code
        no_token = requests.post(f"{base}/api/generate", json={"prompt": "x"}, timeout=30)
        assert no_token.status_code == 403
    assert lmbench.runs().empty
