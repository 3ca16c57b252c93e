"""Human judgement in the notebook: the blind pairwise arena (``lmbench.arena``) and the rating grid
(``lmbench.rate``).

The arena shows two outputs of the same item and seed side by side, in random order, with the
prompt; keys 1 (left better), 2 (right better), 3 (tie), 0 (both bad) and s (skip) or the buttons
vote, and each vote is written to the store at once, so a kernel restart loses none: the same
``arena(df, by)`` again resumes where it stopped. Which pair comes next is ``Pairing``'s choice
(``lmbench.preferences``). The grid rates single runs with a thumb and a 1-5 score.
"""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from ..errors import LmbenchError, ParameterError
from ..preferences import DEFAULT_PRECISION, Pair, Pairing
from ..run import BORDER, MUTED
from ..store._ratings import default_rater
from ..store._store import Store, get_store
from . import _html as view
from ._labels import language, translator
from ._shortcuts import Shortcuts

# The grid shows this many runs at once (a page), so a sweep of thousands stays quick to draw.
RATE_PAGE = 12
CARD = (
    "white-space:pre-wrap;word-wrap:break-word;font-family:var(--jp-code-font-family,monospace);"
    f"padding:8px;{BORDER};border-radius:6px;background:var(--jp-layout-color1,#fff);"
    "color:var(--jp-ui-font-color1,#222);min-height:6em;max-height:28em;overflow:auto"
)
# Screen verdicts (left/right) and what they mean for the stored pair, by the order it was shown in.
KEYS = (("1", "left"), ("2", "right"), ("3", "tie"), ("0", "bad"), ("s", "skip"))


def _box(title: str, text: str, tall: bool = True) -> str:
    return (
        f"<div style='{MUTED};font-size:85%;margin-bottom:2px'>{html.escape(title)}</div>"
        f"<div style='{CARD}{'' if tall else ';min-height:0'}'>{html.escape(text)}</div>"
    )


def _button(text: str, tooltip: str, css: str, width: str = "11em") -> w.Button:
    made = w.Button(description=text, tooltip=tooltip, layout=w.Layout(width=width))
    made.add_class(css)
    return made


def _checked_runs(df: Any, needed: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ParameterError(f"pass a runs table (a DataFrame from lmbench.runs() or a sweep), not {type(df).__name__}")
    missing = [c for c in needed if c not in df]
    if missing:
        raise ParameterError(f"the table has no {missing[0]!r} column: pass a runs table", name="df")
    return df


class Arena:
    """The blind pairwise arena over the runs ``df``, comparing settings of ``by``; display it in a notebook."""

    def __init__(
        self,
        df: pd.DataFrame,
        by: str = "temperature",
        *,
        rater: str | None = None,
        budget: int | None = None,
        precision: float = DEFAULT_PRECISION,
        store: str | os.PathLike[str] | Store | None = None,
        lang: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.df = _checked_runs(df, ("id", "prompt", "text", "seed")).set_index("id", drop=False)
        self.t = t = translator(language(lang))
        self.store = get_store(store)
        self.rater = default_rater() if rater is None else rater
        self.pairing = Pairing(self.df, by, budget=budget, precision=precision, seed=seed)
        self.by = by
        self._rng = np.random.default_rng(seed)
        self.pair: Pair | None = None
        self.shown = "ab"

        self.progress = w.HTML()
        self.progress.add_class("lmbench-arena-progress")
        self.prompt = w.HTML(layout=w.Layout(width="100%"))
        self.prompt.add_class("lmbench-arena-prompt")
        self.left = w.HTML(layout=w.Layout(width="50%"))
        self.left.add_class("lmbench-arena-left")
        self.right = w.HTML(layout=w.Layout(width="50%"))
        self.right.add_class("lmbench-arena-right")
        labels = {
            "left": t("A is better"),
            "right": t("B is better"),
            "tie": t("Tie"),
            "bad": t("Both bad"),
            "skip": t("Skip"),
        }
        self.buttons = {}
        for key, choice in KEYS:
            made = _button(f"{labels[choice]} ({key})", labels[choice], f"lmbench-key-{key}")
            made.on_click(lambda _, choice=choice: self.vote(choice))
            self.buttons[choice] = made
        self.buttons["left"].button_style = self.buttons["right"].button_style = "primary"
        self.note = w.Text(placeholder=t("note (optional)"), layout=w.Layout(width="100%"))
        self.note.add_class("lmbench-arena-note")
        self.message = w.HTML()
        self.message.add_class("lmbench-arena-message")
        self.widget = w.VBox(
            [
                self.progress,
                self.prompt,
                w.HBox([self.left, self.right], layout=w.Layout(width="100%", grid_gap="8px")),
                w.HBox(list(self.buttons.values()), layout=w.Layout(flex_flow="row wrap")),
                self.note,
                self.message,
                Shortcuts(),
            ],
            layout=w.Layout(border="1px solid var(--jp-border-color2, #ddd)", padding="8px", width="100%"),
        )
        self.widget.add_class("lmbench-arena")
        self.widget.add_class("lmbench-keys-first")
        self._next()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _votes(self) -> pd.DataFrame:
        return self.store.ratings("pairwise", rater=self.rater)

    def vote(self, choice: str) -> None:
        """Record the person's verdict on the pair shown (``left``, ``right``, ``tie``, ``bad``, ``skip``)."""
        if self.pair is None:
            return
        if choice not in dict((c, k) for k, c in KEYS):
            raise ParameterError(f"choice must be one of left, right, tie, bad, skip, not {choice!r}", name="choice")
        left_is_a = self.shown == "ab"
        verdict = {"left": "a" if left_is_a else "b", "right": "b" if left_is_a else "a"}.get(choice, choice)
        try:
            self.store.add_rating(
                self.pair.run_a,
                self.pair.run_b,
                verdict=verdict,
                shown=self.shown,
                rater=self.rater,
                note=str(self.note.value).strip() or None,
                session=self.pairing.session,
            )
        except LmbenchError as exc:
            self.message.value = view.error(str(exc))
            return
        self.note.value = ""
        self.message.value = ""
        self._next()

    def _next(self) -> None:
        votes = self._votes()
        done = self.pairing.progress(votes)
        self.pair = self.pairing.next(votes)
        total = self.pairing.budget
        if self.pair is None:
            self.progress.value = (
                f"<b>{html.escape(self.t('Done'))}</b> · {done} {self.t('of')} {total} {self.t('pairs')}"
            )
            self.prompt.value = ""
            self.left.value = self.right.value = ""
            for made in self.buttons.values():
                made.disabled = True
            table = self.scores()
            self.message.value = "" if table is None else _ranking(table, self.by, self.t)
            return
        self.shown = "ab" if self._rng.random() < 0.5 else "ba"
        left, right = (self.pair.run_a, self.pair.run_b)[:: 1 if self.shown == "ab" else -1]
        self.progress.value = (
            f"<span data-lm-pair='{done}-{left[:8]}-{right[:8]}'>{done + 1} {self.t('of')} {total} "
            f"{self.t('pairs')}</span> <span style='{MUTED}'>· {html.escape(self.t('keys'))}: 1 A · 2 B · "
            f"3 {html.escape(self.t('Tie'))} · 0 {html.escape(self.t('Both bad'))} · s {html.escape(self.t('Skip'))}"
            "</span>"
        )
        self.prompt.value = _box(self.t("Prompt"), str(self.df.at[left, "prompt"]), tall=False)
        self.left.value = _box("A", str(self.df.at[left, "text"]))
        self.right.value = _box("B", str(self.df.at[right, "text"]))

    def scores(self, rounds: int = 200) -> pd.DataFrame | None:
        """This rater's ranking so far (``arena_scores`` of this session's votes), or None before any vote."""
        table = self.pairing.scores(self._votes(), rounds=rounds)
        return None if table is None else table.rename(columns={"setting": self.by})


def _ranking(table: pd.DataFrame, by: str, t: Any) -> str:
    rows = "".join(
        f"<tr><td>{rank}</td><td>{html.escape(str(setting))}</td><td>{score:+.2f}</td>"
        f"<td>{low:+.2f} … {high:+.2f}</td><td>{win_rate:.0%}</td><td>{n}</td></tr>"
        for rank, setting, score, low, high, win_rate, n in zip(
            table["rank"],
            table[by],
            table["score"],
            table["low"],
            table["high"],
            table["win_rate"],
            table["n"],
            strict=True,
        )
    )
    head = "".join(
        f"<th style='text-align:left;padding-right:1em'>{html.escape(t(h))}</th>"
        for h in ("rank", by, "score", "95% interval", "win rate", "votes")
    )
    return f"<table class='lmbench-arena-ranking'><tr>{head}</tr>{rows}</table>"


def arena(
    df: pd.DataFrame,
    by: str = "temperature",
    *,
    rater: str | None = None,
    budget: int | None = None,
    precision: float = DEFAULT_PRECISION,
    store: str | os.PathLike[str] | Store | None = None,
    lang: str | None = None,
    seed: int | None = None,
) -> Arena:
    """A blind pairwise arena over the runs ``df`` (a sweep's table or ``lmbench.runs()``), comparing ``by``.

    Pairs are two runs of the same item and seed with different ``by``, shown in random order;
    ``budget`` caps the votes (default: ten per pair of settings, at most every pair of runs once),
    and the arena also stops once every setting's 95% interval is narrower than ``precision``.
    Votes go to ``store`` under ``rater`` (default ``$LMBENCH_RATER`` or the login name) at once;
    ``lmbench.arena_scores(df, by)`` ranks the settings from them.
    """
    return Arena(df, by, rater=rater, budget=budget, precision=precision, store=store, lang=lang, seed=seed)


class RateGrid:
    """Single-run ratings: a card per run with thumbs up/down and a 1-5 score, a page at a time."""

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        rater: str | None = None,
        store: str | os.PathLike[str] | Store | None = None,
        lang: str | None = None,
    ) -> None:
        self.df = _checked_runs(df, ("id", "prompt", "text")).reset_index(drop=True)
        self.t = t = translator(language(lang))
        self.store = get_store(store)
        self.rater = default_rater() if rater is None else rater
        self.page = 0
        self.grid = w.GridBox(
            layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(22em, 1fr))", width="100%")
        )
        self.message = w.HTML()
        self.previous = _button(t("Previous"), t("Previous"), "lmbench-rate-previous", "8em")
        self.previous.on_click(lambda _: self.show(self.page - 1))
        self.following = _button(t("Next"), t("Next"), "lmbench-rate-next", "8em")
        self.following.on_click(lambda _: self.show(self.page + 1))
        self.where = w.HTML()
        self.widget = w.VBox(
            [w.HBox([self.previous, self.following, self.where]), self.grid, self.message],
            layout=w.Layout(border="1px solid var(--jp-border-color2, #ddd)", padding="8px", width="100%"),
        )
        self.widget.add_class("lmbench-rate")
        self.show(0)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show(self, page: int) -> None:
        """Show one page of runs with this rater's latest rating of each."""
        pages = max(1, -(-len(self.df) // RATE_PAGE))
        self.page = min(max(page, 0), pages - 1)
        part = self.df.iloc[self.page * RATE_PAGE : (self.page + 1) * RATE_PAGE]
        mine = self.store.ratings("single", rater=self.rater)
        latest = mine.groupby("run_a").last() if len(mine) else pd.DataFrame(columns=["verdict", "score"])
        self.grid.children = [self._card(run, latest) for _, run in part.iterrows()]
        self.where.value = f"<span style='{MUTED}'>{self.page + 1} / {pages} · {len(self.df)} {self.t('runs')}</span>"
        self.previous.disabled = self.page == 0
        self.following.disabled = self.page == pages - 1

    def _card(self, run: pd.Series, latest: pd.DataFrame) -> w.VBox:
        run_id = str(run["id"])
        known = latest.loc[run_id] if run_id in latest.index else None
        thumb = w.ToggleButtons(
            options=[(self.t("good"), "up"), (self.t("bad"), "down")],
            value=None if known is None or pd.isna(known["verdict"]) else known["verdict"],
            icons=["thumbs-up", "thumbs-down"],
            style={"button_width": "6em"},
        )
        thumb.add_class("lmbench-rate-thumb")
        score = w.ToggleButtons(
            options=[str(k) for k in range(1, 6)],
            value=None if known is None or pd.isna(known["score"]) else str(int(known["score"])),
            style={"button_width": "2.2em"},
        )
        score.add_class("lmbench-rate-score")

        def save(_: Any) -> None:
            try:
                self.store.add_rating(
                    run_id,
                    verdict=thumb.value,
                    score=None if score.value is None else int(score.value),
                    rater=self.rater,
                )
            except LmbenchError as exc:
                self.message.value = view.error(str(exc))

        thumb.observe(save, names="value")
        score.observe(save, names="value")
        text = w.HTML(_box(f"{run_id[:8]} · {str(run['prompt'])[:60]}", str(run["text"])))
        card = w.VBox([text, w.HBox([thumb, score], layout=w.Layout(flex_flow="row wrap"))])
        card.add_class("lmbench-rate-card")
        return card


def rate(
    df: pd.DataFrame,
    *,
    rater: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    lang: str | None = None,
) -> RateGrid:
    """A grid of the runs ``df`` to rate one by one: thumbs up/down and a 1-5 score, stored at once.

    The ratings show in ``lmbench.runs()`` as ``rating_up`` (share of thumbs up) and ``rating_score``
    (mean score), usable in ``leaderboard`` and the plots like any metric.
    """
    return RateGrid(df, rater=rater, store=store, lang=lang)
