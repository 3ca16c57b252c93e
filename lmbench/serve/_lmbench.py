"""lmbench's own dialect: the LM Studio guides' ``POST /api/generate``, plus runs, parameters and status."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, StrictBool

from .._version import __version__
from ..generation import Cancel
from ..params import GenerationParams, param_specs
from ..store._store import get_store
from ._requests import Generating, NoQuery, Query
from ._service import Emit, OnPiece, Service, finite, usage


class GenerateRequest(Generating):
    """``POST /api/generate``: a prompt and generation parameters (``max_tokens``, ``temperature``, ...); the
    prompt goes through an instruct model's chat template unless ``raw`` (lmbench's one rule), after
    ``system`` as its system message."""

    prompt: str
    raw: StrictBool = False
    system: str | None = None


class RunsQuery(Query):
    """``GET /api/runs``: the newest ``limit`` runs, of one experiment or all."""

    experiment: str | None = None
    limit: int = Field(100, ge=1)


def generate(service: Service, request: GenerateRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any]:
    """``POST /api/generate``: the LM Studio guides' request and a plain JSON answer."""
    jobs = service.prepare(request)
    jobs.raw, jobs.system = request.raw, request.system
    on_piece: OnPiece | None = None
    if emit is not None:

        def on_piece(i: int, text: str | None) -> None:
            emit({"text": text or ""})

    _, (run,) = service.generate(jobs, prompt=request.prompt, on_piece=on_piece, cancel=cancel)
    answer = {
        "text": run.text,
        "run_id": run.id,
        "model": jobs.name,
        "finish_reason": run.finish_reason,
        "seed": run.seed,
        "chat_format": run.chat_format,
        "usage": usage([run]),
        "timings": {k: finite(getattr(run, k)) for k in ("load_s", "ttft_s", "total_s", "tokens_per_s")},
    }
    return {**answer, "done": True} if emit is not None else answer


def runs(service: Service, query: RunsQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /api/runs?experiment=&limit=``: the newest runs, oldest first."""
    frame = get_store(service.settings.store).runs(query.experiment or None, last=query.limit)
    return {"runs": json.loads(frame.to_json(orient="records", date_format="iso"))}


def params(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /api/params``: every generation parameter (the same definition the UI and CLI use)."""
    return {
        "parameters": [
            {
                "name": s.name,
                "type": s.type.__name__,
                "default": list(s.default) if isinstance(s.default, tuple) else s.default,
                "minimum": s.minimum,
                "maximum": s.maximum,
                "allowed": s.range_text(),
                "description": s.description,
            }
            for s in param_specs()
        ],
        "json_schema": GenerationParams.model_json_schema(),
    }


def status(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /api/status``: the server's model, limits, version and loaded engines."""
    settings = service.settings
    return {
        "status": "ok",
        "lmbench_version": __version__,
        "model": service.default_id,
        "n_ctx": settings.n_ctx,
        "max_tokens_cap": settings.max_tokens_cap,
        "max_body_bytes": settings.max_body_bytes,
        "strict_models": settings.strict_models,
        "parallel": settings.parallel,
        "max_queue": settings.max_queue,
        **service.engines(),
    }
