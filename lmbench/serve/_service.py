"""The service core, free of any web framework and of any dialect: validated requests in, recorded runs out.

A dialect module (``_lmbench``, ``_openai``, ``_llamacpp``) maps its request model onto ``Jobs``
(``Service.prepare``: parameters checked and capped, the model resolved, run ids chosen) and
the runs ``Service.generate`` makes back onto its answer. A request may only name models the
model manager lists (never a path); a name it does not know is answered by the server's model
(the name echoed), unless ``strict_models`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
from pydantic import BaseModel

from .. import models
from .._prompting import Turn, prepare, render
from .._version import __version__
from ..chat import chat as chat_reply
from ..chat import with_tools
from ..engine._engine import Engine, load_engine, loaded
from ..errors import LmbenchError
from ..generation import Cancel, Job, Recorder, generate_many, random_seed
from ..generation import generate as generate_run
from ..params import MAX_SEED, GenerationParams, validate_params
from ..run import Labels, Run
from ._errors import ApiError, api_error
from ._requests import Generating
from ._settings import Settings

if TYPE_CHECKING:
    from ._routes import Route

MODEL_SCAN_INTERVAL_S = 5.0
SYSTEM_FINGERPRINT = f"fp_lmbench_{__version__}_llama_cpp_{llama_cpp.__version__}"

Emit = Callable[[dict[str, Any]], Any]
OnPiece = Callable[[int, str | None], Any]


@dataclass
class Jobs:
    """A generating request, checked before anything is loaded: what to make and where to record it."""

    params: GenerationParams
    n: int
    name: str  # the model name echoed back
    path: Path
    experiment: str | None = None
    tags: list[str] | None = None
    run_ids: list[str] = field(default_factory=list)  # the runs' ids, chosen before they start
    raw: bool = True  # a prompt goes as it is (the completion dialects); /api/generate follows the rule
    system: str | None = None  # a system message for the chat template (/api/generate)

    def __post_init__(self) -> None:
        self.run_ids = self.run_ids or [uuid.uuid4().hex for _ in range(self.n)]


class Service:
    """One API instance: its settings, its models, and the one way a request becomes recorded runs."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.default_path = models.resolve(self.settings.model)
        self.default_id = models.model_id(self.default_path)
        self.started = int(time.time())
        self._available: tuple[float, dict[str, Path]] = (0.0, {})

    def call(self, route: Route, request: BaseModel, emit: Emit | None = None, cancel: Cancel = None) -> Any:
        """Answer one route in this process."""
        return route.answer(self, request, emit, cancel)

    # Models -----------------------------------------------------------------------------------

    def available_models(self, *, rescan: bool = True) -> dict[str, Path]:
        """Model names a request may use: the server's model and everything the model manager lists.

        ``rescan`` looks at the model folders again (at most every few seconds); requests naming a
        model seen before pay no scan.
        """
        scanned, cached = self._available
        if cached and (not rescan or time.monotonic() - scanned < MODEL_SCAN_INTERVAL_S):
            return cached
        available = {self.default_id: self.default_path, self.default_path.name: self.default_path}
        if self.settings.model and os.sep not in self.settings.model:
            available[self.settings.model] = self.default_path
        for row in models.list().itertuples():
            if not isinstance(getattr(row, "error", None), str):
                path = Path(str(row.path))
                available.setdefault(str(row.alias), path)
                available.setdefault(path.name, path)
        self._available = (time.monotonic(), available)
        return available

    def ids(self) -> list[str]:
        """One id per model: its alias (the first name it was listed under)."""
        by_path: dict[Path, str] = {}
        for name, path in self.available_models().items():
            if not name.endswith(".gguf"):
                by_path.setdefault(path.resolve(), name)
        return [*by_path.values()]

    def model_path(self, name: str | None) -> tuple[str, Path]:
        """The name to echo and the model file for a request's (already checked) ``model`` field."""
        if not name:
            return self.default_id, self.default_path
        available = self.available_models(rescan=False)
        if name not in available:
            available = self.available_models()
        if name in available:
            return name, available[name]
        if self.settings.strict_models:
            raise ApiError(
                404,
                f"unknown model {name!r}; available models: {', '.join(sorted(self.ids()))}",
                param="model",
                code="model_not_found",
            )
        return name, self.default_path

    def engine(self, path: Path) -> Engine:
        """The engine of the model at ``path``, loaded with the server's context and slots."""
        try:
            engine = load_engine(path, n_ctx=self.settings.n_ctx)
        except LmbenchError as exc:
            raise api_error(exc) from None
        engine.parallel = self.settings.parallel
        return engine

    def engine_for(self, model: str | None) -> Engine:
        """The engine answering a request's ``model`` field."""
        return self.engine(self.model_path(model)[1])

    @staticmethod
    def engines() -> dict[str, Any]:
        """The loaded models' schedulers: slots, busy, queued, KV cache size (for ``/api/status``)."""
        return {"engines": [{"model": e.name, **e.scheduler.status()} for e in loaded()]}

    # Generating --------------------------------------------------------------------------------

    def prepare(self, request: Generating) -> Jobs:
        """The jobs a validated request asks for: parameters capped by the server, the model resolved."""
        params = request.parameters()
        if isinstance(params.get("max_tokens"), int):
            params["max_tokens"] = min(params["max_tokens"], self.settings.max_tokens_cap)
        try:
            checked = validate_params(params)
        except LmbenchError as exc:
            raise api_error(exc) from None
        name, path = self.model_path(request.model)
        return Jobs(checked, request.choices(), name, path, request.experiment, request.tags)

    def generate(
        self,
        jobs: Jobs,
        *,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        on_piece: OnPiece | None = None,
        cancel: Cancel = None,
        **tools: Any,
    ) -> tuple[Engine, list[Run]]:
        """``jobs.n`` recorded runs of a prompt (or a conversation): one run alone, several decoded together.

        The runs are recorded under ``jobs.run_ids`` (known before the first streamed chunk). A
        conversation may offer ``tools`` (with ``tool_choice`` and ``parallel_tool_calls``, as
        ``lmbench.chat`` takes them).
        """
        engine = self.engine(jobs.path)
        if engine.scheduler.queued + jobs.n > self.settings.max_queue:
            raise ApiError(
                503,
                f"the server is busy: {engine.scheduler.queued} requests are waiting for {engine.name}; retry shortly",
                kind="server_error",
                retry_after=1,
            )
        try:
            if jobs.n == 1:
                options: dict[str, Any] = {
                    "model": engine,
                    "on_token": None if on_piece is None else functools.partial(on_piece, 0),
                    "cancel": cancel,
                    "run_id": jobs.run_ids[0],
                    "experiment": jobs.experiment,
                    "tags": jobs.tags,
                    "source": "api",
                    "store": self.settings.store,
                    **jobs.params.model_dump(exclude_defaults=True),
                }
                if messages is not None:
                    return engine, [chat_reply(messages, **options, **tools)]
                assert prompt is not None
                return engine, [generate_run(prompt, raw=jobs.raw, system=jobs.system, **options)]
            return engine, self._batched(engine, jobs, prompt, messages, on_piece, cancel, tools)
        except LmbenchError as exc:
            raise api_error(exc) from None

    def _batched(
        self,
        engine: Engine,
        jobs: Jobs,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        on_piece: OnPiece | None,
        cancel: Cancel,
        tools: dict[str, Any],
    ) -> list[Run]:
        """n choices of one prompt in one batch (the prompt evaluated once), each with its own seed."""
        params = jobs.params
        labels = Labels.checked(jobs.experiment, jobs.tags, "api")
        turn: Turn
        if messages is not None:
            turns, params, offered, offering = with_tools(
                messages,
                params,
                tools.get("tools"),
                tools.get("tool_choice", "auto"),
                tools.get("parallel_tool_calls", True),
            )
            turn = render(engine, turns, offering)
            labels = dataclasses.replace(labels, tools=offered or None)
        else:
            turn = prepare(engine, prompt or "", raw=jobs.raw, system=jobs.system)
        first = params.seed if params.seed is not None else random_seed()
        seeds = [(first + i) % (MAX_SEED + 1) for i in range(jobs.n)]
        batch = [
            Job.of(
                turn,
                params.model_copy(update={"seed": seed}),
                dataclasses.replace(labels, run_id=jobs.run_ids[i]),
                None if on_piece is None else functools.partial(on_piece, i),
            )
            for i, seed in enumerate(seeds)
        ]
        slots = jobs.n if jobs.n > engine.parallel else None  # n choices past --parallel still decode together
        return generate_many(engine, batch, Recorder.to(self.settings.store), cancel=cancel, slots=slots)


def finite(value: float | None) -> float | None:
    """A measurement JSON can carry (no NaN or infinity)."""
    return value if value is not None and math.isfinite(value) else None


def usage(runs: list[Run]) -> dict[str, int]:
    """OpenAI's usage: the prompt once, every choice's tokens."""
    prompt = runs[0].prompt_tokens if runs else 0
    completion = sum(r.completion_tokens for r in runs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
