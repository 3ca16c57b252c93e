"""Paired comparisons, the leaderboard's ties with the best, regressions and ``lmbench compare-runs``.

The statistical checks (false-positive rate near alpha, power) run on synthetic tables: hundreds
of repetitions in a second. The real engine shows temperature 0.2 against 1.2 on the test model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmbench
from lmbench import cli
from lmbench.significance import holm, paired, regressions

ITEMS, SEEDS = 20, 3


def _table(rng: np.random.Generator, shifts: dict[object, float], *, binary: bool = False) -> pd.DataFrame:
    """Runs of each setting on the same 20 items x 3 seeds: the item's difficulty, noise, the setting's shift."""
    difficulty = np.repeat(rng.normal(0, 1, ITEMS), SEEDS)
    item = np.repeat([f"i{k}" for k in range(ITEMS)], SEEDS)
    seed = np.tile(np.arange(SEEDS), ITEMS)
    parts = []
    for setting, shift in shifts.items():
        value = difficulty + shift + rng.normal(0, 1, ITEMS * SEEDS)
        text = [f"{setting}-{i[1:]}-{s}" for i, s in zip(item, seed, strict=True)]
        parts.append(
            pd.DataFrame(
                {
                    "temperature": setting,
                    "item": item,
                    "seed": seed,
                    "score": (value > 0).astype(float) if binary else value,
                    "text": text,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.mark.no_test_model
@pytest.mark.parametrize(("test", "binary"), [("wilcoxon", False), ("permutation", False), ("mcnemar", True)])
def test_identical_settings_are_rejected_at_about_alpha(test: str, binary: bool) -> None:
    rng = np.random.default_rng(2024)
    repetitions = 40 if test == "permutation" else 250
    rejected = [
        paired(
            _table(rng, {0.7: 0.0, 0.8: 0.0}, binary=binary), "score", by="temperature", a=0.7, b=0.8, test=test, seed=k
        ).significant
        for k in range(repetitions)
    ]
    rate = float(np.mean(rejected))
    if binary:  # the exact test is conservative
        assert rate <= 0.07
    else:
        assert 0.01 <= rate <= 0.10, rate


@pytest.mark.no_test_model
def test_a_real_difference_is_found_with_its_interval_and_counts() -> None:
    frame = _table(np.random.default_rng(1), {0.2: 0.8, 1.2: 0.0})
    result = paired(frame, "score", by="temperature", a=0.2, b=1.2)
    assert result.significant and result.test == "wilcoxon" and result.p_value < 1e-4
    assert result.n_pairs == ITEMS * SEEDS and result.on == ("item", "seed")
    assert result.low < result.difference < result.high and result.low > 0
    assert result.wins + result.ties + result.losses == result.n_pairs and result.wins > result.losses
    assert result.effect == "cohen_dz" and result.effect_size > 0.3
    assert result.mean_a - result.mean_b == pytest.approx(result.difference)
    assert "significant" in result._repr_html_() and "item, seed" in result._repr_html_()
    flipped = paired(frame, "score", by="temperature", a=1.2, b=0.2)
    assert flipped.difference == pytest.approx(-result.difference) and flipped.wins == result.losses
    lower_better = paired(frame, "score", by="temperature", a=0.2, b=1.2, higher_is_better=False)
    assert lower_better.wins == result.losses


@pytest.mark.no_test_model
def test_pass_rates_use_mcnemar_on_the_discordant_pairs() -> None:
    frame = _table(np.random.default_rng(3), {"a": 1.5, "b": -1.5}, binary=True).rename(columns={"score": "pass"})
    result = paired(frame, "pass", by="temperature", a="a", b="b")
    assert result.test == "mcnemar" and result.significant and result.effect == "odds_ratio"
    merged = frame[frame.temperature == "a"].merge(frame[frame.temperature == "b"], on=["item", "seed"])
    assert result.wins == int(((merged.pass_x == 1) & (merged.pass_y == 0)).sum())
    assert result.losses == int(((merged.pass_x == 0) & (merged.pass_y == 1)).sum())


@pytest.mark.no_test_model
def test_bad_input_is_refused_by_name() -> None:
    frame = _table(np.random.default_rng(0), {0.2: 0.0, 1.2: 0.0})
    with pytest.raises(lmbench.ParameterError, match="no column 'rougeL'"):
        paired(frame, "rougeL", by="temperature", a=0.2, b=1.2)
    with pytest.raises(lmbench.ParameterError, match=r"no runs with temperature=0\.5; its values: 0\.2, 1\.2"):
        paired(frame, "score", by="temperature", a=0.5, b=1.2)
    with pytest.raises(lmbench.ParameterError, match="more than one run for the same item"):
        paired(frame, "score", by="temperature", a=0.2, b=1.2, on=["item"])
    with pytest.raises(lmbench.ParameterError, match="test must be one of"):
        paired(frame, "score", by="temperature", a=0.2, b=1.2, test="ttest")  # type: ignore[arg-type]
    with pytest.raises(lmbench.ParameterError, match="alpha"):
        paired(frame, "score", by="temperature", a=0.2, b=1.2, alpha=5)
    with pytest.raises(lmbench.ParameterError, match="1/0 pass-fail"):
        paired(frame, "score", by="temperature", a=0.2, b=1.2, test="mcnemar")


@pytest.mark.no_test_model
def test_holm_adjusts_step_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)


@pytest.mark.no_test_model
def test_leaderboard_marks_settings_tied_with_the_best() -> None:
    frame = _table(np.random.default_rng(5), {"best": 1.0, "same": 1.0, "worse": -1.0}).rename(
        columns={"temperature": "setting", "score": "judge"}
    )
    table = lmbench.leaderboard(frame, "setting", metrics=["judge"])
    tied = dict(zip(table.setting, table["tied with best"], strict=True))
    assert not tied["worse"] and tied[table.setting[0]]
    assert tied["same" if table.setting[0] == "best" else "best"]
    p = table["judge p vs best (Holm)"]
    assert np.isnan(p[0]) and p[1:].notna().all()
    assert "Holm" in table.attrs["note"] and "Wilcoxon" in table.attrs["note"]


@pytest.mark.no_test_model
def test_regressions_rank_items_by_change_with_both_texts() -> None:
    rng = np.random.default_rng(9)
    before = _table(rng, {"v1": 0.0}).drop(columns="temperature")
    after = before.assign(score=before.score - np.where(before["item"] == "i3", 5.0, 0.0), text=before.text + "!")
    after.loc[after["item"] == "i7", "score"] += 2.0
    found = regressions(before, after, "score")
    assert list(found.worse["item"].unique()) == ["i3"] and list(found.better["item"].unique()) == ["i7"]
    assert found.items["change"].iloc[0] == pytest.approx(-5.0) and found.items["verdict"].iloc[0] == "worse"
    assert found.items["text_after"].iloc[0] == found.items["text_before"].iloc[0] + "!"
    assert found.failed("any") and not found.failed("any", min_change=6.0) and not found.failed("none")
    assert found.summary.n_pairs == ITEMS * SEEDS
    shown = found._repr_html_()
    assert shown.index("v1-3-0") < shown.index("v1-7-0") and "1 worse" not in shown  # 3 seeds of i3 got worse
    assert f"{len(found.worse)} worse, {len(found.better)} better" in shown
    worse_everywhere = before.assign(score=before.score - 1.0)
    assert regressions(before, worse_everywhere, "score").failed("significant")
    assert not regressions(before, before, "score").failed("significant")
    with pytest.raises(lmbench.ParameterError, match="fail_on"):
        found.failed("sometimes")


TEMPLATE = "Once upon a time, {name} went to the"
NAMES = [
    "Tom",
    "Lily",
    "Ben",
    "Sue",
    "Max",
    "Anna",
    "Tim",
    "Mia",
    "Sam",
    "Zoe",
    "Leo",
    "Ivy",
    "Dan",
    "Amy",
    "Jack",
    "Emma",
    "Finn",
    "Rose",
    "Jake",
    "Lucy",
]


def _sweep(experiment: str, temperatures: list[float]) -> pd.DataFrame:
    return lmbench.sweep(
        TEMPLATE,
        grid={"temperature": temperatures},
        seeds=SEEDS,
        data=[{"name": n} for n in NAMES],
        experiment=experiment,
        max_tokens=12,
        progress=False,
    )


def test_temperature_changes_mean_logprob_and_identical_settings_do_not() -> None:
    frame = _sweep("temps", [0.2, 1.2])
    result = lmbench.paired(frame, "mean_logprob", by="temperature", a=0.2, b=1.2)
    assert result.n_pairs == len(NAMES) * SEEDS and result.on == ("model", "prompt_name", "item", "seed")
    assert result.significant and result.difference > 0 and result.wins > result.losses
    again = _sweep("again", [0.2])
    both = pd.concat([frame[frame.temperature == 0.2], again])
    same = lmbench.paired(both, "mean_logprob", by="experiment", a="temps", b="again")
    assert not same.significant and same.ties > same.n_pairs // 2  # same settings and seeds: (mostly) the same texts
    stored = lmbench.runs("temps")  # the store's table: items and seeds come from the sweep coordinates
    assert lmbench.paired(stored, "mean_logprob", by="temperature", a=0.2, b=1.2).p_value == pytest.approx(
        result.p_value
    )


def test_compare_runs_fails_a_ci_job_on_a_regression(capsys: pytest.CaptureFixture[str]) -> None:
    _sweep("before", [0.2])
    _sweep("after", [1.2])
    assert cli.main(["compare-runs", "before", "before", "--metric", "mean_logprob"]) == 0
    capsys.readouterr()
    assert cli.main(["compare-runs", "before", "after", "--metric", "mean_logprob", "--fail-on", "significant"]) == 1
    out = capsys.readouterr()
    assert "worse" in out.out and "REGRESSION" in out.err
    assert cli.main(["compare-runs", "before", "after", "--metric", "mean_logprob", "--fail-on", "none"]) == 0
    assert cli.main(["compare-runs", "before", "nothing", "--metric", "mean_logprob"]) == 1
    assert "no runs in experiment or sweep 'nothing'" in capsys.readouterr().err


def test_runs_from_the_store_pair_on_every_grid_parameter() -> None:
    lmbench.sweep(
        TEMPLATE,
        grid={"temperature": [0.2, 1.2], "top_k": [20, 40]},
        seeds=2,
        experiment="grid",
        data=[{"name": n} for n in NAMES[:6]],
        max_tokens=6,
        progress=False,
    )
    stored = lmbench.runs("grid")
    result = lmbench.paired(stored, "mean_logprob", by="temperature", a=0.2, b=1.2)
    assert result.on == ("model", "prompt_name", "item", "top_k", "seed") and result.n_pairs == 6 * 2 * 2
    same = lmbench.regressions("grid", "grid", "mean_logprob")
    assert same.summary.n_pairs == len(stored) and not same.failed("any") and len(same.worse) == 0
