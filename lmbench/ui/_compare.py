"""The Compare tab: one prompt under several values of a parameter, side by side."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w

from ..compare import compare
from ..errors import ParameterError
from ..generation import Job, Recorder, generate_many, random_seed
from ..params import validate_params
from ..run import Labels, Run
from ._parts import Host, button, row


class CompareTab:
    """The prompt at 2 to 4 values of one parameter, decoded together with one seed, side by side."""

    def __init__(self, host: Host, numeric: list[str], kind: Callable[[str], type]) -> None:
        self.host, self._kind = host, kind
        t = host.t
        self.param = w.Dropdown(options=numeric, value="temperature", description=t("parameter"))
        self.values = w.Text("0.2, 0.7, 1.2", description=t("values"), tooltip="2 to 4 values, comma-separated")
        self.button = button(t("Compare"), "info", "Run the prompt at each value", "lmbench-compare")
        self.button.on_click(lambda _: host.start(self.job))
        self.output = w.HTML()
        self.output.add_class("lmbench-compare-output")
        self.box = w.VBox([row([self.param, self.values, self.button]), self.output])

    def job(self) -> None:
        name = self.param.value
        try:
            values = [self._kind(name)(v) for v in self.values.value.split(",") if v.strip()]
        except ValueError:
            raise ParameterError(
                f"compare values must be numbers separated by commas, not {self.values.value!r}",
                name=name,
                value=self.values.value,
            ) from None
        if not 2 <= len(values) <= 4:
            raise ParameterError(f"compare needs 2 to 4 values of {name}, got {len(values)}", name=name, value=values)
        params = self.host.values()
        if params["seed"] is None:  # one seed for all, so only the compared parameter differs
            params["seed"] = random_seed()
        engine = self.host.load()
        self.host.status(f"comparing {len(values)} values of {name}, decoded together…")
        labels = Labels(self.host.experiment_name(), source="panel")
        turn = self.host.turn(engine)
        jobs = [Job.of(turn, validate_params({**params, name: value}), labels) for value in values]
        made: list[str] = []

        def finished(run: Run) -> None:
            made.append(run.id)
            self.host.made(run)

        recorder = Recorder(self.host.store, on_run=finished)
        try:
            generate_many(engine, jobs, recorder, cancel=self.host.cancel, slots=len(jobs))
        finally:  # what finished is shown, also when the comparison was stopped
            if made:
                self.output.value = compare(made, by=name, store=self.host.store).to_html()
