"""Chat templates are code from a model file: render them in a sandbox with limits on work and size.

Jinja's sandbox stops attribute tricks, not a template that loops for hours or builds a
gigabyte string (``{{ 'x' * 3000000000 }}``, nested ``range(99999)`` loops, ``s ~ s`` doubled in
a loop). Here every loop iteration, multiplication, concatenation, call and filter draws on a
per-render budget of steps and a deadline, and every string or list it makes is size-checked; the
optimizer, which would fold constant expressions at compile time, is off. Breaking a limit, or a
template that does not compile, raises ``ChatTemplateError``.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError

MAX_STEPS = 1_000_000  # loop iterations, operations and calls in one render
MAX_SECONDS = 2.0
MAX_CHARS = 1_000_000  # the longest string or list a template may build (and the rendered prompt)
MAX_NUMBER = 1_000_000  # the largest whole-number argument to a call or filter (widths, counts, repeats)


class _Budget(threading.local):
    steps = 0
    deadline = 0.0

    def spend(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise SecurityError(f"the template took more than {MAX_STEPS:,} steps")
        if self.steps % 1024 == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"the template ran longer than {MAX_SECONDS} s")


_budget = _Budget()


def _sized(value: Any) -> Any:
    if isinstance(value, str | list | tuple | bytes) and len(value) > MAX_CHARS:
        raise SecurityError(f"the template built a value of {len(value):,} items (limit {MAX_CHARS:,})")
    return value


_HUGE_WIDTH = re.compile(r"\d{7,}")


def _check_format(template: Any) -> None:
    """A format string may not ask for a field a million characters wide (``'%0999999999d' % 1``)."""
    if isinstance(template, str) and _HUGE_WIDTH.search(template):
        raise SecurityError("the template used a format with a huge width or precision")


def _check_args(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_NUMBER:
            raise SecurityError(f"the template passed the number {arg} (limit {MAX_NUMBER:,})")


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - jinja's visitor name
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})

    def __init__(self) -> None:
        super().__init__(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            optimized=False,
            extensions=[jinja2.ext.loopcontrols],
        )
        self.filters = {name: _guarded(fn) for name, fn in self.filters.items()}
        self.filters["tojson"] = _guarded(_tojson)
        self.globals["range"] = _counted_range

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop draws on the budget per iteration
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("checked_iter"), [loop.iter], [], None, None)
        return tree

    @staticmethod
    def checked_iter(iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            _budget.spend()
            yield item

    @staticmethod
    def checked_concat(values: Iterable[Any]) -> str:
        _budget.spend()
        return str(_sized("".join(map(str, values))))

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _budget.spend()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError(f"the template raised a number to the power {right}")
        if operator == "%":
            _check_format(left)
        if operator == "*":
            sized, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sized, str | list | tuple) and isinstance(times, int) and len(sized) * times > MAX_CHARS:
                raise SecurityError(f"the template repeated a value {times:,} times")
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _budget.spend()
        _check_args((*args, *kwargs.values()))
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if getattr(value, "__name__", None) in ("format", "format_map"):
            _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that spends budget, refuses huge numeric arguments and size-checks its result."""

    @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget.spend()
        _check_args((*args[1:], *kwargs.values()))
        if fn.__name__ == "do_format" and args:
            _check_format(args[0])
        return _sized(fn(*args, **kwargs))

    return guarded


def _counted_range(*args: int) -> range:
    _check_args(args)
    return range(*args)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


_environment = _Sandbox()


@functools.lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """A chat template compiled in the sandbox (``ChatTemplateError`` when it does not compile)."""
    try:
        return _environment.from_string(source)
    except (jinja2.TemplateError, RecursionError, MemoryError, ValueError) as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from None


@functools.lru_cache(maxsize=32)
def reads(source: str, name: str) -> bool:
    """Whether a chat template reads the variable ``name`` (``tools``: it has a tools section of its own)."""
    try:
        return name in jinja2.meta.find_undeclared_variables(_environment.parse(source))
    except (jinja2.TemplateError, RecursionError, MemoryError, ValueError) as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from None


def render(source: str, **variables: Any) -> str:
    """Render a chat template within the limits; ``ChatTemplateError`` says which one broke."""
    template = compile_template(source)

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the chat template refused the conversation: {message}")

    _budget.steps, _budget.deadline = 0, time.monotonic() + MAX_SECONDS
    try:
        text = template.render(**variables, raise_exception=raise_exception)
    except ChatTemplateError:
        raise
    except SecurityError as exc:
        raise ChatTemplateError(f"the chat template broke a limit: {exc}") from None
    except RecursionError:
        raise ChatTemplateError("the chat template recursed too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside model-supplied code is the template's
        raise ChatTemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_CHARS:
        raise ChatTemplateError(f"the chat template rendered {len(text):,} characters (limit {MAX_CHARS:,})")
    return text
