"""train.py end to end on the tiny model and the built-in sim data: learning, resume, export, config."""

from __future__ import annotations

import copy
import csv
import json
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


# The tests build on the token-head tiny model without proprio (OpenVLA's layout), unless they choose otherwise;
# the embedded default (model=tiny-sim head=sim-chunk) has tests of its own (test_chunk_training.py).
TOKEN_MODEL = ("model=tiny", "head=tokens", "data.proprio=false")


def compose_train(run_dir: Path, data_root: Path, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            *TOKEN_MODEL, f"run_dir={run_dir}", f"data.root={data_root.parent}", "data.embedded=null", f"data.datamodule.data_root={data_root}",
            "data.datamodule.batch_size=4", "data.datamodule.num_workers=0", "data.datamodule.shuffle_buffer=64",
            "trainer.accelerator=cpu", "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides,
        ])


class SimulatedKill(Exception):
    """Stops a run mid-training like a kill (Lightning re-raises it after its on_exception hooks)."""


class LossRecorder(Callback):
    def __init__(self, crash_at_step: int | None = None):
        self.losses: dict[int, float] = {}
        self.crash_at_step = crash_at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])
        if trainer.global_step == self.crash_at_step:
            raise SimulatedKill(f"simulated kill at step {trainer.global_step}")


class WeightSnapshots(Callback):
    """The trained VLA's state dict when training starts and when it ends."""

    def on_train_start(self, trainer, pl_module):
        self.before = {k: v.detach().clone() for k, v in pl_module.vla.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        self.after = {k: v.detach().clone() for k, v in pl_module.vla.state_dict().items()}


def dead_pid() -> int:
    """The id of a process that has exited (what a killed writer's temporary file names)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of <run dir>/logs/metrics.csv, each without its empty cells."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


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
    # Both exports explain themselves: data, mixture and steps from the run, the metrics at its end.
    for card in ((tmp_path / "export" / "README.md").read_text(), (out / "README.md").read_text()):
        assert "- data: vla_sim" in card and "{'vla_sim': 1.0}" in card and "optimizer steps: 30" in card
    assert "| val/loss |" in (tmp_path / "export" / "README.md").read_text()
    assert metrics["curves"] == str(tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 10_000


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, sim_data_root):
    """Killed at step 5 while writing last.ckpt: resume=auto removes the partial file, continues bit-exactly
    from step0000003.ckpt and continues the logs: metrics.csv and metrics.json equal the uninterrupted run's."""
    common = ("trainer.max_steps=6", "checkpoint_every_n_steps=3", "trainer.val_check_interval=2",
              "trainer.limit_val_batches=1", "export=false")
    straight = LossRecorder()
    train(compose_train(tmp_path / "a", sim_data_root, *common), callbacks=[straight])

    killed = LossRecorder(crash_at_step=5)
    with pytest.raises(SimulatedKill, match="simulated kill at step 5"):
        train(compose_train(tmp_path / "b", sim_data_root, *common), callbacks=[killed])
    checkpoints = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step0000003.ckpt"]
    assert [r["step"] for r in logged_rows(tmp_path / "b") if "train/loss_step" in r] == ["0", "1", "2", "3"]
    last = (checkpoints / "last.ckpt").read_bytes()
    partial = checkpoints / f".last.tmp{dead_pid()}.ckpt"
    partial.write_bytes(last[: len(last) // 2])
    (checkpoints / "last.ckpt").unlink()

    resumed = LossRecorder()
    train(compose_train(tmp_path / "b", sim_data_root, *common, "resume=auto"), callbacks=[resumed])
    assert not partial.exists()
    assert sorted(resumed.losses) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-5, abs=1e-6), (step, resumed.losses, straight.losses)

    expected, got = logged_rows(tmp_path / "a"), logged_rows(tmp_path / "b")
    assert [r["step"] for r in got if "train/loss_step" in r] == [str(s) for s in range(6)]  # each step once, in order
    assert [sorted(r.items()) for r in got] == [sorted(r.items()) for r in expected]
    whole_run = json.loads((tmp_path / "a" / "metrics.json").read_text())
    after_resume = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert Path(whole_run.pop("curves")).parent == tmp_path / "a" and Path(after_resume.pop("curves")).parent == tmp_path / "b"
    assert "train/loss_epoch" in whole_run and after_resume == whole_run  # epoch averages over all 6 steps
    # The resumed run's curves start at step 0: they are drawn from the continued metrics.csv.
    from vla.training.curves import read_curves

    assert [s for s, _ in read_curves(tmp_path / "b" / "logs" / "metrics.csv")["loss"]["train"]] == list(range(6))


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, capsys):
    from vla.training.resume import remove_stale_temporaries

    dead = dead_pid()
    stale = [tmp_path / f".last.tmp{dead}.ckpt", tmp_path / f".metrics.tmp{dead}.json", tmp_path / f".tokenizer.tmp{dead}"]
    kept = [tmp_path / f".last.tmp{os.getpid()}.ckpt", tmp_path / "last.ckpt", tmp_path / ".hidden", tmp_path / f"last.tmp{dead}.ckpt"]
    for path in stale + kept:
        path.write_bytes(b"x" * 1000)
    assert remove_stale_temporaries([tmp_path, tmp_path / "missing"]) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    out = capsys.readouterr().out
    assert all(f"Removed {path}" in out for path in stale), out


def _fake_checkpoint(path: Path, step: int, **extra) -> Path:
    torch.save({"vla": {}, "global_step": step, **extra}, path)
    return path


def test_resume_auto_takes_the_newest_checkpoint_that_loads(tmp_path, capsys):
    from vla.training.resume import ResumePoint, resolve_resume

    assert resolve_resume("auto", tmp_path / "missing") is None
    assert "starting fresh" in capsys.readouterr().out
    _fake_checkpoint(tmp_path / "step0000003.ckpt", 3)
    newest = _fake_checkpoint(tmp_path / "step0000006.ckpt", 6)
    torch.save({"state_dict": {}, "global_step": 9}, tmp_path / "step0000009.ckpt")  # not written by train.py
    _fake_checkpoint(tmp_path / "last.ckpt", 12, padding=torch.zeros(1000))
    whole = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(whole[: len(whole) // 2])  # truncated
    _fake_checkpoint(tmp_path / f".last.tmp{os.getpid()}.ckpt", 15)  # being written by a live process

    assert resolve_resume("auto", tmp_path) == ResumePoint(newest, 6)
    out = capsys.readouterr().out
    assert f"skipping {tmp_path / 'last.ckpt'}: it is not a complete PyTorch checkpoint" in out, out
    assert f"skipping {tmp_path / 'step0000009.ckpt'}: it was not written by train.py" in out, out
    _fake_checkpoint(tmp_path / "last.ckpt", 6)
    assert resolve_resume("auto", tmp_path) == ResumePoint(tmp_path / "last.ckpt", 6)  # a tie goes to last.ckpt


def test_checkpoint_metric_sums_load_per_dataset_and_when_absent(tiny_vla):
    """Per-dataset means are created from the checkpoint; a checkpoint saved before the sums were kept loads too."""
    from vla.training.module import VLATrainingModule

    saved = VLATrainingModule(copy.deepcopy(tiny_vla))
    saved._metric("train_l1@bridge")(torch.tensor(0.5), 2)
    state = saved.state_dict()
    assert state["metrics.train_l1@bridge.mean_value"] == 1.0  # the weighted sum, kept in checkpoints
    module = VLATrainingModule(copy.deepcopy(tiny_vla))
    module.on_load_checkpoint({"state_dict": state})
    module.load_state_dict(state)
    assert module.metrics["train_l1@bridge"].compute() == 0.5
    old = {k: v for k, v in state.items() if not k.startswith("metrics.")}
    module.on_load_checkpoint({"state_dict": old})
    module.load_state_dict(old)  # strict: the missing sums were filled in


def test_lora_stage_trains_only_adapters_and_exports_merged(tmp_path, sim_data_root):
    cfg = compose_train(tmp_path, sim_data_root, "stage=lora", "stage.lora.r=4", "trainer.max_steps=2",
                        "trainer.val_check_interval=100", "trainer.limit_val_batches=0", "checkpoint_every_n_steps=2")
    snapshots = WeightSnapshots()
    train(cfg, callbacks=[snapshots])
    before, after = snapshots.before, snapshots.after
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapters_b = {name for name in before if ".lora_B." in name}
    projector = {name for name in before if name.startswith("projector.")}
    base = {name for name in before if ".lora_" not in name} - projector
    assert adapters_b and base and adapters_b | projector <= changed  # every adapter's B and the projector trained
    assert not changed & base, sorted(changed & base)[:5]  # the base weights are bit-identical

    from vla.models import load_training_checkpoint
    from vla.models import load_vla

    merged = load_training_checkpoint(tmp_path / "checkpoints" / "last.ckpt").state_dict()
    assert not any("lora_" in name for name in merged)
    exported = load_vla(tmp_path / "export").state_dict()
    assert merged.keys() == exported.keys()
    for name, tensor in merged.items():
        assert torch.equal(tensor, exported[name]), name
        if name in after:  # not adapted: the trained tensor as is
            assert torch.equal(tensor, after[name]), name
        else:  # adapted: base weight + B @ A, which training made nonzero
            base_name = name.replace(".weight", ".base_layer.weight")
            assert base_name in after and not torch.equal(tensor, after[base_name]), name


@pytest.mark.parametrize("override,message", [
    ("stage=frozen-everything", "Available options in 'stage'"),
    ("strategy=deepspeed", "Available options in 'strategy'"),
    ("precision=64-true", "Available options in 'precision'"),
])
def test_bad_group_choices_fail_at_compose_time_listing_choices(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        compose_train(tmp_path, tmp_path, override)


def _run_train_py(tmp_path: Path, data_root: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    args = [sys.executable, str(REPO / "train.py"), *(["-m"] if multirun else []), *TOKEN_MODEL,
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
    # demos recorded before `paired` existed were unpaired: still reused by the config that made them (the earlier default)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        default = compose("train", overrides=["experiment=tiny-sim", f"data.root={tmp_path}"])
    ensure_embedded_data(default.data.embedded)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        paired = compose("train", overrides=["experiment=tiny-sim", f"data.root={tmp_path}", "data.embedded.paired=true"])
    with pytest.raises(ValueError, match="'paired': False.*'paired': True"):
        ensure_embedded_data(paired.data.embedded)
