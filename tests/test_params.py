"""Parameter validation: one definition, clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmbench
from lmbench.params import MAX_SEED, PARAM_NAMES, param_specs, validate_params

pytestmark = pytest.mark.no_test_model  # pure checks (the one that generates asks for the model fixture)


def test_defaults_are_the_guides_values() -> None:
    params = validate_params()
    assert (params.max_tokens, params.temperature, params.top_p) == (100, 0.7, 0.9)
    assert params.seed is None and params.stop == ()


def test_specs_drive_ranges_and_descriptions() -> None:
    specs = {s.name: s for s in param_specs()}
    assert set(specs) == set(PARAM_NAMES)
    assert specs["top_p"].range_text() == "0 < top_p <= 1"
    assert specs["temperature"].range_text() == "0 <= temperature"
    assert all(s.description for s in specs.values())
    assert specs["temperature"].ui_max == 2.0


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(lmbench.ParameterError) as info:
        validate_params(tempreature=0.5)
    assert "tempreature" in str(info.value)
    assert "temperature" in str(info.value) and "top_p" in str(info.value)


def test_stop_accepts_a_string() -> None:
    assert validate_params(stop="\n").stop == ("\n",)
    with pytest.raises(lmbench.ParameterError, match="stop"):
        validate_params(stop=[""])


BAD = {
    "temperature": st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    "top_p": st.one_of(
        st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
        st.floats(min_value=1.0 + 1e-9, allow_nan=False, allow_infinity=False),
    ),
    "max_tokens": st.integers(max_value=0),
    "top_k": st.integers(max_value=-1),
    "min_p": st.one_of(
        st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
        st.floats(min_value=1.0 + 1e-9, allow_nan=False, allow_infinity=False),
    ),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)),
}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(BAD)).flatmap(lambda name: st.tuples(st.just(name), BAD[name])))
def test_out_of_range_values_name_parameter_value_and_range(case: tuple[str, float]) -> None:
    name, value = case
    with pytest.raises(lmbench.ParameterError) as info:
        validate_params(**{name: value})
    message = str(info.value)
    assert info.value.name == name
    assert name in message and "allowed" in message


@settings(max_examples=150, deadline=None)
@given(
    temperature=st.floats(min_value=0, max_value=5),
    top_p=st.floats(min_value=1e-6, max_value=1),
    max_tokens=st.integers(min_value=1, max_value=4096),
    top_k=st.integers(min_value=0, max_value=1000),
    min_p=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=MAX_SEED),
)
def test_in_range_values_are_accepted(**values: float) -> None:
    params = validate_params(**values)
    for name, value in values.items():
        assert math.isclose(getattr(params, name), value)


def test_invalid_generate_records_nothing(model_path) -> None:
    with pytest.raises(lmbench.ParameterError, match="temperature"):
        lmbench.generate("Once", temperature=-1)
    with pytest.raises(lmbench.ParameterError, match="valid parameters"):
        lmbench.generate("Once", temp=0.5)
    assert lmbench.runs().empty
