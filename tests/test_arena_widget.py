"""The arena and rating widgets on a real sweep and store: blind order, votes stored at once, resume, labels."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import pytest

import lmbench
from lmbench.store._store import Store
from lmbench.ui._arena import RATE_PAGE, Arena


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pd.DataFrame]:
    store = Store(tmp_path_factory.mktemp("arena") / "runs.db")
    lmbench.sweep(
        {"dragon": "The little dragon", "cat": "Once upon a time, a cat"},
        grid={"temperature": [0.0, 0.8, 1.6]},
        seeds=2,
        max_tokens=10,
        store=store,
        progress=False,
    )
    return store, store.runs()


def _left_and_right(widget: Arena) -> tuple[str, str]:
    assert widget.pair is not None
    ids = (widget.pair.run_a, widget.pair.run_b)
    return ids if widget.shown == "ab" else (ids[1], ids[0])


def test_votes_follow_the_screen_order_and_are_stored_at_once(swept: tuple[Store, pd.DataFrame]) -> None:
    store, df = swept
    widget = lmbench.arena(df, by="temperature", rater="left-lover", store=store, seed=3, budget=8)
    assert "1 of 8 pairs" in widget.progress.value
    orders = set()
    for n in range(6):
        left, right = _left_and_right(widget)
        orders.add(widget.shown)
        texts = df.set_index("id").text
        assert html.escape(texts[left]) in widget.left.value and html.escape(texts[right]) in widget.right.value
        assert df.set_index("id").prompt[left] == df.set_index("id").prompt[right], "the same item"
        if n == 2:
            widget.note.value = "A rambles less"
        widget.buttons["left"].click()
        vote = store.ratings(rater="left-lover").iloc[-1]
        preferred = vote.run_a if vote.verdict == "a" else vote.run_b
        assert preferred == left, "the run shown on the left won"
        assert vote.shown == ("ab" if vote.run_a == left else "ba")
        assert f"{n + 2} of 8 pairs" in widget.progress.value
    assert orders == {"ab", "ba"}, "the screen order is random"
    assert store.ratings(rater="left-lover").note.dropna().tolist() == ["A rambles less"]
    assert widget.note.value == "", "the note box empties after a vote"

    again = Arena(df, "temperature", rater="left-lover", store=store, budget=8)  # after a kernel restart
    assert "7 of 8 pairs" in again.progress.value, "the arena resumes where it stopped"
    again.buttons["tie"].click()
    again.buttons["skip"].click()
    assert "Done" in again.progress.value and all(b.disabled for b in again.buttons.values())
    assert "lmbench-arena-ranking" in again.message.value
    assert store.ratings(rater="left-lover").verdict.tolist()[-2:] == ["tie", "skip"]
    table = lmbench.arena_scores(df, by="temperature", store=store)
    assert sorted(table.temperature) == [0.0, 0.8, 1.6] and table.attrs["votes"] == 7, "the skip does not count"


def test_a_person_who_prefers_cold_outputs_ranks_them_first(swept: tuple[Store, pd.DataFrame]) -> None:
    store, df = swept
    temperature = df.set_index("id").temperature
    widget = lmbench.arena(df, by="temperature", rater="cold", store=store, seed=1, budget=12)
    while widget.pair is not None:
        left, right = _left_and_right(widget)
        widget.buttons["left" if temperature[left] < temperature[right] else "right"].click()
    scores = widget.scores()
    assert scores is not None and scores.temperature.tolist() == [0.0, 0.8, 1.6]
    assert lmbench.arena_scores(df, by="temperature", ratings=store.ratings(rater="cold")).temperature.tolist() == [
        0.0,
        0.8,
        1.6,
    ]


def test_arena_labels_in_spanish_and_bad_tables_refused(swept: tuple[Store, pd.DataFrame]) -> None:
    store, df = swept
    widget = lmbench.arena(df, by="temperature", store=store, lang="es", rater="es")
    assert widget.buttons["tie"].description == "Empate (3)" and widget.buttons["bad"].description == "Ambas malas (0)"
    assert "de" in widget.progress.value and "pares" in widget.progress.value
    assert widget.widget.layout.border.startswith("1px solid var(--jp-border-color2")
    with pytest.raises(lmbench.ParameterError, match="not a column"):
        lmbench.arena(df, by="colour", store=store)
    with pytest.raises(lmbench.ParameterError, match="pass a runs table"):
        lmbench.arena([1, 2], store=store)  # type: ignore[arg-type]


def test_the_rating_grid_stores_thumbs_and_scores_as_run_columns(swept: tuple[Store, pd.DataFrame]) -> None:
    store, df = swept
    grid = lmbench.rate(df, rater="grid", store=store)
    assert len(grid.grid.children) == min(RATE_PAGE, len(df))
    first, second = grid.grid.children[:2]
    thumb, score = first.children[1].children
    thumb.value = "up"
    score.value = "4"
    second.children[1].children[0].value = "down"
    table = store.runs().set_index("id")
    ids = df.id.tolist()
    assert table.loc[ids[0], "rating_up"] == 1.0 and table.loc[ids[0], "rating_score"] == 4.0
    assert table.loc[ids[1], "rating_up"] == 0.0
    reopened = lmbench.rate(df, rater="grid", store=store)
    thumb, score = reopened.grid.children[0].children[1].children
    assert (thumb.value, score.value) == ("up", "4"), "the grid shows the rater's latest rating"
    assert reopened.previous.disabled


def test_the_rating_grid_pages_through_many_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    runs = [lmbench.generate("Once", seed=s, max_tokens=2, store=store) for s in range(RATE_PAGE + 2)]
    grid = lmbench.rate(store.runs(), store=store, lang="es")
    assert grid.following.description == "Siguiente" and "1 / 2" in grid.where.value
    grid.following.click()
    assert len(grid.grid.children) == 2 and grid.following.disabled
    assert runs[-1].id[:8] in grid.grid.children[-1].children[0].value


def test_thumbs_in_the_panel_history_rate_the_selected_run(model_path: Path) -> None:
    panel = lmbench.panel(str(model_path), lang="es")
    panel.prompt.value = "The dog"
    panel.form.sliders["max_tokens"].value = 4
    panel.generate_button.click()
    panel.wait(120)
    assert panel.last_run is not None and panel.error.value == ""
    assert panel.history.thumbs["up"].disabled, "nothing selected yet"
    panel.history.runs.value = panel.last_run.id
    panel.history.thumbs["up"].click()
    assert "buena" in panel.history.rated.value
    votes = lmbench.ratings("single")
    assert votes[["run_a", "verdict"]].values.tolist() == [[panel.last_run.id, "up"]]
    assert lmbench.runs().set_index("id").loc[panel.last_run.id, "rating_up"] == 1.0
