"""Nothing a schema, a grammar, a data file, a template, an assertion, a judge or a folder holds can crash,
hang or lose runs: each is refused with a clear error before anything runs, or handled (issue 30)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lmbench
from lmbench import _grammar


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"json_schema": {"type": "string", "maxLength": 20_000}}, "maxLength 20,000 at /maxLength is above the limit"),
        ({"json_schema": {"type": "string", "maxLength": 10**7}}, "maxLength 10,000,000"),
        ({"json_schema": {"type": "array", "items": {"type": "string"}, "maxItems": 20_000}}, "maxItems 20,000"),
        ({"json_schema": {"type": "array", "minItems": 10**7}}, "minItems 10,000,000"),
        ({"json_schema": {"type": "string", "pattern": "a{0,20000}"}}, "pattern quantifier {0,20000}"),
        ({"json_schema": {"type": "string", "minLength": 5, "maxLength": 2}}, "minLength is larger than maxLength"),
        ({"json_schema": {"type": "string", "maxLength": "ten"}}, "must be a whole number"),
        ({"json_schema": _nested(400)}, f"nested more than {_grammar.MAX_SCHEMA_DEPTH} schemas deep"),
        ({"grammar": "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000}, "nests groups more than 2,000 deep"),
        ({"grammar": 'root ::= "a"{0,100000}'}, "repetition {0,100000} is above the limit of 1,000"),
        ({"grammar": 'root ::= "a"{20000}'}, "repetition {20000}"),
        ({"grammar": "root ::= " + '"' + "x" * 5000 + '"{1000} ' * 3}, "expands to more than 1,000,000"),
    ],
)
def test_grammar_bounds_are_refused_up_front(params: dict[str, Any], words: str) -> None:
    with pytest.raises(lmbench.ParameterError, match="limit|larger|whole number|deep|expands") as caught:
        lmbench.validate_params(**params)
    assert words in str(caught.value)
    assert caught.value.name in ("json_schema", "grammar")


@pytest.mark.no_test_model
def test_a_brace_or_paren_inside_a_literal_is_not_a_repetition_or_a_group() -> None:
    grammar = 'root ::= "{0,100000}" [(] "((((" ("a" | "b"){2,5}'
    assert lmbench.validate_params(grammar=grammar).grammar == grammar
    assert _grammar.expanded_size(grammar) < 100


def test_schemas_within_the_limits_still_constrain_the_output(model_path: Path) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 1000}}, "required": ["name"]}
    run = lmbench.generate("Once", model=model_path, json_schema=schema, max_tokens=30, temperature=0.0)
    assert run.text.replace(" ", "").startswith('{"name":"')


def test_a_large_grammar_is_built_in_a_child_process_first(model_path: Path) -> None:
    grammar = "root ::= " + " ".join("[a-z]{0,1000}" for _ in range(30))
    assert _grammar.expanded_size(grammar) > _grammar.CHILD_CHECK_ABOVE
    run = lmbench.generate("Once", model=model_path, grammar=grammar, max_tokens=4, temperature=0.0)
    assert run.finish_reason in ("stop", "length") and run.text.isalpha()
    assert _grammar._verified, "the verdict is remembered"


def test_a_grammar_that_crashes_llama_cpp_crashes_only_the_child(model_path: Path) -> None:
    crashing = "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000  # SIGSEGV in llama.cpp's parser
    problem = _grammar._compile_in_child(crashing, model_path)
    assert problem is not None and "crashed building the grammar (signal 11)" in problem
    assert _grammar._compile_in_child('root ::= "a" | "b"', model_path) is None
    assert "does not parse" in (_grammar._compile_in_child("root ::= (", model_path) or "")
