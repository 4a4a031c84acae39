"""train.py end to end on the tiny model and the built-in sim data: learning, resume, export, config."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback

from vla.training.run import train
from vla.policy import Policy

REPO = Path(__file__).resolve().parents[1]


def compose_train(run_dir: Path, data_root: Path, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            f"run_dir={run_dir}", f"data.root={data_root.parent}", "data.embedded=null", f"data.datamodule.data_root={data_root}",
            "data.datamodule.batch_size=4", "data.datamodule.num_workers=0", "data.datamodule.shuffle_buffer=64",
            "trainer.accelerator=cpu", "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides,
        ])


class LossRecorder(Callback):
    def __init__(self, crash_at_step: int | None = None):
        self.losses: dict[int, float] = {}
        self.crash_at_step = crash_at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])
        if trainer.global_step == self.crash_at_step:
            raise KeyboardInterrupt("simulated kill")


def test_tiny_model_learns_on_sim_shards_and_exports(tmp_path, sim_data_root):
    cfg = compose_train(tmp_path, sim_data_root, "trainer.max_steps=30", "trainer.val_check_interval=30",
                        "checkpoint_every_n_steps=30", "module.learning_rate=3e-3")
    recorder = LossRecorder()
    metrics = train(cfg, callbacks=[recorder])
    losses = [recorder.losses[s] for s in sorted(recorder.losses)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    assert metrics["global_step"] == 30 and np.isfinite(metrics["val/loss"])
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and (tmp_path / "metrics.json").exists()
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    assert any(r.get("train/action_accuracy_step") for r in rows)

    from tests.conftest import compose_cli
    from vla.cli import export as export_cli
    from vla.models import load_vla

    exported = load_vla(tmp_path / "export")
    assert exported.norm_stats.keys() == {"vla_sim"}
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    action = Policy(exported).act(image, "move to the red block")
    assert action.shape == (7,) and np.isfinite(action).all()
    # The .ckpt -> standalone export gives the same model as the end-of-run export.
    out = export_cli(compose_cli("export", f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'from_ckpt'}"))
    np.testing.assert_array_equal(Policy(load_vla(out)).act(image, "move to the red block"), action)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, sim_data_root):
    common = ("trainer.max_steps=6", "checkpoint_every_n_steps=3", "trainer.val_check_interval=100",
              "trainer.limit_val_batches=0", "export=false")
    straight = LossRecorder()
    train(compose_train(tmp_path / "a", sim_data_root, *common), callbacks=[straight])

    killed = LossRecorder(crash_at_step=5)
    with pytest.raises(BaseException):
        train(compose_train(tmp_path / "b", sim_data_root, *common), callbacks=[killed])
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").exists()
    resumed = LossRecorder()
    train(compose_train(tmp_path / "b", sim_data_root, *common, "resume=auto"), callbacks=[resumed])
    assert sorted(resumed.losses) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-5, abs=1e-6), (step, resumed.losses, straight.losses)


def test_lora_stage_trains_only_adapters_and_exports_merged(tmp_path, sim_data_root):
    cfg = compose_train(tmp_path, sim_data_root, "stage=lora", "stage.lora.r=4", "trainer.max_steps=2",
                        "trainer.val_check_interval=100", "trainer.limit_val_batches=0", "checkpoint_every_n_steps=2")
    train(cfg)
    from vla.models import load_training_checkpoint
    from vla.models import load_vla

    merged = load_training_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    exported = load_vla(tmp_path / "export")
    for (name, a), (_, b) in zip(merged.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("override,message", [
    ("stage=frozen-everything", "Available options in 'stage'"),
    ("strategy=deepspeed", "Available options in 'strategy'"),
    ("precision=64-true", "Available options in 'precision'"),
])
def test_bad_group_choices_fail_at_compose_time_listing_choices(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        compose_train(tmp_path, tmp_path, override)


def test_bad_values_fail_before_training(tmp_path, sim_data_root):
    with pytest.raises(Exception, match="learning_rate must be > 0"):
        train(compose_train(tmp_path, sim_data_root, "module.learning_rate=-1"))
    with pytest.raises(Exception, match="batch_size must be >= 1"):
        train(compose_train(tmp_path, sim_data_root, "data.datamodule.batch_size=0"))
    with pytest.raises(Exception, match="resume='nope.ckpt' is not a checkpoint file"):
        train(compose_train(tmp_path, sim_data_root, "resume=nope.ckpt", "trainer.max_steps=1"))


def _run_train_py(tmp_path: Path, data_root: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    args = [sys.executable, str(REPO / "train.py"), *(["-m"] if multirun else []),
            "data.embedded=null", f"data.datamodule.data_root={data_root}", "data.datamodule.batch_size=2",
            "data.datamodule.num_workers=0", "data.datamodule.shuffle_buffer=16", "trainer.accelerator=cpu",
            "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "trainer.max_steps=2",
            "checkpoint_every_n_steps=2", "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_cpu_training(tmp_path, sim_data_root, strategy):
    result = _run_train_py(tmp_path, sim_data_root, f"strategy={strategy}", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Training finished" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    from vla.models import load_vla

    assert np.isfinite(Policy(load_vla(tmp_path / "run" / "export")).act(np.zeros((64, 64, 3), np.uint8), "go")).all()


@pytest.mark.slow
def test_multirun_ablation_writes_summary_table(tmp_path, sim_data_root):
    result = _run_train_py(tmp_path, sim_data_root, "stage=vla-train,vla-sandwich-train", "export=false",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "stage=vla-train" in summary and "stage=vla-sandwich-train" in summary
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "summary.csv")))
    assert len(rows) == 2 and all(float(r["val/loss"]) > 0 for r in rows)


def test_finetune_from_openvla_checkpoint_keeps_its_statistics(tmp_path, sim_data_root, tiny_vla):
    from vla.models import export_openvla_hf

    released = export_openvla_hf(tiny_vla, tmp_path / "openvla-tiny")
    cfg = compose_train(tmp_path / "run", sim_data_root, "model=openvla", f"checkpoint={released}", "strategy=auto",
                        "precision=32-true", "trainer.devices=1", "trainer.accumulate_grad_batches=1", "trainer.max_steps=2",
                        "trainer.val_check_interval=100", "trainer.limit_val_batches=0", "checkpoint_every_n_steps=2",
                        "module.learning_rate=1e-3")
    train(cfg)
    from vla.models import load_vla

    tuned = load_vla(tmp_path / "run" / "export")
    assert set(tuned.norm_stats) == {"sim", "vla_sim"}  # the checkpoint's datasets + the fine-tuning data


def test_embedded_data_made_with_other_generation_parameters_is_not_reused(tmp_path):
    """Asking for reach-only demos where sim_all demos exist must fail, not train on the wrong data."""
    from vla.training.run import ensure_embedded_data

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={tmp_path}", "data.embedded.suite=sim_reach"])
    version_dir = tmp_path / "rlds" / "vla_sim" / "1.0.0"
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").write_text(
        '{"episodes": 200, "seed": 0, "image_size": 224, "val_fraction": 0.1, "suite": "sim_all", "n_objects": 3, "noise_std": 0.002}')
    (tmp_path / "prepared" / "vla_sim").mkdir(parents=True)
    (tmp_path / "prepared" / "vla_sim" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="'suite': 'sim_all'.*pass another data.root"):
        ensure_embedded_data(cfg.data.embedded)
    # demos recorded before `paired` existed were unpaired: still reused for the default config
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        default = compose("train", overrides=[f"data.root={tmp_path}"])
    ensure_embedded_data(default.data.embedded)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        paired = compose("train", overrides=[f"data.root={tmp_path}", "data.embedded.paired=true"])
    with pytest.raises(ValueError, match="'paired': False.*'paired': True"):
        ensure_embedded_data(paired.data.embedded)
