"""IPython magics: ``%lmbench`` (panel, model, runs, compare, presets, help) and ``%%lmbench`` (generate from the cell).

A thin layer: every magic calls the same public functions as Python code. ``%lmbench help`` is
written from the commands' parsers and the cell magic's, whose options come from the parameter
definition, so it cannot list an option that does not exist or miss one that does.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import clear_output

from .compare import compare
from .engine import _engine as engine_mod
from .errors import LmbenchError
from .generation import generate
from .params import given_params, option_specs
from .presets import presets
from .run import describe_mode
from .store import _store as store


class _UsageError(Exception):
    pass


class _Parser:
    """argparse for subcommands, turning its exits into a usage message instead of SystemExit."""

    def __init__(self, prog: str) -> None:
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message: str) -> None:  # type: ignore[override]
                raise _UsageError(f"{self.format_usage().strip()}\n{prog}: error: {message}")

        self.parser = Parser(prog=prog, add_help=False)

    def parse(self, args: list[str]) -> Any:
        return self.parser.parse_args(args)


def _model_parser() -> _Parser:
    p = _Parser("%lmbench model")
    p.parser.add_argument("model", metavar="PATH_OR_ALIAS")
    p.parser.add_argument("--n-ctx", type=int, default=2048, metavar="N")
    p.parser.add_argument("--threads", type=int, default=None, metavar="N")
    return p


def _runs_parser() -> _Parser:
    p = _Parser("%lmbench runs")
    p.parser.add_argument("--experiment", "-e", default=None)
    p.parser.add_argument("--last", "-l", type=int, default=20, metavar="N")
    p.parser.add_argument("--all", "-a", action="store_true", help="every column, not only the ones read first")
    return p


# The columns a person reads first in ``%lmbench runs``, then how the prompt was sent and the run's id
# (for ``%lmbench compare``); ``--all`` shows every column.
READ_FIRST = ("created_at", "model_name", "prompt", "text", "finish_reason", "completion_tokens", "tokens_per_s")


def _compare_parser() -> _Parser:
    p = _Parser("%lmbench compare")
    p.parser.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    p.parser.add_argument("--by", default="temperature", metavar="PARAM")
    return p


@dataclass(frozen=True)
class _Command:
    """A ``%lmbench`` command: what it does, and its argument parser (None: it takes no arguments)."""

    summary: str
    parser: Callable[[], _Parser] | None = None

    def usage(self, name: str) -> str:
        """``%lmbench NAME [options]`` as its parser writes it."""
        if self.parser is None:
            return f"%lmbench {name}"
        return " ".join(self.parser().parser.format_usage().removeprefix("usage:").split())


# The line magic's commands; ``LmbenchMagics._<name>`` does each, and the help is written from this table.
COMMANDS = {
    "panel": _Command("show the workbench panel (with %lmbench model's model)"),
    "model": _Command("load (or switch to) a model for this session", _model_parser),
    "runs": _Command("recorded runs: the columns read first (--all: every one)", _runs_parser),
    "compare": _Command("show runs side by side", _compare_parser),
    "presets": _Command("list parameter presets"),
    "help": _Command("this help"),
}


def help_text(cell_parser: Any) -> str:
    """``%lmbench help``: every command's usage from its parser, then the cell magic's options (every
    generation parameter, from the parameter definition) as its parser writes them."""
    usages = {name: command.usage(name) for name, command in COMMANDS.items()}
    width = max(map(len, usages.values())) + 2
    lines = [f"  {usages[name]:<{width}}{command.summary}" for name, command in COMMANDS.items()]
    options = cell_parser.format_help().partition("\noptions:\n")[2]
    return "\n".join(
        [
            "lmbench magics",
            "",
            *lines,
            "",
            "  %%lmbench [options]   then the prompt as the cell body: generate from it and record the run",
            "",
            "options of %%lmbench (every generation parameter has one):",
            options.rstrip(),
        ]
    )


def _param_arguments(fn: Any) -> Any:
    """``%%lmbench`` options for every generation parameter, from the one parameter definition."""
    for flags, options in reversed(option_specs()):
        fn = argument(*flags, **options)(fn)
    return fn


@magics_class
class LmbenchMagics(Magics):
    """``%lmbench`` and ``%%lmbench``; the session's model is kept on this object."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.engine: engine_mod.Engine | None = None

    @magic_arguments()
    @argument("-e", "--experiment", default=None, help="the experiment to record the run in")
    @argument("--preset", default=None, help="saved parameter values to start from")
    @argument("--stream", dest="stream", action="store_true", default=True, help="print the text as it comes (default)")
    @argument("--no-stream", dest="stream", action="store_false", help="show only the run when it is done")
    @argument(
        "--raw",
        action="store_true",
        help="complete the cell as it is (default for a model with a chat "
        "template: send it as a user message through the template)",
    )
    @_param_arguments
    @argument("command", nargs="*")
    @line_cell_magic
    def lmbench(self, line: str, cell: str | None = None) -> Any:
        """Run ``%lmbench help`` for the list of commands."""
        try:
            if cell is not None:
                return self._generate(line, cell)
            return self._line(shlex.split(line))
        except _UsageError as exc:
            print(exc, file=sys.stderr)
        except LmbenchError as exc:
            print(f"lmbench: {exc}", file=sys.stderr)
        return None

    def _line(self, words: list[str]) -> Any:
        name, rest = (words[0], words[1:]) if words else ("help", [])
        command = COMMANDS.get(name)
        if command is None:
            raise _UsageError(f"unknown command {name!r} (commands: {', '.join(COMMANDS)}); try %lmbench help")
        if command.parser is None and rest:
            raise _UsageError(f"usage: {command.usage(name)}   (takes no arguments)")
        args = command.parser().parse(rest) if command.parser is not None else None
        handler: Callable[[Any], Any] = getattr(self, f"_{name}")
        return handler(args)

    def _help(self, args: None) -> None:
        print(help_text(self.lmbench.parser))

    def _model(self, args: Any) -> engine_mod.Engine:
        self.engine = engine_mod.load(args.model, n_ctx=args.n_ctx, n_threads=args.threads)
        print(f"lmbench: using {self.engine.name} ({self.engine.info.get('parameters', 0):,} parameters)")
        return self.engine

    def _panel(self, args: None) -> Any:
        from .ui._panel import panel

        return panel(self.engine)

    def _runs(self, args: Any) -> Any:
        frame = store.runs(args.experiment, last=args.last)
        if args.all:
            return frame
        mode = frame.chat_format.map(lambda f: describe_mode(f if isinstance(f, str) else None))
        return frame[list(READ_FIRST)].assign(**{"sent as": mode, "id": frame.id}).set_index("created_at")

    def _compare(self, args: Any) -> Any:
        return compare(args.run_ids, by=args.by)

    def _presets(self, args: None) -> Any:
        return presets()

    def _generate(self, line: str, cell: str) -> Any:
        try:
            args = parse_argstring(self.lmbench, line)
        except Exception as exc:  # noqa: BLE001 - argparse errors become a usage line
            usage = self.lmbench.parser.format_usage().lstrip(":").strip()
            raise _UsageError(f"usage: {usage}\n{exc}") from None
        params = given_params(args)
        on_token = (lambda text: print(text, end="", flush=True)) if args.stream else None
        run = generate(
            cell.strip("\n"),
            model=self.engine,
            raw=args.raw,
            experiment=args.experiment,
            preset=args.preset,
            on_token=on_token,
            source="magic",
            **params,
        )
        if args.stream:  # the streamed text gives way to the run's card: the reply is shown once
            clear_output()
        return run


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; no model is loaded until one is used."""
    ipython.register_magics(LmbenchMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics registered by ``load_ipython_extension``."""
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("lmbench", None)
    ipython.magics_manager.registry.pop("LmbenchMagics", None)
