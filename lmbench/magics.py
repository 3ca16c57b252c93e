"""IPython magics: ``%lmbench`` (model, runs, compare, presets, help) and ``%%lmbench`` (generate from the cell).

A thin layer: every magic calls the same public functions as Python code.
"""

from __future__ import annotations

import shlex
import sys
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

HELP = """lmbench magics

  %lmbench panel                                           show the workbench panel
  %lmbench model PATH_OR_ALIAS [--n-ctx N] [--threads N]   load (or switch to) a model for this session
  %lmbench runs [--experiment E] [--last N] [--all]        recorded runs: the columns read first (--all: every one)
  %lmbench compare RUN_ID [RUN_ID ...] [--by PARAM]        show runs side by side
  %lmbench presets                                         list parameter presets
  %lmbench help                                            this help

  %%lmbench [-t TEMP] [-p TOP_P] [-n MAX_TOKENS] [-s SEED] [-k TOP_K] [-e EXPERIMENT]
            [--preset NAME] [--stream/--no-stream] [--min-p ...] [--stop TEXT] ...
  <prompt>                                                 generate from the cell body, record the run
                                                           (every generation parameter has an option)
"""


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
    p.parser.add_argument("model")
    p.parser.add_argument("--n-ctx", type=int, default=2048)
    p.parser.add_argument("--threads", type=int, default=None)
    return p


def _runs_parser() -> _Parser:
    p = _Parser("%lmbench runs")
    p.parser.add_argument("--experiment", "-e", default=None)
    p.parser.add_argument("--last", "-l", type=int, default=20)
    p.parser.add_argument("--all", "-a", action="store_true", help="every column, not only the ones read first")
    return p


# The columns a person reads first in ``%lmbench runs``, then how the prompt was sent and the run's id
# (for ``%lmbench compare``); ``--all`` shows every column.
READ_FIRST = ("created_at", "model_name", "prompt", "text", "finish_reason", "completion_tokens", "tokens_per_s")


def _compare_parser() -> _Parser:
    p = _Parser("%lmbench compare")
    p.parser.add_argument("run_ids", nargs="+")
    p.parser.add_argument("--by", default="temperature")
    return p


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
    @argument("-e", "--experiment", default=None)
    @argument("--preset", default=None)
    @argument("--stream", dest="stream", action="store_true", default=True)
    @argument("--no-stream", dest="stream", action="store_false")
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
        command, rest = (words[0], words[1:]) if words else ("help", [])
        if command == "help":
            print(HELP)
            return None
        if command == "model":
            args = _model_parser().parse(rest)
            self.engine = engine_mod.load(args.model, n_ctx=args.n_ctx, n_threads=args.threads)
            print(f"lmbench: using {self.engine.name} ({self.engine.info.get('parameters', 0):,} parameters)")
            return self.engine
        if command == "panel":
            if rest:
                raise _UsageError("usage: %lmbench panel   (takes no arguments; the panel uses %lmbench model's model)")
            from .ui._panel import panel

            return panel(self.engine)
        if command == "runs":
            args = _runs_parser().parse(rest)
            frame = store.runs(args.experiment, last=args.last)
            if args.all:
                return frame
            mode = frame.chat_format.map(lambda f: describe_mode(f if isinstance(f, str) else None))
            return frame[list(READ_FIRST)].assign(**{"sent as": mode, "id": frame.id}).set_index("created_at")
        if command == "compare":
            args = _compare_parser().parse(rest)
            return compare(args.run_ids, by=args.by)
        if command == "presets":
            return presets()
        raise _UsageError(f"unknown command {command!r}; try %lmbench help")

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
