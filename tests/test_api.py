"""The HTTP API against the real test model: the guides' `requests` example, the real `openai` client,
streaming, safety limits, 20 parallel requests, and the same API inside Jupyter as a server extension."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jupyterserver
import openai
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings
from lmbench.serve._server import _Mailbox

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    options = getattr(request, "param", {})
    with Server(Settings(model=str(TEST_MODEL), **options), port=0) as running:
        assert running.host == "127.0.0.1"
        yield running


def test_guides_requests_example(server: Server) -> None:
    response = requests.post(
        f"{server.url}/api/generate",
        json={"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0.7, "top_p": 0.9},
        timeout=60,
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["text"] and answer["model"] == "stories260K"
    assert answer["usage"]["completion_tokens"] > 0
    assert set(answer["timings"]) == {"load_s", "ttft_s", "total_s", "tokens_per_s"}
    run = lmbench.get_store().get(answer["run_id"])
    assert run.source == "api" and run.text == answer["text"]
    assert (run.max_tokens, run.temperature, run.top_p) == (100, 0.7, 0.9)


def test_openai_client_completions_and_chat(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert "stories260K" in [m.id for m in client.models.list().data]

    completion = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=12, seed=4)
    assert completion.object == "text_completion" and completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 12

    reply = client.chat.completions.create(
        model="stories260K", messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=10, seed=4
    )
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    stored = lmbench.get_store().get(reply.id.removeprefix("chatcmpl-"))
    assert stored.messages == [{"role": "user", "content": "Tell me a story."}] and stored.chat_format == "plain"
    assert lmbench.runs().source.tolist() == ["api", "api"]


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_openai_streaming_matches_the_recorded_run(server: Server, route: str) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    if route == "chat":
        chunks = list(
            client.chat.completions.create(
                model="stories260K", messages=[{"role": "user", "content": "Hi"}], max_tokens=20, seed=1, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        chunks = list(client.completions.create(model="stories260K", prompt="Once", max_tokens=20, seed=1, stream=True))
        text = "".join(c.choices[0].text for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len(chunks) > 3, "streamed piece by piece"
    assert text == lmbench.runs().text.iloc[-1]


def test_api_generate_streams_server_sent_events(server: Server) -> None:
    with requests.post(
        f"{server.url}/api/generate", json={"prompt": "Once", "max_tokens": 15, "stream": True}, stream=True, timeout=60
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = [line.removeprefix("data: ") for line in response.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    pieces = [json.loads(e)["text"] for e in events[:-2]]
    assert final["done"] is True and "".join(pieces) == final["text"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/api/generate", b"{not json", 400, None),
        ("/api/generate", b"[1, 2]", 400, None),
        ("/api/generate", {"prompt": 42}, 400, "prompt"),
        ("/api/generate", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ("/api/generate", {"prompt": "x", "temperature": -1}, 400, "temperature"),
        ("/api/generate", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ("/api/generate", {"prompt": "x", "temprature": 1}, 400, "temprature"),
        ("/api/generate", {"prompt": "x", "model": "/etc/passwd"}, 400, "model"),
        ("/api/generate", {"prompt": "x", "model": "../../secret.gguf"}, 400, "model"),
        ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n"),
        ("/v1/completions", {"prompt": "x", "n": 99}, 400, "n"),
        ("/v1/chat/completions", {"messages": "hello"}, 400, "messages"),
        ("/api/generate", {"prompt": "x" * (2 << 20)}, 413, None),
    ],
)
def test_bad_requests_get_a_json_error_and_record_nothing(
    server: Server, path: str, body: object, status: int, param: str | None
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(f"{server.url}{path}", data=data, headers=JSON, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["param"] == param
    assert lmbench.runs().empty


def test_wrong_methods_and_routes(server: Server) -> None:
    assert requests.get(f"{server.url}/api/generate", timeout=10).status_code == 405
    assert requests.post(f"{server.url}/v1/models", json={}, timeout=10).status_code == 405
    missing = requests.get(f"{server.url}/etc/passwd", timeout=10)
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]


@pytest.mark.parametrize("server", [{"max_tokens_cap": 5}], indirect=True)
def test_max_tokens_is_capped_by_the_server(server: Server) -> None:
    answer = requests.post(f"{server.url}/api/generate", json={"prompt": "Once", "max_tokens": 500}, timeout=30).json()
    assert answer["usage"]["completion_tokens"] <= 5
    assert lmbench.runs().max_tokens.tolist() == [5]
    assert requests.get(f"{server.url}/api/status", timeout=10).json()["max_tokens_cap"] == 5


@pytest.mark.parametrize("server", [{"api_key": "s3cret"}], indirect=True)
def test_api_key_is_required_when_set(server: Server) -> None:
    body = {"prompt": "Once", "max_tokens": 3}
    assert requests.post(f"{server.url}/api/generate", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.post(f"{server.url}/api/generate", json=body, headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    assert requests.post(f"{server.url}/api/generate", json=body, headers=right, timeout=30).status_code == 200
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0)
    assert client.completions.create(model="stories260K", prompt="Once", max_tokens=3).usage.completion_tokens == 3


def test_twenty_parallel_requests_are_all_answered_and_recorded(server: Server) -> None:
    def ask(i: int) -> dict:
        body = {"prompt": f"Story {i}:", "max_tokens": 16, "seed": i, "experiment": "parallel"}
        response = requests.post(f"{server.url}/api/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    recorded = lmbench.runs("parallel")
    assert len(recorded) == 20 and set(recorded.id) == {a["run_id"] for a in answers}
    assert sorted(recorded.seed) == list(range(20))


def test_runs_endpoint(server: Server) -> None:
    for _ in range(3):
        requests.post(
            f"{server.url}/api/generate", json={"prompt": "Once", "max_tokens": 3, "experiment": "e"}, timeout=30
        )
    requests.post(f"{server.url}/api/generate", json={"prompt": "Once", "max_tokens": 3}, timeout=30)
    runs = requests.get(f"{server.url}/api/runs", params={"experiment": "e", "limit": 2}, timeout=10).json()["runs"]
    assert len(runs) == 2 and all(r["experiment"] == "e" and r["source"] == "api" for r in runs)
    assert requests.get(f"{server.url}/api/runs?limit=zero", timeout=10).status_code == 400


@pytest.mark.parametrize("server", [{"n_ctx": 16384}], indirect=True)
def test_a_client_that_disconnects_cancels_its_run(server: Server) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 16000, "stream": True}
    with requests.post(f"{server.url}/api/generate", json=body, stream=True, timeout=60) as response:
        next(response.iter_lines())
    server.stop()  # waits for the request in flight to end
    run = lmbench.runs().iloc[-1]
    assert run.finish_reason == "cancelled" and run.completion_tokens < 16000, run.error


def test_the_api_inside_jupyter_as_a_server_extension(tmp_path: Path, lmbench_home: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with jupyterserver.running(tmp_path, lmbench_home, root) as jupyter:
        base = f"{jupyter.url}/lmbench"
        body = {"prompt": "Once upon a time", "max_tokens": 10}
        assert requests.post(f"{base}/api/generate", json=body, timeout=30).status_code == 403, "Jupyter's auth"
        auth = {"Authorization": f"token {jupyter.token}"}
        answer = requests.post(f"{base}/api/generate", json=body, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=jupyter.token, max_retries=0)
        chunks = list(client.completions.create(model="stories260K", prompt="Once", max_tokens=8, stream=True))
        assert chunks[-1].choices[0].finish_reason == "length"
        bad = requests.post(f"{base}/api/generate", json={"prompt": "x", "top_p": 7}, headers=auth, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_p"
    table = lmbench.runs()
    assert table.source.tolist() == ["api", "api"] and table.id.iloc[0] == answer.json()["run_id"]


def test_params_endpoint_describes_every_parameter(server: Server) -> None:
    answer = requests.get(f"{server.url}/api/params", timeout=10).json()
    by_name = {p["name"]: p for p in answer["parameters"]}
    assert set(by_name) == set(lmbench.GenerationParams.model_fields)
    assert by_name["temperature"]["default"] == 0.7 and by_name["top_p"]["allowed"] == "0 < top_p <= 1"
    assert answer["json_schema"]["additionalProperties"] is False


def test_a_hundred_concurrent_requests_are_all_answered_and_decoded_together(server: Server) -> None:
    def ask(i: int) -> int:
        body = {"prompt": f"Once upon a time {i}", "max_tokens": 8 + (i % 5) * 20, "seed": i}
        if i % 2:
            with requests.post(
                f"{server.url}/v1/completions", json={**body, "stream": True}, stream=True, timeout=300
            ) as response:
                lines = [line for line in response.iter_lines() if line]
                assert lines[-1] == b"data: [DONE]"
                return response.status_code
        return requests.post(f"{server.url}/api/generate", json=body, timeout=300).status_code

    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(ask, range(100)))
    assert statuses == [200] * 100
    runs = lmbench.runs()
    assert len(runs) == 100 and set(runs.finish_reason) <= {"length", "stop"}
    assert runs.batch_size.max() == 4, "--parallel 4 (the default): four requests at a time share each decode"
    status = requests.get(f"{server.url}/api/status", timeout=30).json()
    (engine,) = status["engines"]
    assert engine["slots"] == 4 and engine["busy"] == 0 and engine["queued"] == 0 and engine["kv_cache_bytes"] > 0


def test_concurrent_streams_each_get_their_own_pieces_in_order(server: Server) -> None:
    """The pieces of one decode step reach many streams together (one wake-up of the server's loop): each
    stream still reassembles to exactly its own recorded run."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    def stream(i: int) -> tuple[str, str]:
        chunks = list(
            client.completions.create(
                model="stories260K", prompt=f"Once upon a time {i}", max_tokens=48, seed=i, stream=True
            )
        )
        return chunks[0].id, "".join(c.choices[0].text for c in chunks)

    with ThreadPoolExecutor(16) as pool:
        streamed = list(pool.map(stream, range(16)))
    runs = lmbench.runs().set_index("id")
    assert runs.batch_size.max() > 1, "the streams shared decodes"
    for stream_id, text in streamed:
        assert text == runs.text[stream_id.removeprefix("cmpl-")]


@pytest.mark.parametrize("server", [{"parallel": 1, "max_queue": 1}], indirect=True)
def test_a_full_queue_answers_503_with_retry_after(server: Server) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 3000, "ignore_eos": True}
    assert requests.post(f"{server.url}/api/generate", json={"prompt": "Hi", "max_tokens": 1}, timeout=60).ok

    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: requests.post(f"{server.url}/api/generate", json=body, timeout=300), range(6))
        )
    busy = [a for a in answers if a.status_code == 503]
    assert busy and all(a.headers["Retry-After"] == "1" and "busy" in a.json()["error"]["message"] for a in busy)
    assert all(a.status_code in (200, 503) for a in answers) and any(a.ok for a in answers)


def test_the_mailbox_wakes_the_loop_once_per_burst_and_keeps_each_queues_order() -> None:
    loop = asyncio.new_event_loop()
    wake_ups: list[object] = []
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(*args: Any) -> Any:
        wake_ups.append(args)
        return call_soon_threadsafe(*args)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    mailbox = _Mailbox.of(loop)
    assert _Mailbox.of(loop) is mailbox
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(4)]
    burst = threading.Thread(target=lambda: [mailbox.put(q, i) for i in range(16) for q in queues])
    burst.start()
    burst.join()  # a decode step's pieces for four streams, put while the loop is busy elsewhere
    loop.run_until_complete(asyncio.sleep(0))
    assert [[q.get_nowait() for _ in range(16)] for q in queues] == [list(range(16))] * 4
    assert len(wake_ups) == 1, "one wake-up for the burst, not one per item"
    loop.close()
    with pytest.raises(RuntimeError):
        mailbox.put(queues[0], 0)
