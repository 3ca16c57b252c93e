"""The API speaks what clients send: OpenAI with or without /v1, n > 1, protocol details, llama-server's
native routes, and errors in OpenAI's shape. Real server, real test model, the real ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import ROUTES, Server, Settings, routes_table

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    options = getattr(request, "param", {})
    with Server(Settings(model=str(TEST_MODEL), **options), port=0) as running:
        yield running


def _post(server: Server, path: str, body: dict, **kwargs: object) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)  # type: ignore[arg-type]


def _events(response: requests.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines(decode_unicode=True) if line]


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_openai_client_with_and_without_v1(server: Server, prefix: str) -> None:
    client = openai.OpenAI(base_url=f"{server.url}{prefix}", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data].count("stories260K") == 1
    completion = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=6, seed=2)
    assert completion.usage.completion_tokens == 6 and completion.system_fingerprint.startswith("fp_lmbench")
    reply = client.chat.completions.create(
        model="stories260K", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, seed=2
    )
    assert reply.choices[0].message.content and reply.system_fingerprint
    assert len(lmbench.runs()) == 2


def test_an_unknown_model_name_is_served_by_the_server_model_and_echoed(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="gpt-4o-mini", prompt="Once", max_tokens=3)
    assert completion.model == "gpt-4o-mini"
    assert lmbench.runs().model_name.tolist() == ["stories260K.gguf"]


@pytest.mark.parametrize("server", [{"strict_models": True}], indirect=True)
def test_strict_models_refuses_unknown_names_listing_the_models(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4o-mini", prompt="Once", max_tokens=3)
    error = caught.value.body
    assert error["code"] == "model_not_found" and "stories260K" in error["message"]
    assert _post(server, "/v1/completions", {"prompt": "x", "model": "../x.gguf"}).status_code == 400, "never a path"
    assert lmbench.runs().empty


def test_n_choices_are_one_batch_each_recorded_with_its_own_seed(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=8, n=3, seed=10)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    table = lmbench.runs().sort_values("seed")
    assert completion.usage.completion_tokens == table.completion_tokens.sum()
    assert table.seed.tolist() == [10, 11, 12] and set(table.batch_size) == {3}
    assert sorted(table.prompt_cached_tokens.tolist())[1:] == [table.prompt_tokens.iloc[0] - 1] * 2, "prompt once"
    assert sorted(table.text) == sorted(c.text for c in completion.choices)
    reply = client.chat.completions.create(
        model="stories260K", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, n=2, seed=3
    )
    assert len(reply.choices) == 2 and all(c.message.role == "assistant" for c in reply.choices)
    assert set(lmbench.runs().chat_format.dropna()) == {"plain"}


def test_streamed_chat_follows_openai_chunk_by_chunk(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="stories260K",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=12,
            seed=5,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    firsts = [c for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert sorted(c.choices[0].index for c in firsts) == [0, 1]
    assert all(c.choices[0].delta.content == "" for c in firsts), "the role chunk has empty content"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    texts = {
        i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        for i in (0, 1)
    }
    assert sorted(texts.values()) == sorted(lmbench.runs().text)
    assert {c.id for c in chunks} == {f"chatcmpl-{lmbench.runs().sort_values('seed').id.iloc[0]}"}, "the run's id"


def test_completion_echo_and_legacy_logprobs(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(
        model="stories260K", prompt="Once upon a time", max_tokens=6, echo=True, logprobs=2, seed=4
    )
    choice = completion.choices[0]
    run = lmbench.get_store().get(lmbench.runs().id.iloc[-1])
    assert choice.text == "Once upon a time" + run.text and completion.id == f"cmpl-{run.id}"
    logprobs = choice.logprobs
    prompt = lmbench.tokenize("Once upon a time", TEST_MODEL)
    # OpenAI's legacy echo: the prompt's tokens (the first without a log-probability), then the generated ones.
    assert len(logprobs.tokens) == len(prompt) + 6 and logprobs.token_logprobs[0] is None
    assert logprobs.tokens[len(prompt) :] == [t["token"] for t in run.token_logprobs]
    assert logprobs.token_logprobs[len(prompt) :] == [t["logprob"] for t in run.token_logprobs]
    assert all(len(top) == 2 for top in logprobs.top_logprobs[1:])
    assert logprobs.text_offset[len(prompt)] == len("Once upon a time"), "offsets count the echoed prompt"
    after_first_word = [(a, t) for a, t in zip(logprobs.text_offset, logprobs.tokens, strict=True) if a > 0]
    assert all(choice.text[a : a + len(t)] == t for a, t in after_first_word)  # the first word's space is not echoed
    plain = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=3, seed=4)
    assert plain.choices[0].logprobs is None and not plain.choices[0].text.startswith("Once upon a time")


def test_chat_logprobs_and_harmless_fields(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="stories260K",
        messages=[{"role": "user", "content": "Hi"}, {"role": "user", "content": "again"}],
        max_completion_tokens=5,
        logprobs=True,
        top_logprobs=2,
        user="me",
        metadata={"k": "v"},
        seed=1,
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 5
    assert all(len(t.top_logprobs) == 2 and t.bytes and t.logprob <= 0 for t in content)
    stored = lmbench.get_store().get(lmbench.runs().id.iloc[-1])
    assert stored.messages == [{"role": "user", "content": "Hi\n\nagain"}], "consecutive turns of one role merge"


@pytest.mark.parametrize("server", [{"n_ctx": 64}], indirect=True)
def test_a_prompt_longer_than_the_context_is_a_400_context_length_exceeded(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="stories260K", prompt="Once upon a time " * 40, max_tokens=3)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["type"] == "invalid_request_error"
    answer = _post(server, "/completion", {"prompt": "Once upon a time " * 40, "n_predict": 3})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"


def test_unknown_route_and_wrong_method(server: Server) -> None:
    missing = requests.get(f"{server.url}/v1/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert requests.get(f"{server.url}/completion", timeout=10).status_code == 405


def test_native_completion_fields(server: Server) -> None:
    body = {
        "prompt": "Once upon a time",
        "n_predict": 8,
        "temperature": 0.5,
        "top_k": 20,
        "seed": 4,
        "n_probs": 2,
        "cache_prompt": True,
        "samplers": ["top_k", "temperature"],
    }
    answer = _post(server, "/completion", body).json()
    assert answer["tokens_predicted"] == 8 and answer["stop_type"] == "limit" and answer["stop"] is True
    assert answer["tokens_evaluated"] == len(lmbench.tokenize("Once upon a time"))
    assert answer["generation_settings"]["top_k"] == 20 and answer["generation_settings"]["n_predict"] == 8
    assert answer["model"] == "stories260K" and set(answer["timings"]) >= {"prompt_n", "predicted_n", "predicted_ms"}
    assert len(answer["completion_probabilities"]) == 8
    assert all(len(p["top_logprobs"]) == 2 for p in answer["completion_probabilities"])
    run = lmbench.get_store().get(answer["run_id"])
    assert run.source == "api" and run.text == answer["content"] and run.seed == 4


def test_native_completion_stop_words_tokens_and_stream(server: Server) -> None:
    worded = _post(
        server, "/completion", {"prompt": "Once upon a time", "n_predict": 60, "stop": [" the"], "temperature": 0}
    ).json()
    assert worded["stop_type"] == "word" and worded["stopping_word"] == " the"
    ids = lmbench.tokenize("Once upon a time")
    by_tokens = _post(server, "/completion", {"prompt": ids[1:], "n_predict": 4, "temperature": 0}).json()
    by_text = _post(server, "/completion", {"prompt": "Once upon a time", "n_predict": 4, "temperature": 0}).json()
    assert by_tokens["content"] == by_text["content"]
    with _post(server, "/completion", {"prompt": "Once", "n_predict": 6, "stream": True}, stream=True) as response:
        events = [json.loads(e) for e in _events(response)]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events[:-1]) == lmbench.runs().text.iloc[-1], "no [DONE] in this dialect"


def test_tokenize_detokenize_health_props(server: Server) -> None:
    tokens = _post(server, "/tokenize", {"content": "Once upon a time"}).json()["tokens"]
    assert tokens == lmbench.tokenize("Once upon a time", add_special=False)
    with_bos = _post(server, "/tokenize", {"content": "Once", "add_special": True}).json()["tokens"]
    assert with_bos[0] == lmbench.tokenize("Once")[0] and len(with_bos) == len(tokens[:1]) + 1
    pieces = _post(server, "/tokenize", {"content": "Once upon", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces).strip() == "Once upon" and all("id" in p for p in pieces)
    assert _post(server, "/detokenize", {"tokens": tokens}).json()["content"].strip() == "Once upon a time"
    assert _post(server, "/detokenize", {"tokens": [10**9]}).status_code == 400
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    props = requests.get(f"{server.url}/props", timeout=10).json()
    assert props["default_generation_settings"]["n_ctx"] == 2048 and props["total_slots"] == 4
    assert str(TEST_MODEL) not in json.dumps(props) and "model_path" not in props
    assert lmbench.runs().empty, "nothing here generates"


def test_tokenize_in_python() -> None:
    ids = lmbench.tokenize("Once upon a time")
    assert ids[0] == 1 and lmbench.detokenize(ids[1:]).strip() == "Once upon a time"
    with pytest.raises(lmbench.ParameterError, match="token ids"):
        lmbench.detokenize([-1])


def test_the_readme_lists_every_route_from_the_route_table() -> None:
    from conftest import REPO

    assert routes_table() in (REPO / "docs" / "api.md").read_text()
    assert {p for r in ROUTES for p in r.paths} >= {"v1/completions", "completions", "completion", "tokenize"}


def test_native_completion_takes_llama_servers_speculative_fields(server: Server) -> None:
    body = {
        "prompt": "Tom had a red ball. Tom had a red ball. Tom had a red ball. Tom had a",
        "n_predict": 12,
        "temperature": 0,
        "draft": "ngram",
        "speculative.n_max": 6,
        "speculative.n_min": 2,
        "speculative.p_min": 0.75,
    }
    answer = _post(server, "/completion", body).json()
    settings = answer["generation_settings"]
    assert (settings["speculative.n_max"], settings["speculative.n_min"], settings["draft"]) == (6, 2, "ngram")
    run = lmbench.get_store().get(answer["run_id"])
    assert (run.draft_max, run.draft_min) == (6, 2)
    assert answer["timings"]["draft_n"] == run.drafted_tokens and run.drafted_tokens > 0
    assert answer["timings"]["draft_n_accepted"] == run.accepted_tokens
    plain = _post(server, "/completion", {**body, "draft": None}).json()
    assert plain["content"] == answer["content"] and "draft_n" not in plain["timings"]
    refused = _post(server, "/completion", {**body, "speculative.n_max": 1, "speculative.n_min": 2})
    assert refused.status_code == 400 and "draft_min" in refused.text
