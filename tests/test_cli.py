"""The console commands as a user runs them: installed, composing their config, failing early and clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

# command -> a line of its config that --help must show
COMMANDS = {
    "vla-train": "seed: 7",
    "vla-eval": "mode: closed_loop",
    "vla-serve": "port: 8000",
    "vla-export": "ckpt: ???",
    "vla-study": "suite: ???",
    "vla-prep": "dataset: ???",
    "vla-sim": "episodes: 200",
    "vla-robot": "server: http://127.0.0.1:8000",
}
SCRIPTS = {
    "train.py": COMMANDS["vla-train"],
    "eval.py": COMMANDS["vla-eval"],
    "serve.py": COMMANDS["vla-serve"],
    "-m data_prep": COMMANDS["vla-prep"],
}


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", COMMANDS)
def test_console_command_help_shows_its_config(command, tmp_path):
    """Every console script is on PATH and ``--help`` prints its config without running anything."""
    path = shutil.which(command)
    assert path, f"{command} is not on PATH (pip install -e .)"
    result = run([path, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert COMMANDS[command] in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_repository_script_help_shows_its_config(script):
    """``python train.py`` / ``eval.py`` / ``serve.py`` / ``-m data_prep`` still run the same apps."""
    result = run([sys.executable, *script.split(), "--help"], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert SCRIPTS[script] in result.stdout


def test_sim_writes_rlds_with_a_hydra_run_dir_override_and_no_hydra_files(tmp_path):
    """The reported bug: ``hydra.run.dir=...`` used to fail; the RLDS dir and the cwd get no Hydra files."""
    pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "rlds"
    result = run(["vla-sim", f"out={out}", "episodes=2", "image_size=64", "suite=sim_reach", "n_objects=1",
                  "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "vla_sim" / "1.0.0" / "dataset_info.json").read_text())
    assert info["name"] == "vla_sim"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydra", "rlds"]  # no outputs/
    assert [p.name for p in out.iterdir()] == ["vla_sim"]  # no .hydra/, no log file
    assert list((tmp_path / "hydra").iterdir()) == []


def test_serve_rejects_a_bad_port_before_loading_anything(tmp_path):
    """``port=abc`` fails naming the key and the value: the error is not the (nonexistent) checkpoint's."""
    result = run(["vla-serve", "checkpoint=/nonexistent", "port=abc"], tmp_path, timeout=30)
    assert result.returncode != 0
    assert "port must be an integer in 1..65535, got 'abc'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/serve/<time>/


def test_export_of_a_missing_checkpoint_names_it_and_creates_nothing(tmp_path):
    missing, out = tmp_path / "missing.ckpt", tmp_path / "out"
    result = run(["vla-export", f"ckpt={missing}", f"out={out}"], tmp_path)
    assert result.returncode != 0
    assert f"Checkpoint not found: {missing}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no empty out/, no outputs/


def test_study_needs_exactly_one_of_server_and_checkpoint(tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"cases": [{"image": "table.png", "instruction": "pick up the screw"}]}))
    result = run(["vla-study", f"suite={suite}"], tmp_path)
    assert result.returncode != 0
    assert "exactly one of server=<url> or checkpoint=<exported dir>" in result.stderr
    assert list(tmp_path.iterdir()) == [suite]


def test_missing_sweep_plugin_stops_before_any_work_naming_the_extra(monkeypatch):
    """Hydra alone would only say it cannot find 'hydra/sweeper/optuna'."""
    import importlib.util

    from vla import cli

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name.startswith("hydra_plugins.") else real_find_spec(name, *args))
    cli.require_plugins(["seed=1", "model=tiny"])  # nothing chosen that needs a plugin
    with pytest.raises(SystemExit, match=r"hparams_search=optuna needs the Hydra plugin .*pip install -e '\.\[sweep\]'"):
        cli.require_plugins(["hparams_search=optuna"])
    with pytest.raises(SystemExit, match=r"launcher=submitit_slurm needs .*\[sweep\]"):
        cli.require_plugins(["launcher=submitit_slurm"])


def test_unknown_group_choice_lists_the_choices_even_for_numbers():
    """Hydra's own parser fails on `precision=64` (a number) with a traceback and no list of choices."""
    from vla import cli

    cli.require_known_choices(["precision=bf16-mixed", "model=tiny", "seed=64", "hydra.run.dir=x", "strategy=null",
                               "stage=lora,qlora"])
    with pytest.raises(SystemExit, match=r"precision=64: 64 is not a precision config; choose one of .*'32-true'"):
        cli.require_known_choices(["precision=64"])
    with pytest.raises(SystemExit, match=r"stage=lora,qlorra: qlorra is not a stage config"):
        cli.require_known_choices(["stage=lora,qlorra"])
    done = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "precision=64"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "choose one of" in done.stderr and "Traceback" not in done.stderr
