"""What evaluation clients send, against the real server and test model: prompt log-probabilities
through ``/v1/completions`` (echo + logprobs), vLLM's tokenizer routes, and lm-evaluation-harness
itself (its ``local-completions`` model with the remote tokenizer) agreeing with ``lmbench.loglikelihood``."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REPO, TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

PAIRS = [("Once upon a time, there was a little", " girl"), ("Once upon a time, there was a little", " spoon")]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        yield server.url


def _tokens(url: str, text: str) -> list[int]:
    """As lm-evaluation-harness's remote tokenizer encodes: vLLM's form, no special tokens added."""
    answer = requests.post(f"{url}/tokenize", json={"prompt": text, "add_special_tokens": False}, timeout=60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["tokens"])


def test_echo_logprobs_of_token_prompts_are_the_loglikelihoods(url: str) -> None:
    prompts, context_lengths = [], []
    for context, continuation in PAIRS:
        whole, head = _tokens(url, context + continuation), _tokens(url, context)
        prompts.append(whole)
        context_lengths.append(len(head))
    body = {"prompt": prompts, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0.0, "seed": 1234}
    answer = requests.post(f"{url}/v1/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    choices = sorted(answer.json()["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1]
    expected = lmbench.loglikelihood(PAIRS, model=TEST_MODEL)
    for choice, tokens, n, row in zip(choices, prompts, context_lengths, expected.itertuples(), strict=True):
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(tokens) + 1  # the prompt's tokens, then the one generated
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        # lm-evaluation-harness's reading: the continuation's entries, without the generated token.
        mine = logprobs["token_logprobs"][n:-1]
        assert math.isclose(sum(mine), row.logprob, abs_tol=1e-4)
        greedy = all(lp == max(top.values()) for lp, top in zip(mine, logprobs["top_logprobs"][n:-1], strict=True))
        assert greedy == row.is_greedy
        text = choice["text"]
        assert text.startswith("".join(logprobs["tokens"][: len(tokens)]))
        for offset, token in zip(logprobs["text_offset"], logprobs["tokens"], strict=True):
            assert text[offset : offset + len(token)] == token


def test_max_tokens_zero_scores_a_text_prompt_only(url: str) -> None:
    prompt = "Once upon a time, there was a little girl"
    body = {"prompt": prompt, "echo": True, "logprobs": 3, "max_tokens": 0}
    answer = requests.post(f"{url}/v1/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    (choice,) = answer.json()["choices"]
    assert choice["text"] == prompt
    engine = lmbench.load(TEST_MODEL)
    tokens = engine.tokenize(prompt)
    (scores,) = engine.score([tokens], start=1, top=3)
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(tokens) == answer.json()["usage"]["prompt_tokens"]
    assert logprobs["token_logprobs"][1:] == pytest.approx(scores.logprobs.tolist(), abs=1e-5)
    assert all(len(top) == 3 for top in logprobs["top_logprobs"][1:])


def test_prompt_forms_and_refusals(url: str) -> None:
    strings = {"prompt": ["Once upon a time", "The little cat"], "max_tokens": 4, "temperature": 0.0, "n": 2}
    answer = requests.post(f"{url}/v1/completions", json=strings, timeout=120)
    assert answer.status_code == 200, answer.text
    assert sorted(c["index"] for c in answer.json()["choices"]) == [0, 1, 2, 3]  # prompt x n + choice
    tokens = _tokens(url, "Once upon a time")
    alone = requests.post(
        f"{url}/v1/completions", json={"prompt": tokens, "max_tokens": 4, "temperature": 0.0}, timeout=120
    ).json()["choices"][0]["text"]
    text = requests.post(
        f"{url}/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0.0}, timeout=120
    ).json()["choices"][0]["text"]
    assert alone == text
    for body, field in [
        ({"prompt": "Once", "max_tokens": 0}, "max_tokens"),
        ({"prompt": [], "max_tokens": 2}, "prompt"),
        ({"prompt": [[]], "max_tokens": 2}, "prompt"),
        ({"prompt": [1, 2, 100000], "echo": True, "logprobs": 1, "max_tokens": 0}, "prompt"),
        ({"prompt": [1, True], "max_tokens": 2}, "prompt"),
    ]:
        refused = requests.post(f"{url}/v1/completions", json=body, timeout=60)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["param"] == field, refused.text


def test_tokenizer_routes_in_both_dialects(url: str) -> None:
    info = requests.get(f"{url}/tokenizer_info", timeout=60).json()
    engine = lmbench.load(TEST_MODEL)
    assert info["model_max_length"] == engine.n_ctx and info["vocab_size"] == engine.n_vocab
    eos = _tokens(url, info["eos_token"])
    bos = _tokens(url, info["bos_token"])
    assert len(eos) == len(bos) == 1 and engine.is_end(eos[0])
    assert bos == engine.tokenize("")[:1]
    with_bos = requests.post(f"{url}/tokenize", json={"prompt": "Once upon"}, timeout=60).json()
    assert with_bos["tokens"] == engine.tokenize("Once upon") and with_bos["count"] == len(with_bos["tokens"])
    native = requests.post(f"{url}/tokenize", json={"content": "Once upon"}, timeout=60).json()
    assert native["tokens"] == engine.tokenize("Once upon", add_bos=False)
    back = requests.post(f"{url}/detokenize", json={"tokens": native["tokens"]}, timeout=60).json()
    assert back["prompt"] == back["content"] == engine.detokenize(native["tokens"])
    both = requests.post(f"{url}/tokenize", json={"content": "a", "prompt": "b"}, timeout=60)
    assert both.status_code == 400


TASKS = {
    "mc.yaml": """task: lmbench_stories_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{story}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{choices.index(answer)}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "gen.yaml": """task: lmbench_stories_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{story}}}}"
doc_to_target: " {{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 8
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
""",
}


def test_lm_evaluation_harness_against_lmbench_serve(url: str, tmp_path: Path) -> None:
    command = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("lm-evaluation-harness is not installed (pip install 'lm_eval[api]')")
    data = tmp_path / "stories.jsonl"
    data.write_text("".join((REPO / "notebooks" / "data" / "stories_mc.jsonl").read_text().splitlines(True)[:5]))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, text in TASKS.items():
        (tasks / name).write_text(text.format(data=data))
    args = f"model=stories260K,base_url={url}/v1/completions,tokenizer_backend=remote,tokenized_requests=True"
    # The command docs/likelihood.md shows, on a free port and local task files.
    options = f"{args},num_concurrent=1,max_retries=1"
    tasks_given = "lmbench_stories_mc,lmbench_stories_gen"
    model = ["--model", "local-completions", "--model_args", options, "--include_path", str(tasks)]
    result = subprocess.run(
        [command, *model, "--tasks", tasks_given, "--log_samples", "--output_path", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=800,
        cwd=tmp_path,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (samples,) = (tmp_path / "out").glob("*/samples_lmbench_stories_mc_*.jsonl")
    checked = 0
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        doc = sample["doc"]
        theirs = [float(r[0][0]) for r in sample["resps"]]
        greedy = [r[0][1] in (True, "True") for r in sample["resps"]]
        ours = lmbench.loglikelihood([(doc["story"], " " + c) for c in doc["choices"]], model=TEST_MODEL)
        assert theirs == pytest.approx(ours["logprob"].tolist(), abs=1e-4)
        assert greedy == ours["is_greedy"].tolist()
        checked += 1
    assert checked == 5
    (generated,) = (tmp_path / "out").glob("*/samples_lmbench_stories_gen_*.jsonl")
    assert len(generated.read_text().splitlines()) == 5
