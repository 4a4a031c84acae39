"""Sweeps, cluster launchers and loggers work from the README install: `vla-train -m ...` end to end.

Each test runs train.py in a subprocess on the session's tiny sim data, as a user would type it
(the `sweep` and `loggers` extras of pyproject.toml provide the Hydra plugins and loggers).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

TINY_RUN = ("trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
            "data.datamodule.num_workers=0", "data.datamodule.batch_size=4", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "export=false", "checkpoint_every_n_steps=2")


def _train(tmp_path: Path, sim_data_root: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """train.py with the session's sim data (12 sim_all episodes: experiment=tiny-sim's demo settings) as its embedded data."""
    data = ("experiment=tiny-sim", f"data.root={sim_data_root.parent}", "data.embedded.episodes=12")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    mode = ["-m"] if multirun else []
    done = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *mode, *data, *TINY_RUN, *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_optuna_sweep_runs_two_trials_and_reports_the_best(tmp_path, sim_data_root):
    sweep = tmp_path / "optuna"
    done = _train(tmp_path, sim_data_root, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                  f"hydra.sweep.dir={sweep}", multirun=True)
    rows = _summary(sweep)
    assert len(rows) == 2 and all(row["run"].startswith("module.learning_rate=") for row in rows)
    assert "Best value" in done.stdout + done.stderr
    assert (sweep / "summary.png").stat().st_size > 5_000
    assert (sweep / "optimization_results.yaml").is_file()


def test_submitit_local_multirun_runs_each_job(tmp_path, sim_data_root):
    """submitit's local executor runs the same launcher code path as submitit_slurm."""
    sweep = tmp_path / "submitit"
    _train(tmp_path, sim_data_root, "launcher=submitit_local", "seed=1,2", f"hydra.sweep.dir={sweep}", multirun=True)
    assert sorted(row["run"] for row in _summary(sweep)) == ["seed=1", "seed=2"]
    assert all((sweep / job / "metrics.json").is_file() for job in ("0", "1"))
    assert list(sweep.glob(".submitit/*/*_submitted.pkl")) or list(sweep.glob(".submitit/*")), "submitit did not launch the jobs"


@pytest.mark.parametrize("logger,files", [("tensorboard", "tensorboard/**/events.out.tfevents.*"),
                                          ("wandb", "wandb/offline-run-*/run-*.wandb")])
def test_logger_choices_write_their_logs(tmp_path, sim_data_root, logger, files):
    run_dir = tmp_path / "run"
    _train(tmp_path, sim_data_root, f"logger={logger}", f"hydra.run.dir={run_dir}")
    assert list(run_dir.glob(files)), sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))[:40]
