"""Offline eval (``python eval.py mode=offline``) scores a checkpoint exactly as training's validation did."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT
from tests.test_training import compose_train
from vla.eval.app import run_eval
from vla.training.run import train

VAL_BATCHES = 2


def _compose_eval(sim_data_root, out_dir, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", return_hydra_config=True, overrides=[
            "mode=offline", "data=sim", f"data.datamodule.data_root={sim_data_root}", "data.datamodule.batch_size=4",
            "data.datamodule.num_workers=0", "progress=false", f"out_dir={out_dir}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sim_data_root):
    """A 4-step run validated on the first VAL_BATCHES val batches at its end; returns (run dir, metrics)."""
    run_dir = tmp_path_factory.mktemp("offline_run")
    metrics = train(compose_train(run_dir, sim_data_root, "trainer.max_steps=4", "trainer.val_check_interval=4",
                                  f"trainer.limit_val_batches={VAL_BATCHES}", "checkpoint_every_n_steps=4",
                                  "module.learning_rate=3e-3"))
    return run_dir, metrics


def test_offline_metrics_equal_what_training_logged(tmp_path, sim_data_root, trained_run):
    run_dir, logged = trained_run
    cfg = _compose_eval(sim_data_root, tmp_path, f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                        f"limit_batches={VAL_BATCHES}")
    results = run_eval(cfg)
    for name in ("loss", "action_accuracy", "l1"):
        assert results["metrics"][name] == pytest.approx(logged[f"val/{name}"], rel=1e-5, abs=1e-6), name
    written = json.loads((tmp_path / "offline_metrics.json").read_text())
    assert written["metrics"] == results["metrics"] and written["settings"]["split"] == "val"


def test_offline_split_and_batch_limit_choose_what_is_scored(tmp_path, sim_data_root, trained_run):
    run_dir, logged = trained_run
    checkpoint = f"checkpoint={run_dir / 'export'}"
    more_val = run_eval(_compose_eval(sim_data_root, tmp_path / "val", checkpoint,
                                      f"limit_batches={2 * VAL_BATCHES}"))["metrics"]
    train_split = run_eval(_compose_eval(sim_data_root, tmp_path / "train", checkpoint, "split=train",
                                         f"limit_batches={VAL_BATCHES}"))["metrics"]
    assert more_val["loss"] != pytest.approx(logged["val/loss"])  # more batches than training looked at
    assert train_split["loss"] != pytest.approx(logged["val/loss"])
    assert all(0.0 <= m["action_accuracy"] <= 1.0 for m in (more_val, train_split))


def test_offline_rejects_bad_split_mode_and_batch_limit(tmp_path, sim_data_root, trained_run):
    checkpoint = f"checkpoint={trained_run[0] / 'export'}"
    with pytest.raises(ValueError, match="no split 'test'"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "split=test"))
    with pytest.raises(ValueError, match="limit_batches must be >= 1"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "limit_batches=0"))
    with pytest.raises(ValueError, match="Unknown eval mode 'online'"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "mode=online"))
