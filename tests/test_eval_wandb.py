"""With wandb on (offline), closed-loop eval sends each episode, its rollout video and the success chart."""

from __future__ import annotations

import os

import pytest

from test_serve import export_tiny_vla
from tests.conftest import compose_cli
from vla.eval.app import run_eval

pytest.importorskip("wandb", reason="the loggers extra (pip install -e '.[loggers]') provides wandb")


def test_eval_logs_episodes_videos_and_chart_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    checkpoint = tmp_path / "export"
    export_tiny_vla(checkpoint)
    out = tmp_path / "eval"
    cfg = compose_cli("eval", f"checkpoint={checkpoint}", "env=sim", "task_suite=sim_reach", "num_trials_per_task=1",
                      "max_steps=2", "videos_per_task=1", "progress=false", "wandb.enabled=true",
                      "env.default_unnorm_key=sim", f"out_dir={out}")
    run_eval(cfg)
    (run_dir,) = list(out.glob("wandb/offline-run-*"))
    media = {p.suffix for p in (run_dir / "files" / "media").rglob("*") if p.is_file()}
    assert ".mp4" in media and ".png" in media, sorted(str(p) for p in run_dir.rglob("*"))[:30]
    assert os.path.getsize(next(out.glob("videos/*.mp4"))) > 0
