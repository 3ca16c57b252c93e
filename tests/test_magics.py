"""Magics through a real IPython InteractiveShell against the real test model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import lmbench


@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lmbench")
    yield shell
    shell.run_line_magic("unload_ext", "lmbench")


def test_load_ext_loads_no_model(ip) -> None:
    lmbench.unload()
    ip.run_line_magic("reload_ext", "lmbench")
    assert "lmbench" in ip.magics_manager.magics["line"] and "lmbench" in ip.magics_manager.magics["cell"]
    assert lmbench.loaded() == []


def test_unload_ext_removes_the_magics(ip) -> None:
    ip.run_line_magic("unload_ext", "lmbench")
    assert "lmbench" not in ip.magics_manager.magics["line"]
    assert "lmbench" not in ip.magics_manager.magics["cell"]
    ip.run_line_magic("load_ext", "lmbench")


def test_cell_magic_generates_streams_and_records(ip, capsys, model_path: Path) -> None:
    ip.run_line_magic("lmbench", f"model {model_path} --n-ctx 512")
    run = ip.run_cell_magic("lmbench", "-t 0 -n 12 -e magic", "Once upon a time")
    assert isinstance(run, lmbench.Run)
    assert run.temperature == 0 and run.max_tokens == 12 and run.experiment == "magic" and run.source == "magic"
    assert run.n_ctx == 512
    assert run.text in capsys.readouterr().out
    assert list(lmbench.runs("magic").id) == [run.id]
    quiet = ip.run_cell_magic("lmbench", "--no-stream -s 5 -p 0.5 -k 3 --preset precise", "Lily")
    assert (quiet.seed, quiet.top_p, quiet.top_k, quiet.temperature) == (5, 0.5, 3, 0.2)


def test_runs_compare_presets_and_help(ip, capsys) -> None:
    a = ip.run_cell_magic("lmbench", "-t 0.2 -n 8 -s 1", "Once")
    b = ip.run_cell_magic("lmbench", "-t 1.2 -n 8 -s 1", "Once")
    table = ip.run_line_magic("lmbench", "runs --last 2")
    assert isinstance(table, pd.DataFrame) and list(table.id) == [a.id, b.id]
    comparison = ip.run_line_magic("lmbench", f"compare {a.id} {b.id} --by temperature")
    assert "temperature = 1.2" in comparison._repr_html_()
    assert "creative" in ip.run_line_magic("lmbench", "presets")
    ip.run_line_magic("lmbench", "help")
    assert "%%lmbench" in capsys.readouterr().out


def test_the_help_lists_every_command_and_every_parameter_from_their_definitions(ip, capsys) -> None:
    from lmbench.magics import COMMANDS
    from lmbench.params import param_specs

    ip.run_line_magic("lmbench", "help")
    shown = capsys.readouterr().out
    flat = " ".join(shown.split())
    for name, command in COMMANDS.items():
        assert f"%lmbench {name}" in shown and " ".join(command.summary.split()) in flat, name
        for action in command.parser().parser._actions if command.parser else []:
            assert all(flag in shown for flag in action.option_strings) and (action.metavar or "") in shown, name
    for spec in param_specs():
        flag = f"--{spec.name.replace('_', '-')}"
        assert flag in shown and " ".join(spec.description.split()) in flat, spec.name
    assert "--preset" in shown and "--no-stream" in shown and "--raw" in shown
    # An unknown command names the commands there are, from the same table.
    assert ip.run_line_magic("lmbench", "frobnicate") is None
    assert f"(commands: {', '.join(COMMANDS)})" in capsys.readouterr().err
    # Each command listed is one the magic runs.
    for name, command in COMMANDS.items():
        if command.parser is None and name != "panel":
            ip.run_line_magic("lmbench", name)
            assert "unknown command" not in capsys.readouterr().err


def test_bad_arguments_give_usage_not_traceback(ip, capsys) -> None:
    assert ip.run_cell_magic("lmbench", "-t notanumber", "Once") is None
    assert "usage" in capsys.readouterr().err.lower()
    assert ip.run_line_magic("lmbench", "frobnicate") is None
    assert "unknown command" in capsys.readouterr().err
    assert ip.run_line_magic("lmbench", "model") is None
    assert "usage" in capsys.readouterr().err.lower()
    assert ip.run_cell_magic("lmbench", "-t -3", "Once") is None
    assert "temperature" in capsys.readouterr().err
    assert ip.run_line_magic("lmbench", "model /no/such/model.gguf") is None
    assert "no such file" in capsys.readouterr().err.lower()
    assert lmbench.runs().empty


def test_cell_magic_takes_every_generation_parameter(ip, model_path: Path) -> None:
    ip.run_line_magic("lmbench", f"model {model_path}")
    run = ip.run_cell_magic("lmbench", "--min-p 0.2 --repeat-penalty 1.3 --stop zz -n 6 --no-stream", "Once")
    assert (run.min_p, run.repeat_penalty, run.stop, run.max_tokens) == (0.2, 1.3, ("zz",), 6)
