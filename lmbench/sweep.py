"""Parameter sweeps: a grid x prompts x seeds (x models), every run recorded, resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import _sandbox, scores
from . import metrics as metrics_mod
from . import tools as tools_mod
from ._progress import Progress
from ._prompting import Turn, check_messages, has_template, prepare, render
from .chat import with_tools
from .datasets import DataArg, Item, fill
from .datasets import load as load_items
from .engine._engine import Engine, checked_lora, load_engine
from .errors import ParameterError
from .generation import Cancel, Job, Recorder, generate_many, stopper
from .models import resolve as resolve_model
from .params import PARAM_NAMES, check_labels, check_text, validate_params
from .run import Labels, Run
from .store._store import Store, get_store

FINISHED = ("stop", "length")
ModelArg = str | os.PathLike[str] | None


@dataclass(frozen=True)
class PlannedRun:
    """One planned run of a sweep."""

    model: str
    prompt_name: str
    prompt: str
    cell: tuple[tuple[str, Any], ...]
    seed: int
    item: Item | None = field(default=None, compare=False)  # the data-set row that filled the template
    system: str | None = None  # the name of the system-prompt variant
    turns: tuple[tuple[str, str], ...] | None = None  # a conversation (role, text) instead of a raw prompt

    @property
    def coords(self) -> dict[str, Any]:
        where = {"item": self.item.id} if self.item is not None else {}
        system = {"system": self.system} if self.system is not None else {}
        return {
            "model": self.model,
            "prompt_name": self.prompt_name,
            **system,
            **where,
            **dict(self.cell),
            "seed": self.seed,
        }

    @property
    def messages(self) -> list[dict[str, str]] | None:
        return None if self.turns is None else [{"role": r, "content": c} for r, c in self.turns]

    def key(self) -> str:
        return json.dumps(self.coords, sort_keys=True)


def _prompts(prompts: str | Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(prompts, str):
        prompts = {"prompt": prompts}
    elif isinstance(prompts, bytes) or not isinstance(prompts, Mapping | Sequence):
        raise ParameterError(
            f"prompts must be a string, a list of strings or a dict of named strings, not {type(prompts).__name__}",
            name="prompts",
            value=prompts,
        )
    elif not isinstance(prompts, Mapping):
        prompts = {f"p{i + 1}": p for i, p in enumerate(prompts)}
    if not prompts:
        raise ParameterError("a sweep needs at least one prompt")
    for name, text in prompts.items():
        check_text("prompt name", name)
        if not isinstance(text, str) or not text:
            raise ParameterError(f"prompt {name!r} must be a non-empty string", name="prompts", value=text)
        check_text(f"prompt {name!r}", text)
    return dict(prompts)


# Grid dimensions that are not generation parameters but how the model is loaded (each value its own engine).
LOAD_DIMENSIONS = ("lora_scale",)


def _load_settings(job: PlannedRun, lora: str | None) -> dict[str, Any]:
    """The ``load`` settings of a job: its LoRA adapter at the job's scale (default 1), when the sweep has one."""
    return {} if lora is None else {"lora": {lora: dict(job.cell).get("lora_scale", 1.0)}}


def _grid(
    grid: Mapping[str, Iterable[Any]], fixed: dict[str, Any], lora: str | None = None
) -> list[tuple[tuple[str, Any], ...]]:
    """Every grid cell; values may be lists, tuples or NumPy arrays (their items become Python numbers)."""
    checked: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if name == "lora_scale":
            if lora is None:
                raise ParameterError(
                    "grid has lora_scale but the sweep has no adapter: give lora='adapter.gguf'", name=name
                )
            scales = list(values) if isinstance(values, Iterable) and not isinstance(values, str | bytes) else []
            checked[name] = [
                float(v)
                for v in scales
                if isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)
            ]
            if not scales or len(checked[name]) != len(scales):
                raise ParameterError(
                    f"grid['lora_scale'] must be a non-empty list of finite numbers, not {values!r}", name=name
                )
            continue
        if name not in PARAM_NAMES or name == "seed":
            why = "use seeds= for seeds" if name == "seed" else f"valid parameters are: {', '.join(PARAM_NAMES)}"
            raise ParameterError(f"grid has unknown parameter {name!r}; {why}", name=name)
        if name in fixed:
            raise ParameterError(f"{name!r} is both in the grid and fixed; give it in one place", name=name)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise ParameterError(f"grid[{name!r}] must be a non-empty list of values, not {values!r}", name=name)
        checked[name] = [v.item() if isinstance(v, np.generic) else v for v in values]
        if not checked[name]:
            raise ParameterError(f"grid[{name!r}] must be a non-empty list of values, not {values!r}", name=name)
        for i, value in enumerate(checked[name]):
            try:
                validate_params({**fixed, name: value})
            except ParameterError as exc:
                raise ParameterError(f"grid[{name!r}][{i}]: {exc}", name=name, value=value) from None
    names = list(checked)
    return [tuple(zip(names, combo, strict=True)) for combo in itertools.product(*(checked[n] for n in names))]


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, np.integer):
        seeds = int(seeds)
    if isinstance(seeds, bool | str | bytes | Mapping) or not isinstance(seeds, int | Iterable):
        raise ParameterError(f"seeds must be a count or a list of seeds, not {seeds!r}", name="seeds", value=seeds)
    values = (
        list(range(seeds)) if isinstance(seeds, int) else [s.item() if isinstance(s, np.generic) else s for s in seeds]
    )
    if not values:
        raise ParameterError("a sweep needs at least one seed", name="seeds", value=seeds)
    for seed in values:
        validate_params(seed=seed)
    return values


def planned_runs(
    prompts: str | Sequence[str] | Mapping[str, str],
    *,
    grid: Mapping[str, Sequence[Any]],
    seeds: int | Iterable[int] = 3,
    model: ModelArg | Sequence[ModelArg] = None,
    items: Sequence[Item] | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
    systems: str | Mapping[str, str] | None = None,
    lora: str | None = None,
    **fixed_params: Any,
) -> list[PlannedRun]:
    """Every run a sweep would make, checked before anything is generated.

    With ``items`` (a data set), each prompt is a template filled by every item. ``messages`` is a
    conversation template (its contents are templates too) used instead of ``prompts``; ``systems``
    adds system-prompt variants (a grid dimension named ``system``) to either.
    """
    validate_params(fixed_params)
    conversation = _conversation(messages)
    prompt_map = _prompts(prompts) if conversation is None else {"messages": json.dumps(conversation)}
    variants = _systems(systems)
    rows: list[tuple[int, Item | None]] = [(0, None)] if items is None else list(enumerate(items))
    filled: list[tuple[str, str, Item | None, str | None, tuple[tuple[str, str], ...] | None]] = []
    for (row, item), (system, system_text) in itertools.product(rows, variants.items() or [(None, None)]):
        for name, text in prompt_map.items():
            turns = conversation if conversation is not None else ([] if system is None else [("user", text)])
            if system_text is not None:
                turns = [("system", system_text), *[(r, c) for r, c in turns if r != "system"]]
            if turns:
                done = tuple((r, c if item is None else fill(name, c, item, row)) for r, c in turns)
                filled.append((name, json.dumps(done), item, system, done))
            else:
                filled.append((name, text if item is None else fill(name, text, item, row), item, None, None))
    cells = _grid(grid, fixed_params, lora)
    seed_list = _seeds(seeds)
    if model is not None and not isinstance(model, str | os.PathLike | Sequence):
        raise ParameterError(f"model must be a path, an alias or a list of them, not {model!r}", name="model")
    models = [model] if model is None or isinstance(model, str | os.PathLike) else list(model)
    if not models:
        raise ParameterError("a sweep needs at least one model", name="model")
    for m in models:
        if m is not None and not isinstance(m, str | os.PathLike):
            raise ParameterError(f"model must be a path or an alias, not {m!r}", name="model", value=m)
        if m is not None:
            check_text("model", os.fspath(m))
    model_names = [os.fspath(m) if m is not None else str(resolve_model(None)) for m in models]
    return [
        PlannedRun(m, name, text, cell, seed, item, system, turns)
        for m in model_names
        for cell in cells
        for name, text, item, system, turns in filled
        for seed in seed_list
    ]


def _conversation(messages: Sequence[Mapping[str, str]] | None) -> list[tuple[str, str]] | None:
    """A conversation template as (role, text) pairs, checked like chat messages."""
    if messages is None:
        return None
    return [(m["role"], m["content"]) for m in check_messages([dict(m) for m in messages])]


def _systems(systems: str | Mapping[str, str] | None) -> dict[str, str]:
    """System-prompt variants by name (one text is the variant ``system``)."""
    if systems is None:
        return {}
    variants = {"system": systems} if isinstance(systems, str) else dict(systems)
    if not variants:
        raise ParameterError("systems must name at least one system prompt", name="systems")
    for name, text in variants.items():
        check_text("systems name", name)
        check_text(f"system prompt {name!r}", text)
    return variants


def sweep_id_for(name: str | None, experiment: str | None, jobs: list[PlannedRun], fixed: dict[str, Any]) -> str:
    """A stable id: from the sweep's name, or else from everything that defines the sweep."""
    if name:
        identity: dict[str, Any] = {"name": name}
    else:
        # The texts too: the same names (and item ids) can hold other prompts.
        prompts = {f"{j.prompt_name}|{j.item.id if j.item else ''}": j.prompt for j in jobs}
        identity = {"experiment": experiment, "jobs": [j.key() for j in jobs], "prompts": prompts, "fixed": fixed}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The most runs decoded together by default; past this a CPU gains little and the KV cache grows.
MAX_BATCH = 32


class SweepSpec(BaseModel):
    """One sweep, declared once: ``sweep()``'s keywords, the CLI's options and a sweep config file
    (YAML, JSON or TOML) all build this, so each option has one name, default and meaning.

    Values are checked when the sweep is planned (``plan``), with errors that name the option.
    """

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True, frozen=True)

    prompts: Any = Field(
        None, description="a prompt, a list of prompts or a dict of named prompts (templates with data)"
    )
    messages: Any = Field(None, description="a conversation template instead of prompts (a list of chat messages)")
    systems: Any = Field(None, description="system prompts as a grid dimension: one text or a dict of named texts")
    grid: Any = Field(default_factory=dict, description="parameter name -> values; every combination is run")
    seeds: Any = Field(3, description="a count n (seeds 0..n-1) or a list of seeds")
    model: Any = Field(None, description="a model (path or alias) or a list of models; None: the default model")
    params: dict[str, Any] = Field(default_factory=dict, description="generation parameters fixed for every run")
    data: Any = Field(None, description="a data set: DataFrame, list of dicts, or a .csv / .jsonl / .parquet file")
    reference: str = Field("reference", description="the data column holding each item's reference answer")
    assertions: Any = Field(None, description="checks applied to every run (dicts or Python callables)")
    scorers: Any = Field(None, description="more scores: metric names, callables or lmbench.judge(...) judges")
    metrics: Any = Field("default", description="run and group metrics: 'default', None or a list of names")
    chat: bool | None = Field(None, description="through the chat template: None for models that have one")
    tools: Any = Field(None, description="tools offered to every run (OpenAI-style functions; the runs are chats)")
    tool_choice: Any = Field("auto", description="'auto', 'required', 'none' or a named function, as in chat()")
    parallel_tool_calls: bool = Field(True, description="whether one answer may make several tool calls")
    experiment: str | None = Field(None, description="the experiment name recorded with every run")
    name: str | None = Field(None, description="the sweep's name: the same name resumes the same sweep")
    batch: bool = Field(True, description="decode the runs of a model together (False: one at a time)")
    batch_size: int | None = Field(None, description=f"the most runs sharing a decode (default {MAX_BATCH})")
    executor: str = Field("local", description="where the runs are generated: a name in EXECUTORS")
    cluster: Any = Field(None, description="the Dask cluster of the 'dask' executor (Client, address, 'local:N')")
    lora: str | None = Field(
        None, description="a LoRA adapter file applied to every model (grid lora_scale: its scale)"
    )

    @classmethod
    def build(cls, **options: Any) -> SweepSpec:
        """A spec from keyword options; an unknown option or a value of the wrong type is a ``ParameterError``."""
        try:
            return cls(**options)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "sweep"
            known = ", ".join(cls.model_fields)
            if error["type"] == "extra_forbidden":
                raise ParameterError(f"unknown sweep option {where!r}; known: {known}", name=where) from None
            message = f"sweep option {where}: {error['msg'].lower()}, not {error.get('input')!r}"
            raise ParameterError(message, name=where, value=error.get("input")) from None


@dataclass
class Plan:
    """A sweep made concrete: every planned run, its id, what is already done, and how runs are measured."""

    spec: SweepSpec
    runs: list[PlannedRun]
    todo: list[PlannedRun]
    sweep_id: str
    recipe: Recipe
    run_metrics: list[metrics_mod.Metric]
    group_metrics: list[metrics_mod.Metric]
    judges: list[scores.Judge]
    store: Store
    adapter: str | None = None  # the checked LoRA adapter's path


def plan(spec: SweepSpec, store: str | os.PathLike[str] | Store | None = None) -> Plan:
    """Check ``spec`` and plan it against ``store``: every run, the sweep id, the runs still to make.

    Nothing is generated; every error (a bad value, a missing template variable, an unknown
    executor, ...) is raised here, before the first run.
    """
    fixed_params = {"logprobs": 0, **spec.params}
    check_labels(spec.experiment, None, "sweep")
    if spec.name is not None:
        check_text("name", spec.name)
    if spec.batch_size is not None and spec.batch_size < 1:
        raise ParameterError(f"batch_size must be a whole number >= 1, not {spec.batch_size!r}", name="batch_size")
    if not isinstance(spec.grid, Mapping):
        raise ParameterError(f"grid must map parameter names to lists of values, not {spec.grid!r}", name="grid")
    metrics = spec.metrics
    if metrics is not None and metrics != "default" and not isinstance(metrics, str | Sequence):
        raise ParameterError(f"metrics must be 'default', None or a list of names, not {metrics!r}", name="metrics")
    if spec.executor not in EXECUTORS:
        raise ParameterError(f"unknown executor {spec.executor!r}; registered: {', '.join(EXECUTORS)}", name="executor")
    adapter = None if spec.lora is None else checked_lora({spec.lora: 1.0})[0][0]
    items = None if spec.data is None else load_items(spec.data, reference=spec.reference)
    for row, item in enumerate(items or []):
        scores.check_assertions(item.assertions, where=f"data row {row} (id {item.id!r})", data=True)
    checks = scores.check_assertions(spec.assertions)
    shared_checks = [c for c in checks if c["type"] != "python"]  # data, stored with each run
    python_checks = [c["value"] for c in checks if c["type"] == "python"]  # code, scored as metrics
    if (spec.prompts is None) == (spec.messages is None):
        raise ParameterError(
            "give a sweep prompts or messages (a conversation template), one of the two", name="prompts"
        )
    runs = planned_runs(
        spec.prompts or "",
        grid=spec.grid,
        seeds=spec.seeds,
        model=spec.model,
        items=items,
        messages=spec.messages,
        systems=spec.systems,
        lora=adapter,
        **fixed_params,
    )
    offered = _checked_tools(spec, fixed_params)
    records = [_item_record(j.item, shared_checks) for j in runs]
    judges = [s for s in spec.scorers or [] if isinstance(s, scores.Judge)]
    for judge in judges:
        judge.check()
    named = [s for s in spec.scorers or [] if not isinstance(s, scores.Judge)]
    wanted = [n for n in scores.item_scorers([r for r in records if r]) if metrics is not None]
    if offered and metrics is not None:
        wanted.append("tool_args_valid")
    run_metrics = [*metrics_mod.select(metrics, "run"), *metrics_mod.select(wanted, "run")]
    run_metrics += [metrics_mod.Metric(*scores.named_scorer(s), kind="run") for s in named]
    run_metrics += [metrics_mod.Metric(*scores.python_assertion(fn), kind="run") for fn in python_checks]
    if any(m.name == "tests" for m in run_metrics):
        _sandbox.check()  # refused before the first run where the code cannot be isolated
    target = get_store(store)
    chat = spec.chat
    identity = fixed_params if chat is None else {**fixed_params, "chat": chat}
    if offered:
        identity = {**identity, "tools": offered, "tool_choice": spec.tool_choice, "parallel": spec.parallel_tool_calls}
    sweep_id = sweep_id_for(spec.name, spec.experiment, runs, identity)
    done = _finished_keys(target, sweep_id)
    return Plan(
        spec=spec,
        runs=runs,
        todo=[j for j in runs if j.key() not in done],
        sweep_id=sweep_id,
        recipe=Recipe(
            fixed_params,
            sweep_id,
            spec.experiment,
            chat,
            shared_checks,
            Offered(offered, spec.tool_choice, spec.parallel_tool_calls) if offered else None,
        ),
        run_metrics=run_metrics,
        group_metrics=metrics_mod.select(metrics, "group"),
        judges=judges,
        store=target,
        adapter=adapter,
    )


def _checked_tools(spec: SweepSpec, fixed_params: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's tools, checked (with its tool_choice) before anything runs; empty without tools."""
    if spec.tools is None:
        return []
    if spec.chat is False:
        raise ParameterError("tools are offered to chats: leave chat out (or True) in a sweep with tools", name="chat")
    _, schema, offered = tools_mod.prepare(
        [{"role": "user", "content": "?"}], spec.tools, spec.tool_choice, parallel=spec.parallel_tool_calls
    )
    if schema is not None and ("json_schema" in fixed_params or "grammar" in fixed_params):
        raise ParameterError("tools constrain the output themselves: give tools or json_schema/grammar, not both")
    return offered


# An executor generates a plan's runs still to make, handing each finished run to the recorder;
# ``announce`` writes a line above the progress display (or is None).
Executor = Callable[[Plan, Recorder, Callable[[], bool], Callable[[str], None] | None], None]
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str, executor: Executor) -> None:
    """Make ``executor`` available to sweeps as ``executor=name`` (the built-ins are registered so too)."""
    EXECUTORS[name] = executor


def _local(
    the_plan: Plan, save: Recorder, should_stop: Callable[[], bool], announce: Callable[[str], None] | None
) -> None:
    """In this process: engine by engine (a model and its load settings, in plan order), all of an
    engine's runs decoded together (or one at a time)."""
    spec, adapter = the_plan.spec, the_plan.adapter

    def engine_key(job: PlannedRun) -> tuple[str, str]:
        return job.model, json.dumps(_load_settings(job, adapter))

    first = {k: i for i, k in reversed([*enumerate(map(engine_key, the_plan.todo))])}  # engines in plan order
    for (model_name, _), model_jobs in itertools.groupby(
        sorted(the_plan.todo, key=lambda j: first[engine_key(j)]), key=engine_key
    ):
        if should_stop():
            break
        engine_jobs = list(model_jobs)
        engine = load_engine(model_name, **_load_settings(engine_jobs[0], adapter))
        generations = [the_plan.recipe.generation(j, engine) for j in _by_prompt(engine_jobs)]
        batches = [generations] if spec.batch else [[g] for g in generations]
        for group in batches:
            slots = min(spec.batch_size or MAX_BATCH, len(group)) if spec.batch else None
            generate_many(engine, group, save, cancel=should_stop, slots=slots)
            if should_stop():
                break


def _on_dask(
    the_plan: Plan, save: Recorder, should_stop: Callable[[], bool], announce: Callable[[str], None] | None
) -> None:
    """On a Dask cluster (``spec.cluster``): blocks of runs decoded on workers, recorded here."""
    from . import _dask

    blocks_ = blocks(the_plan.todo, the_plan.spec.batch_size, the_plan.adapter)
    _dask.run_blocks(
        the_plan.spec.cluster, blocks_, the_plan.recipe, on_run=save, cancel=should_stop, announce=announce
    )


register_executor("local", _local)
register_executor("dask", _on_dask)


def run_sweep(
    spec: SweepSpec,
    *,
    store: str | os.PathLike[str] | Store | None = None,
    cancel: Cancel = None,
    progress: bool = True,
    on_run: Callable[[Run], Any] | None = None,
) -> pd.DataFrame:
    """Plan ``spec``, generate the runs still to make with its executor, and return the sweep's runs."""
    the_plan = plan(spec, store)
    bar = Progress(len(the_plan.runs), initial=len(the_plan.runs) - len(the_plan.todo), disable=not progress)
    started, tokens = time.perf_counter(), 0

    def progressed(run: Run) -> None:
        nonlocal tokens
        if run.finish_reason in FINISHED:
            tokens += run.completion_tokens
            bar.update(f"{tokens / (time.perf_counter() - started):,.0f} tok/s")
        if on_run is not None:
            on_run(run)

    save = Recorder(the_plan.store, the_plan.run_metrics, progressed)
    try:
        EXECUTORS[spec.executor](the_plan, save, stopper(cancel), bar.write if progress else None)
    finally:
        bar.close()
    target = the_plan.store
    frame = sweep_frame(the_plan.sweep_id, store=target, jobs=the_plan.runs, metrics=the_plan.group_metrics)
    if the_plan.judges and len(frame):
        graded = scores.score(frame[frame.finish_reason.isin(FINISHED)], the_plan.judges, store=target)
        frame = frame.merge(graded[["id", *(j.name for j in the_plan.judges)]], on="id", how="left")
    return frame


def sweep(
    prompts: str | Sequence[str] | Mapping[str, str] | None = None,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: int | Iterable[int] = 3,
    model: ModelArg | Sequence[ModelArg] = None,
    experiment: str | None = None,
    name: str | None = None,
    metrics: str | Sequence[str] | None = "default",
    batch: bool = True,
    batch_size: int | None = None,
    cancel: Cancel = None,
    progress: bool = True,
    store: str | os.PathLike[str] | Store | None = None,
    chat: bool | None = None,
    data: DataArg | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
    systems: str | Mapping[str, str] | None = None,
    reference: str = "reference",
    assertions: Sequence[Mapping[str, Any] | Callable[[str], bool]] | None = None,
    scorers: Sequence[scores.Scorer] | None = None,
    on_run: Callable[[Run], Any] | None = None,
    cluster: Any = None,
    executor: str | None = None,
    lora: str | os.PathLike[str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: tools_mod.ToolChoice = "auto",
    parallel_tool_calls: bool = True,
    **fixed_params: Any,
) -> pd.DataFrame:
    """Run ``prompts`` over the cross product of ``grid`` x ``seeds`` (x models) and return the runs.

    Seeds: a count n means seeds 0..n-1. Every run is recorded as it finishes; running the same
    sweep again (same ``name``, or same experiment, grid, prompts, seeds, models and fixed
    parameters) only runs what is missing, and a cancelled or interrupted sweep keeps every
    finished run. Token log-probabilities are recorded by default (``logprobs=0``) for the
    log-probability metrics. Returns one row per run with the grid parameters, ``prompt_name``,
    ``model`` and metric columns (group metrics per grid cell).

    ``batch=True`` decodes all the runs of a model together, across prompts (continuous batching:
    up to ``batch_size`` runs share each decode, 32 by default, and runs of one prompt share its
    evaluation); ``batch=False`` runs them one at a time. ``cancel`` (a ``threading.Event`` or
    callable) stops the sweep between tokens.

    ``chat``: send each prompt as a user message through the model's chat template (its stop
    strings added; ``messages`` and ``chat_format`` recorded). ``None`` (the default) does so for
    models that carry a template (instruct models) and sends the raw prompt to the others.

    Evaluations: with ``data`` (a DataFrame, a list of dicts, or a .csv / .jsonl / .parquet file)
    each prompt is a template whose ``{placeholders}`` every row fills; the row (its ``id``, its
    variables, its ``reference`` column, named by ``reference=``, and its ``assert`` checks) is
    recorded with the run and ``item`` is a coordinate. ``assertions`` apply to every run. Runs are
    scored with the reference scores and assertion results that apply (see ``lmbench.scores``)
    besides ``metrics``; ``scorers`` adds metric names, callables or ``lmbench.judge(...)`` judges
    (which grade after generation, with their own recorded runs).

    ``on_run(run)`` hears each run as soon as it is recorded (live plots, a progress of one's own).
    ``cluster`` spreads the runs over a Dask cluster (``pip install 'lmbench[dask]'``): a
    ``distributed.Client``, a scheduler address, or ``"local:N"`` (a ``LocalCluster`` of N worker
    processes); see ``lmbench._dask``. The runs, their ids and the store are the same as locally.

    ``tools`` (with ``tool_choice`` and ``parallel_tool_calls``, as ``lmbench.chat`` takes them) makes every
    run a chat that offers them: each run records the calls it made (``tool_calls``) and is scored with
    ``tool_args_valid``, and a data set's ``tool_call`` column (``{"name": ..., "arguments": {...}}``) adds
    ``tool_name`` and ``tool_call`` (see ``lmbench.tools``), so the sweep reports tool-call accuracy.

    ``lora`` applies a LoRA adapter file to every model (scale 1); ``grid={"lora_scale": [0, 0.5, 1]}``
    sweeps its scale like a parameter (each scale a loaded engine of its own, recorded with the runs).

    The options are those of ``SweepSpec`` (generation parameters given as keywords go to its
    ``params``); ``run_sweep(spec)`` runs a spec built elsewhere (the CLI, a config file).
    """
    spec = SweepSpec.build(
        prompts=prompts,
        messages=messages,
        systems=systems,
        grid={} if grid is None else grid,
        seeds=seeds,
        model=model,
        params=fixed_params,
        data=data,
        reference=reference,
        assertions=assertions,
        scorers=scorers,
        metrics=metrics,
        chat=chat,
        experiment=experiment,
        name=name,
        batch=batch,
        batch_size=batch_size,
        executor=executor or ("local" if cluster is None else "dask"),
        cluster=cluster,
        lora=None if lora is None else os.fspath(lora),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )
    return run_sweep(spec, store=store, cancel=cancel, progress=progress, on_run=on_run)


@dataclass(frozen=True)
class Offered:
    """The tools a sweep offers every run, with its ``tool_choice`` and whether calls may be parallel."""

    tools: list[dict[str, Any]]
    choice: tools_mod.ToolChoice
    parallel: bool


@dataclass(frozen=True)
class Recipe:
    """How a sweep turns a planned job into a generation on a loaded model (sent to Dask workers as is)."""

    fixed_params: dict[str, Any]
    sweep_id: str
    experiment: str | None
    chat: bool | None
    shared_checks: list[dict[str, Any]]
    tools: Offered | None = None

    def generation(self, job: PlannedRun, engine: Engine) -> Job:
        """The text the model gets (through its chat template when it should), the parameters with the
        job's seed, and the fields recorded with the run (its id a function of the sweep and the job)."""
        cell = {k: v for k, v in job.cell if k not in LOAD_DIMENSIONS}
        params = validate_params({**self.fixed_params, **cell, "seed": job.seed})
        labels = Labels(
            self.experiment,
            source="sweep",
            run_id=hashlib.sha1(f"{self.sweep_id}|{job.key()}".encode()).hexdigest(),
            sweep_id=self.sweep_id,
            sweep_coords=job.coords,
            item=_item_record(job.item, self.shared_checks),
        )
        turn: Turn
        if self.tools is not None:  # a chat that offers tools: the calls are recorded with the run
            asked = job.messages or [{"role": "user", "content": job.prompt}]
            turns, params, offered, offering = with_tools(
                asked, params, self.tools.tools, self.tools.choice, self.tools.parallel
            )
            turn = render(engine, turns, offering)
            labels = dataclasses.replace(labels, tools=offered)
        elif job.messages is not None:
            turn = render(engine, job.messages)
        else:
            templated = has_template(engine) if self.chat is None else self.chat
            turn = (
                render(engine, [{"role": "user", "content": job.prompt}])
                if templated
                else prepare(engine, job.prompt, raw=True)
            )
        return Job.of(turn, params, labels)


def _by_prompt(jobs: Iterable[PlannedRun]) -> list[PlannedRun]:
    """Jobs with the runs of one prompt next to each other (they share its cells), in plan order otherwise."""
    groups: dict[str, list[PlannedRun]] = {}
    for job in jobs:
        groups.setdefault(json.dumps([job.prompt, job.messages], default=str), []).append(job)
    return [j for group in groups.values() for j in group]


def blocks(
    jobs: Sequence[PlannedRun], size: int | None, lora: str | None = None
) -> list[tuple[str, dict[str, Any], list[PlannedRun]]]:
    """The jobs as (model, load settings, block) units of work for a cluster: one engine each (a model and,
    with a LoRA adapter ``lora``, the job's scale), runs of a prompt together, at most ``size`` (default
    ``MAX_BATCH``) runs, each block decoded as one batch on its worker."""
    size = size or MAX_BATCH
    engines: dict[tuple[str, str], list[PlannedRun]] = {}
    for job in jobs:
        engines.setdefault((job.model, json.dumps(_load_settings(job, lora))), []).append(job)
    units: list[tuple[str, dict[str, Any], list[PlannedRun]]] = []
    for (model, settings), engine_jobs in engines.items():
        ordered = _by_prompt(engine_jobs)
        units += [(model, json.loads(settings), ordered[at : at + size]) for at in range(0, len(ordered), size)]
    return units


def _item_record(item: Item | None, checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a run keeps of its data-set row and of the sweep's assertions (None when there is neither)."""
    if item is None and not checks:
        return None
    record = item.record() if item is not None else {"id": None, "vars": {}, "reference": None, "assert": []}
    return {**record, "assert": [*record["assert"], *checks]}


def _finished_keys(store: Store, sweep_id: str) -> set[str]:
    frame = store.runs(sweep_id=sweep_id)
    finished = frame[frame.finish_reason.isin(FINISHED)]
    return {_canonical(c) for c in finished.sweep_coords.dropna()}


def _canonical(coords: dict[str, Any]) -> str:
    """A stored sweep_coords value in the same form as ``PlannedRun.key()``."""
    return json.dumps(coords, sort_keys=True)


def sweep_frame(
    sweep_id: str,
    *,
    store: str | os.PathLike[str] | Store | None = None,
    jobs: list[PlannedRun] | None = None,
    metrics: Sequence[metrics_mod.Metric] | None = None,
) -> pd.DataFrame:
    """The runs of a sweep with its coordinates as columns and group metrics per grid cell."""
    frame = get_store(store).runs(sweep_id=sweep_id)
    coords = pd.DataFrame(list(frame.sweep_coords), index=frame.index)
    if "model" not in coords:  # no run yet (a sweep cancelled before its first run)
        coords["model"] = pd.Series(index=frame.index, dtype=object)
    frame["model"] = coords["model"]
    if jobs is not None:  # the plan's runs only, in the plan's (grid) order rather than the order they finished
        position = {j.key(): i for i, j in enumerate(jobs)}
        rank = pd.Series([position.get(_canonical(c), -1) for c in frame.sweep_coords], index=frame.index)
        order = rank[rank >= 0].sort_values(kind="stable").index
        frame = frame.loc[order].reset_index(drop=True)
        coords = coords.loc[order].reset_index(drop=True)
    for column in coords.columns:  # coordinates that are not run columns: the item of a data set
        if column not in frame:
            frame[column] = coords[column]
    cell_columns = ["model", "prompt_name", *[c for c in coords.columns if c not in ("model", "prompt_name", "seed")]]
    group_metrics = metrics_mod.available("group").values() if metrics is None else metrics
    if len(frame) and group_metrics:
        rows = [
            {**dict(zip(cell_columns, key, strict=True)), **metrics_mod.compute_group(list(texts), list(group_metrics))}
            for key, texts in frame.groupby(cell_columns, dropna=False, sort=False)["text"]
        ]
        frame = frame.merge(pd.DataFrame(rows), on=cell_columns, how="left")
    frame.attrs["grid"] = [c for c in cell_columns if c not in ("model", "prompt_name")]
    frame.attrs["sweep_id"] = sweep_id
    return frame
