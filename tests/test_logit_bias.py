"""``logit_bias`` on the real test model: a banned token never appears, a big bias forces one, the bias is
recorded with the run, and the API takes OpenAI's map (through the real ``openai`` client) and llama-server's
forms on ``/completion``; bad ids are refused before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

PROMPT = "Once upon a time"


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(Settings(model=str(TEST_MODEL)), port=0) as running:
        yield running


def _ids(run: lmbench.Run) -> list[int]:
    assert run.token_logprobs is not None
    return [entry["id"] for entry in run.token_logprobs]


def _common_tokens(engine: lmbench.Engine) -> list[int]:
    """The tokens the model picks most readily after the prompt (greedy), distinct, most frequent first."""
    run = lmbench.generate(PROMPT, model=engine, max_tokens=40, temperature=0, logprobs=0)
    ids = _ids(run)
    return sorted(set(ids), key=lambda t: (-ids.count(t), ids.index(t)))


def test_a_banned_token_never_appears_and_the_ban_is_recorded(engine: lmbench.Engine) -> None:
    banned = _common_tokens(engine)[:3]
    runs = [
        lmbench.generate(
            PROMPT,
            model=engine,
            max_tokens=40,
            temperature=1.0,
            seed=seed,
            logprobs=0,
            logit_bias={token: -100 for token in banned},
        )
        for seed in range(4)
    ]
    assert sum(run.completion_tokens for run in runs) >= 100
    assert not set(banned) & {token for run in runs for token in _ids(run)}
    stored = lmbench.get_store().get(runs[0].id)
    assert stored.logit_bias == {token: -100.0 for token in banned}
    assert lmbench.runs().logit_bias.iloc[-1] == {str(token): -100.0 for token in banned}


def test_a_big_positive_bias_forces_a_token(engine: lmbench.Engine) -> None:
    forced = _common_tokens(engine)[-1]
    run = lmbench.generate(
        PROMPT, model=engine, max_tokens=12, temperature=0.8, seed=3, logprobs=0, logit_bias={forced: 100}
    )
    assert _ids(run) == [forced] * 12


def test_a_small_bias_shifts_the_distribution_without_forcing(engine: lmbench.Engine) -> None:
    plain = lmbench.generate(PROMPT, model=engine, max_tokens=1, temperature=0, logprobs=5)
    assert plain.token_logprobs is not None
    second = plain.token_logprobs[0]["top"][1]["id"]
    nudged = lmbench.generate(PROMPT, model=engine, max_tokens=1, temperature=0, logprobs=0, logit_bias={second: 30})
    assert _ids(nudged) == [second] and _ids(plain) != [second]


def test_bad_biases_are_refused_before_anything_runs(engine: lmbench.Engine) -> None:
    cases = [
        ({engine.n_vocab: 1.0}, f"outside stories260K.gguf's vocabulary (token ids 0 to {engine.n_vocab - 1})"),
        ({-1: 1.0}, "token id -1 is negative"),
        ({"Once": 1.0}, "the keys must be token ids"),
        ({5: 101}, "must be a number from -100 to 100"),
        ({5: True}, "must be a number from -100 to 100"),
        ([[5, 1.0]], "a map of token id to bias"),
    ]
    for bias, message in cases:
        with pytest.raises(lmbench.ParameterError) as info:
            lmbench.generate(PROMPT, model=engine, max_tokens=2, logit_bias=bias)
        assert message in str(info.value) and info.value.name == "logit_bias"
    assert len(lmbench.runs()) == 0
    assert lmbench.params.validate_params(logit_bias={}).logit_bias is None


def test_the_openai_client_bans_and_forces_tokens(server: Server, engine: lmbench.Engine) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    common = _common_tokens(engine)
    banned = {str(token): -100 for token in common[:3]}
    completion = client.completions.create(
        model="stories260K", prompt=PROMPT, max_tokens=30, temperature=1.0, seed=5, logprobs=0, logit_bias=banned
    )
    run = lmbench.get_store().get(completion.id.removeprefix("cmpl-"))
    assert run.logit_bias == {int(token): -100.0 for token in banned}
    assert not set(common[:3]) & set(_ids(run)) and len(_ids(run)) == 30

    forced = common[-1]
    reply = client.chat.completions.create(
        model="stories260K",
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=8,
        temperature=0.9,
        logprobs=True,
        top_logprobs=0,
        logit_bias={str(forced): 100},
    )
    chat_run = lmbench.get_store().get(reply.id.removeprefix("chatcmpl-"))
    assert _ids(chat_run) == [forced] * 8 and chat_run.source == "api"

    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="stories260K", prompt=PROMPT, max_tokens=3, logit_bias={"99999": 5})
    assert "outside" in str(info.value) and "logit_bias" in str(info.value)


def test_llama_server_forms_on_completion(server: Server, engine: lmbench.Engine) -> None:
    common = _common_tokens(engine)
    text = engine.piece(common[1]).decode()
    by_text = engine.tokenize(text, add_bos=False)

    def complete(logit_bias: object, **more: object) -> lmbench.Run:
        body = {
            "prompt": PROMPT,
            "n_predict": 30,
            "temperature": 1.0,
            "seed": 2,
            "n_probs": 1,
            "logit_bias": logit_bias,
        }
        answer = requests.post(f"{server.url}/completion", json={**body, **more}, timeout=60)
        assert answer.status_code == 200, answer.text
        return lmbench.get_store().get(answer.json()["run_id"])

    pairs = complete([[common[0], False], [text, -100]])
    assert pairs.logit_bias == {common[0]: -100.0, **{t: -100.0 for t in by_text}}
    assert not {common[0], *by_text} & set(_ids(pairs))

    mapped = complete({str(common[0]): False, text: -100})
    assert mapped.logit_bias == pairs.logit_bias

    forced = complete([[common[-1], 100]], n_predict=6)
    assert _ids(forced) == [common[-1]] * 6

    for bad, why in [
        ([[1, 2, 3]], "[token id or text, bias]"),
        ([[1, True]], "a number or false"),
        ([[engine.n_vocab, 1]], "outside"),
    ]:
        answer = requests.post(
            f"{server.url}/completion", json={"prompt": PROMPT, "n_predict": 2, "logit_bias": bad}, timeout=60
        )
        assert answer.status_code == 400 and why in answer.text, answer.text


def test_the_command_line_takes_a_bias_map(engine: lmbench.Engine) -> None:
    forced = _common_tokens(engine)[-1]
    lmbench_cli = str(Path(sys.executable).parent / "lmbench")
    command = [
        lmbench_cli,
        "run",
        PROMPT,
        "-n",
        "5",
        "--json",
        "--logprobs",
        "0",
        "--logit-bias",
        json.dumps({str(forced): 100}),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["logit_bias"] == {str(forced): 100.0}
    assert [entry["id"] for entry in record["token_logprobs"]] == [forced] * 5
