"""``generate``: one prompt through the engine into a recorded ``Run``."""

from __future__ import annotations

import codecs
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timezone
from typing import Any

import llama_cpp
import numpy as np

from . import metrics
from ._version import __version__
from .engine import Engine, load_engine
from .errors import GenerationError, LmbenchError
from .params import MAX_SEED, GenerationParams, check_labels, check_text, describe_params, validate_params
from .presets import resolve_preset
from .run import Run
from .store import Store, get_store

Cancel = threading.Event | Callable[[], bool] | None


def random_seed() -> int:
    """A fresh seed that llama.cpp will take literally."""
    return random.SystemRandom().randint(0, MAX_SEED)


class TextStream:
    """Turns token bytes into text: whole UTF-8 characters only, cut at the first stop string.

    ``take()`` returns the text that is safe to show: it holds back a tail that could still
    become a stop string.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._longest = max((len(s) for s in stops), default=0)
        self.text = ""
        self.stop_word: str | None = None  # the stop string that ended the text, if one did
        self._shown = 0

    def add(self, piece: bytes) -> bool:
        """Append a token's bytes; True when a stop string appeared (the text is cut before it)."""
        before = len(self.text)
        self.text += self._decoder.decode(piece)
        if not self._stops:
            return False
        start = max(0, before - self._longest + 1)
        hits = [(i, s) for s in self._stops if (i := self.text.find(s, start)) >= 0]
        if hits:
            at, self.stop_word = min(hits)
            self.text = self.text[:at]
            return True
        return False

    def finish(self) -> None:
        """Flush an incomplete trailing character (as U+FFFD)."""
        self.text += self._decoder.decode(b"", final=True)
        self._stops = ()

    def take(self) -> str:
        """Text not yet shown that can no longer turn into a stop string."""
        end = len(self.text)
        for k in range(min(self._longest - 1, end - self._shown), 0, -1):
            tail = self.text[end - k :]
            if any(s.startswith(tail) for s in self._stops):
                end -= k
                break
        new = self.text[self._shown : end]
        self._shown = max(self._shown, end)
        return new


def log_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and entropies (nats) of each row of ``logits`` (one row per token)."""
    x = logits.astype(np.float32)  # a copy; float32 is plenty for display and metrics, and twice as fast
    x -= x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    total = e.sum(axis=-1, keepdims=True)
    lp = x - np.log(total)
    return lp, -(e / total * lp).sum(axis=-1)


def logprob_entry(engine: Engine, token: int, lp: np.ndarray, entropy: float, top: int) -> dict[str, Any]:
    """The record of one generated token: its log-probability, the entropy, and the ``top`` alternatives."""
    entry: dict[str, Any] = {
        "id": token,
        "token": engine.piece(token).decode("utf-8", errors="replace"),
        "logprob": float(lp[token]),
        "entropy": float(entropy),
    }
    if top:
        best = np.argpartition(lp, -top)[-top:]
        best = best[np.argsort(lp[best])[::-1]]
        entry["top"] = [
            {"id": int(t), "token": engine.piece(int(t)).decode("utf-8", errors="replace"), "logprob": float(lp[t])}
            for t in best
        ]
    return entry


def build_run(
    engine: Engine,
    prompt: str,
    params: GenerationParams,
    *,
    text: str,
    finish: str,
    prompt_tokens: int,
    n_generated: int,
    ttft: float | None,
    total: float,
    run_id: str | None = None,
    **run_fields: Any,
) -> Run:
    """A ``Run`` from what one generation produced, with the engine's facts and library versions."""
    return Run(
        id=run_id or uuid.uuid4().hex,
        created_at=datetime.now(timezone.utc),
        prompt=prompt,
        text=text,
        params=params,
        model_path=str(engine.path),
        model_name=engine.name,
        model_size=engine.size,
        model_sha256=engine.sha256,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=n_generated,
        ttft_s=ttft,
        total_s=total,
        tokens_per_s=(n_generated - 1) / (total - ttft) if ttft is not None and n_generated > 1 else None,
        n_ctx=engine.n_ctx,
        n_threads=engine.n_threads,
        lmbench_version=__version__,
        llama_cpp_version=llama_cpp.__version__,
        **run_fields,
    )


def stopper(cancel: Cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def execute(
    engine: Engine,
    prompt: str,
    params: GenerationParams,
    *,
    on_token: Callable[[str], Any] | None = None,
    cancel: Cancel = None,
    load_s: float = 0.0,
    run_id: str | None = None,
    special: bool = False,
    add_bos: bool = True,
    **run_fields: Any,
) -> tuple[Run, BaseException | None]:
    """Generate without recording: the run (complete, cancelled or failed) and what interrupted it, if anything.

    ``special`` parses special-token text in the prompt (chat templates write them as text).
    """
    if params.seed is None:
        params = params.model_copy(update={"seed": random_seed()})
    assert params.seed is not None
    stream = TextStream(params.stop)
    should_stop = stopper(cancel)
    logprobs: list[dict[str, Any]] | None = [] if params.logprobs is not None else None
    finish, error = "length", None
    interruption: BaseException | None = None
    n_generated, ttft = 0, None
    with engine.lock:
        started = time.perf_counter()
        prompt_tokens = engine.tokenize(prompt, add_bos=add_bos, special=special)
        tokens = engine.sample_tokens(prompt_tokens, params, params.seed, with_logits=logprobs is not None)
        try:
            with closing(tokens):
                for token, logits in tokens:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    if engine.is_end(token):
                        finish = "stop"
                        break
                    n_generated += 1
                    if logprobs is not None and logits is not None:
                        lp, entropy = log_softmax(logits)
                        logprobs.append(logprob_entry(engine, token, lp, float(entropy), params.logprobs or 0))
                    hit_stop = stream.add(engine.piece(token))
                    if on_token is not None and (new := stream.take()):
                        on_token(new)
                    if hit_stop:
                        finish = "stop"
                        break
                    if n_generated >= params.max_tokens or len(prompt_tokens) + n_generated >= engine.n_ctx:
                        break
                    if should_stop():
                        finish = "cancelled"
                        break
        except KeyboardInterrupt as exc:
            finish, interruption = "cancelled", exc
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised by the caller
            finish, error, interruption = "error", str(exc), exc
        total = time.perf_counter() - started
        cached = engine.prompt_cached_tokens
    stream.finish()
    if on_token is not None and (rest := stream.take()):
        on_token(rest)
    run = build_run(
        engine,
        prompt,
        params,
        text=stream.text,
        finish=finish,
        prompt_tokens=len(prompt_tokens),
        n_generated=n_generated,
        ttft=ttft,
        total=total,
        run_id=run_id,
        prompt_cached_tokens=cached,
        load_s=load_s,
        error=error,
        token_logprobs=logprobs,
        stop_word=stream.stop_word,
        **run_fields,
    )
    return run, interruption


def generate(
    prompt: str,
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    on_token: Callable[[str], Any] | None = None,
    cancel: Cancel = None,
    preset: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    source: str = "python",
    **params: Any,
) -> Run:
    """Generate a completion of ``prompt``, record it in the run store, and return the ``Run``.

    ``on_token(text)`` receives each new piece of text as it is generated; ``cancel`` (a
    ``threading.Event`` or a callable returning True) stops between tokens. Cancelled and
    interrupted runs are recorded with ``finish_reason="cancelled"`` and the text so far; a
    KeyboardInterrupt is re-raised after recording. ``preset`` names saved parameter values
    that explicit parameters override.

    Generation parameters:
    """
    check_text("prompt", prompt)
    labels = check_labels(experiment, tags, source)
    values = validate_params({**resolve_preset(preset), **params})
    engine, loaded_now = load_engine(model)
    return complete(
        engine,
        prompt,
        values,
        loaded_now=loaded_now,
        store=store,
        on_token=on_token,
        cancel=cancel,
        experiment=experiment,
        tags=labels,
        source=source,
    )


def record(run: Run, store: str | os.PathLike[str] | Store | None = None) -> Run:
    """Measure ``run`` with the registered run metrics and write it to the store."""
    run.metrics = metrics.compute(run)
    get_store(store).record(run)
    return run


def complete(
    engine: Engine,
    prompt: str,
    params: GenerationParams,
    *,
    loaded_now: bool,
    store: str | os.PathLike[str] | Store | None,
    **execute_options: Any,
) -> Run:
    """Execute, measure and record one run; then re-raise whatever interrupted it."""
    engine.check_constraint(params)
    run, interruption = execute(engine, prompt, params, load_s=engine.load_s if loaded_now else 0.0, **execute_options)
    record(run, store)
    if interruption is not None:
        if isinstance(interruption, KeyboardInterrupt | LmbenchError):
            raise interruption
        raise GenerationError(
            f"generation failed after {run.completion_tokens} tokens: {interruption}"
        ) from interruption
    return run


generate.__doc__ = (generate.__doc__ or "") + "\n" + describe_params()
