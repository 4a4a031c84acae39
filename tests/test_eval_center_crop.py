"""eval.py's ``center_crop: null`` follows the checkpoint: true iff it was trained with image augmentation."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.test_eval_policy import _compose
from tests.test_training import compose_train
from vla.eval.app import resolve_center_crop
from vla.models import load_vla, save_vla


def _eval(tmp_path, checkpoint, *overrides: str) -> dict:
    from vla.eval.app import run_eval

    out = tmp_path / "eval"
    cfg = _compose(f"checkpoint={checkpoint}", "env=sim", "task_suite=sim_reach", "unnorm_key=vla_sim",
                   "num_trials_per_task=1", "task_ids=[0]", "max_steps=1", "progress=false", f"out_dir={out}", *overrides)
    OmegaConf.resolve(cfg)
    results = run_eval(cfg)
    written = json.loads((out / "results.json").read_text())["settings"]
    run = json.loads((out / "run.json").read_text())
    assert written["center_crop"] == results["settings"]["center_crop"]
    assert (run["center_crop"], run["center_crop_source"]) == (written["center_crop"], written["center_crop_source"])
    return written


@pytest.mark.parametrize("image_aug", [True, False])
def test_training_records_image_aug_and_eval_follows_it(tmp_path, sim_data_root, image_aug):
    pytest.importorskip("vla.sim")
    from vla.training.run import train

    cfg = compose_train(tmp_path / "train", sim_data_root, "trainer.max_steps=2", "trainer.val_check_interval=2",
                        "checkpoint_every_n_steps=2", "trainer.limit_val_batches=1",
                        f"data.datamodule.image_aug={str(image_aug).lower()}")
    train(cfg)
    export = tmp_path / "train" / "export"
    assert json.loads((export / "training.json").read_text())["image_aug"] is image_aug
    assert load_vla(export).training_info["image_aug"] is image_aug

    settings = _eval(tmp_path / "null", export)
    assert settings["center_crop"] is image_aug and settings["center_crop_source"] == "checkpoint"
    # explicit settings still win
    settings = _eval(tmp_path / "explicit", export, f"center_crop={str(not image_aug).lower()}")
    assert settings["center_crop"] is (not image_aug) and settings["center_crop_source"] == "config"
    # the train.py .ckpt says the same
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    from vla.models import load_checkpoint

    assert resolve_center_crop(None, load_checkpoint(ckpt)) == (image_aug, "checkpoint")


def test_checkpoints_that_do_not_say_default_to_no_crop(tmp_path, tiny_vla):
    save_vla(tiny_vla, tmp_path / "plain")  # no training info, like OpenVLA's HF releases
    assert not (tmp_path / "plain" / "training.json").exists()
    plain = load_vla(tmp_path / "plain")
    assert plain.training_info == {}
    assert resolve_center_crop(None, plain) == (False, "default")
    assert resolve_center_crop(True, plain) == (True, "config")
    save_vla(tiny_vla, tmp_path / "aug", training={"image_aug": True, "steps": 2})
    assert resolve_center_crop(None, load_vla(tmp_path / "aug")) == (True, "checkpoint")
    assert resolve_center_crop(False, load_vla(tmp_path / "aug")) == (False, "config")
    # re-exporting without training info removes a stale training.json
    save_vla(tiny_vla, tmp_path / "aug")
    assert load_vla(tmp_path / "aug").training_info == {}
