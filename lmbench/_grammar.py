"""JSON schemas and GBNF grammars, bounded before llama.cpp builds them.

llama.cpp's grammar parser recurses once per nested group and writes a repeated element out once
per repetition, so a large bound in an ordinary-looking schema (``maxLength: 20000``) or a deeply
nested grammar overflows its stack and kills the process (SIGSEGV), and a large ``minItems``
builds a grammar of hundreds of megabytes. Everything a grammar may be asked to build is bounded
here, with a ``ValueError`` naming the keyword and the limit (``GenerationParams`` turns it into a
``ParameterError``); a grammar too large to judge from its text is compiled in a child process
first (``verify``), so a crash there cannot take the kernel or an API worker's other requests
down. ``docs/limits.md`` lists the limits.

Run as a script (``python _grammar.py MODEL``, the grammar on stdin) it is that child: it imports
nothing but llama-cpp-python and prints ``ok`` when the grammar compiled and constrained one step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

# The longest grammar text (or JSON schema, as JSON) a generation may be constrained by.
MAX_GRAMMAR_CHARS = 100_000
# The largest repetition count: {m,n} in a grammar or a pattern; minLength, maxLength, minItems, maxItems.
MAX_REPETITION = 1000
# The deepest nesting of groups ( ... ) in a grammar (a schema's bounded repetition nests one group per count).
MAX_NESTING = 2000
# The deepest nesting of schemas in a JSON schema (objects and arrays within each other).
MAX_SCHEMA_DEPTH = 50
# The most elements a grammar may expand to once its repetitions are written out.
MAX_EXPANDED = 1_000_000
# A grammar expanding to more elements than this is compiled in a child process before this process builds it.
CHILD_CHECK_ABOVE = 20_000
# How long the child may take to compile a grammar.
CHILD_TIMEOUT_S = 120

# JSON-schema keywords llama-cpp-python's grammar converter ignores: refused, so "always valid" stays true.
UNENFORCED_KEYWORDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "contains",
)
_COUNTS = (("minLength", "maxLength"), ("minItems", "maxItems"))
_DATA_KEYWORDS = ("enum", "const", "default", "examples", "title", "description")
# What one written-out copy of a schema's repeated item costs in grammar elements (a group, a rule, an option).
_ITEM_COST = 8
# A quantifier in a regular expression (not an escaped brace).
_QUANTIFIER = re.compile(r"(?<!\\)\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
_GBNF_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
    | (?P<literal>"(?:\\.|[^"\\])*")
    | (?P<chars>\[(?:\\.|[^\]\\])*\])
    | (?P<open>\()
    | (?P<close>\))
    | (?P<repeat>\{[^}]*\})
    | (?P<other>!?<[^>]*>|::=|[A-Za-z0-9_-]+|.)""",
    re.VERBOSE | re.DOTALL,
)


def _count(keyword: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"json_schema {keyword} at {where} must be a whole number >= 0, not {value!r}")
    if value > MAX_REPETITION:
        raise ValueError(
            f"json_schema {keyword} {value:,} at {where} is above the limit of {MAX_REPETITION:,} repetitions"
        )
    return value


def _pattern_cost(pattern: Any, where: str) -> int:
    """The written-out size of a pattern's quantifiers (``ValueError`` past ``MAX_REPETITION``)."""
    if not isinstance(pattern, str):
        raise ValueError(f"json_schema pattern at {where} must be a string, not {pattern!r}")
    cost = 0
    for match in _QUANTIFIER.finditer(pattern):
        numbers = [int(n) for n in match.groups() if n]
        if any(n > MAX_REPETITION for n in numbers):
            raise ValueError(
                f"json_schema pattern quantifier {match.group()} at {where} is above the limit of "
                f"{MAX_REPETITION:,} repetitions"
            )
        cost += (max(numbers, default=0) + 1) * _ITEM_COST
    return cost


def check_schema(schema: Any) -> None:
    """``ValueError`` unless a grammar can enforce ``schema`` and stays within the limits.

    Keywords the converter cannot enforce (numeric bounds and the like) are refused rather than
    silently ignored: an output made under a schema always validates against it. Walked without
    recursion, so no nesting can exhaust Python's stack before the depth limit says so.
    """
    expanded = 0
    pending: list[tuple[Any, str, int]] = [(schema, "", 0)]
    while pending:
        node, where, depth = pending.pop()
        if isinstance(node, list):
            pending += [(value, f"{where}/{i}", depth) for i, value in enumerate(node)]
            continue
        if not isinstance(node, dict):
            continue
        if depth >= MAX_SCHEMA_DEPTH:
            raise ValueError(f"json_schema is nested more than {MAX_SCHEMA_DEPTH} schemas deep (at {where})")
        for low, high in _COUNTS:
            counts = [_count(k, node[k], f"{where}/{k}") for k in (low, high) if k in node]
            if len(counts) == 2 and counts[0] > counts[1]:
                raise ValueError(f"json_schema {low} is larger than {high} at {where or '/'}")
            expanded += max(counts, default=0) * _ITEM_COST
        for key, value in node.items():
            at = f"{where}/{key}"
            if key in UNENFORCED_KEYWORDS:
                raise ValueError(
                    f"json_schema uses {key!r}, which a grammar cannot enforce; use enum (or leave it out and "
                    "check values with a json_schema assertion)"
                )
            if key == "pattern":
                expanded += _pattern_cost(value, at)
            elif key not in _DATA_KEYWORDS:
                named = key in ("properties", "$defs", "definitions") and isinstance(value, dict)
                children = [(v, f"{at}/{k}") for k, v in value.items()] if named else [(value, at)]
                pending += [(child, path, depth + 1) for child, path in children]
    if expanded > MAX_EXPANDED:
        raise ValueError(
            f"json_schema would expand to a grammar of about {expanded:,} elements; the limit is {MAX_EXPANDED:,}"
        )


@functools.lru_cache(maxsize=64)
def _converted(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    # The converter's string character lets raw control characters (a newline) into strings, which
    # JSON forbids; llama.cpp's own converter excludes them, and so does this.
    return json_schema_to_gbnf(schema_json).replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]')


def schema_grammar(schema: dict[str, Any]) -> str:
    """A JSON schema as a GBNF grammar (llama-cpp-python's converter); ``ValueError`` if it cannot be converted."""
    check_schema(schema)
    try:
        text = json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"json_schema must be plain JSON: {exc}") from None
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"json_schema is {len(text):,} characters of JSON; the limit is {MAX_GRAMMAR_CHARS:,}")
    try:
        grammar = _converted(text)
    except Exception as exc:  # noqa: BLE001 - the converter raises anything on a schema it cannot handle
        raise ValueError(f"json_schema cannot be turned into a grammar: {type(exc).__name__}: {exc}") from None
    expanded_size(grammar, "json_schema's grammar")
    return grammar


def expanded_size(grammar: str, what: str = "grammar") -> int:
    """How many elements ``grammar`` expands to in llama.cpp (about); ``ValueError`` past a limit.

    Checks every repetition count against ``MAX_REPETITION``, the nesting of groups against
    ``MAX_NESTING`` and the written-out size against ``MAX_EXPANDED``, reading the GBNF text
    (literals and character classes are skipped whole, so a brace or a parenthesis in them counts for nothing).
    """
    depth = deepest = 0
    size = last = 0
    for match in _GBNF_TOKEN.finditer(grammar):
        kind, token = match.lastgroup, match.group()
        if kind == "space":
            continue
        if kind == "open":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                raise ValueError(f"{what} nests groups more than {MAX_NESTING:,} deep")
            last = 0
            continue
        if kind == "repeat":
            numbers = [int(n) for n in re.findall(r"\d+", token)]
            if any(n > MAX_REPETITION for n in numbers):
                raise ValueError(f"{what} repetition {token} is above the limit of {MAX_REPETITION:,} repetitions")
            size += last * max(numbers, default=1)
        else:
            depth -= kind == "close"
            last = max(1, len(token) - 2) if kind in ("literal", "chars") else 1
            size += last
        if size > MAX_EXPANDED:
            raise ValueError(f"{what} expands to more than {MAX_EXPANDED:,} elements")
    return size


_verified: set[str] = set()
_lock = threading.Lock()


def verify(grammar: str, model: Path) -> None:
    """``ValueError`` if ``grammar`` cannot be built for ``model``'s vocabulary without failing or crashing.

    A grammar of up to ``CHILD_CHECK_ABOVE`` elements is left to the caller to build; a larger one
    is built once in a child process first (the verdict is remembered for this process).
    """
    if expanded_size(grammar) <= CHILD_CHECK_ABOVE:
        return
    import llama_cpp

    key = hashlib.sha256(f"{model}|{llama_cpp.__version__}|{grammar}".encode()).hexdigest()
    with _lock:
        if key in _verified:
            return
    problem = _compile_in_child(grammar, model)
    if problem:
        raise ValueError(problem)
    with _lock:
        _verified.add(key)


def _compile_in_child(grammar: str, model: Path) -> str | None:
    """Why building ``grammar`` failed or crashed in a child process, or None when it worked."""
    launcher = f"import runpy; runpy.run_path({__file__!r}, run_name='__main__')"
    try:
        result = subprocess.run(
            [sys.executable, "-c", launcher, str(model)],
            input=grammar.encode(),
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            cwd=os.path.abspath(os.sep),
            env={**os.environ, "GGML_NO_BACKTRACE": "1"},
        )
    except subprocess.TimeoutExpired:
        return f"llama.cpp did not finish building the grammar within {CHILD_TIMEOUT_S} s in a test process"
    output = (result.stderr + result.stdout).decode(errors="replace")
    if result.returncode == 0 and output.rstrip().endswith("ok"):
        return None
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = " | ".join(lines[-2:]) or "no output"
    if result.returncode < 0:
        return f"llama.cpp crashed building the grammar (signal {-result.returncode}) in a test process: {last}"
    return f"the grammar does not parse: {last}"


def _child(model_path: str) -> int:
    import ctypes

    import llama_cpp

    grammar = sys.stdin.buffer.read()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
    if not model:
        print("llama.cpp could not load the model's vocabulary", flush=True)
        return 2
    vocab = llama_cpp.llama_model_get_vocab(model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar, b"root")
    if not sampler:
        print("llama.cpp refused it", flush=True)
        return 2
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    data = (llama_cpp.llama_token_data * n_vocab)(*(llama_cpp.llama_token_data(i, 0.0, 0.0) for i in range(n_vocab)))
    candidates = llama_cpp.llama_token_data_array(data, n_vocab, -1, False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))  # one constrained step
    llama_cpp.llama_sampler_free(sampler)
    llama_cpp.llama_model_free(model)
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
