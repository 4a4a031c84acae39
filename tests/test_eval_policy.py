"""Policy loading, unnorm-key rules, the LIBERO gripper mapping and the eval.py config path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import REPO_ROOT
from vla.eval.envs.libero import LiberoSuite, libero_gripper_action
from vla.policy import Policy, resolve_suite_unnorm_key
from vla.models import load_checkpoint
from vla.eval.rollout import NOOP_ACTION


def test_unnorm_key_prefers_suite_then_no_noops_and_names_keys_on_error():
    assert resolve_suite_unnorm_key({"libero_goal": {}, "libero_goal_no_noops": {}}, "libero_goal") == "libero_goal"
    assert resolve_suite_unnorm_key({"libero_10_no_noops": {}}, "libero_10") == "libero_10_no_noops"
    with pytest.raises(ValueError, match=r"libero_object.*\['bridge_orig', 'sim'\]"):
        resolve_suite_unnorm_key({"sim": {}, "bridge_orig": {}}, "libero_object")


def test_libero_gripper_post_processing_matches_openvla():
    arm = [0.1, -0.2, 0.3, 0.01, 0.02, -0.03]
    np.testing.assert_array_equal(libero_gripper_action(np.array(arm + [1.0])), arm + [-1.0])  # open
    assert libero_gripper_action(np.array(arm + [0.0]))[-1] == 1.0  # close
    assert libero_gripper_action(np.array(arm + [0.8]))[-1] == -1.0 and libero_gripper_action(np.array(arm + [0.3]))[-1] == 1.0
    assert libero_gripper_action(np.array(arm + [0.5]))[-1] == 0.0  # np.sign(0) stays 0, as in OpenVLA
    np.testing.assert_array_equal(libero_gripper_action(NOOP_ACTION), [0, 0, 0, 0, 0, 0, -1])  # OpenVLA's dummy
    with pytest.raises(ValueError, match="7-D"):
        libero_gripper_action(np.zeros(6))


def test_unknown_libero_suite_is_rejected():
    with pytest.raises(ValueError, match="libero_spatial"):
        LiberoSuite("libero_100000")


def test_load_checkpoint_reads_exported_dir_and_openvla_hf_dir_alike(tmp_path, tiny_vla):
    from vla.models import save_vla
    from vla.models.openvla_format import export_openvla_hf

    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    expected = Policy(tiny_vla).act(image, "move to the red block", unnorm_key="sim")
    for path in (save_vla(tiny_vla, tmp_path / "export"), export_openvla_hf(tiny_vla, tmp_path / "openvla_hf")):
        vla = load_checkpoint(path)
        assert vla.norm_stats.keys() == {"sim"} and not vla.training
        np.testing.assert_array_equal(Policy(vla).act(image, "move to the red block", unnorm_key="sim"), expected)


def test_load_checkpoint_reads_training_ckpt_like_its_export(tmp_path, sim_data_root):
    from tests.test_training import compose_train
    from vla.training.run import train

    train(compose_train(tmp_path, sim_data_root, "trainer.max_steps=2", "trainer.limit_val_batches=0",
                        "checkpoint_every_n_steps=2"))
    from_ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    from_export = load_checkpoint(tmp_path / "export")
    assert not from_ckpt.training and from_ckpt.norm_stats == from_export.norm_stats
    image = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Policy(from_ckpt).act(image, "move to the red block"),
                                  Policy(from_export).act(image, "move to the red block"))


def test_load_checkpoint_rejects_other_paths_listing_accepted_forms(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    (tmp_path / "empty_dir").mkdir()
    for path, problem in ((tmp_path / "weights.bin", "none of these"), (tmp_path / "empty_dir", "none of these"),
                          (tmp_path / "missing", "does not exist")):
        with pytest.raises(ValueError, match=problem) as err:
            load_checkpoint(path)
        for form in ("exported VLA directory", "*.ckpt", "OpenVLA HF directory", "Prismatic run directory"):
            assert form in str(err.value)


def test_vla_policy_preprocesses_and_checks_unnorm_key(tiny_vla):
    policy = Policy(tiny_vla, preprocessing="openvla-eval", unnorm_key="sim", center_crop=True)
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert policy.preprocess(image).shape == (224, 224, 3)
    action = policy(image, "pick up the red block")
    assert action.shape == (7,) and np.all(np.isfinite(action))
    with pytest.raises(ValueError, match="libero_spatial"):
        Policy(tiny_vla, preprocessing="openvla-eval", unnorm_key="libero_spatial")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("eval", overrides=list(overrides), return_hydra_config=True)


def test_config_selects_env_suite_and_defaults():
    cfg = _compose("checkpoint=x", "env=libero", "task_suite=libero_goal")
    assert cfg.env.suite._target_ == "vla.eval.envs.libero.LiberoSuite" and cfg.task_suite == "libero_goal"
    assert cfg.num_trials_per_task == 50 and cfg.env.num_steps_wait == 10 and cfg.center_crop is None  # null: from the checkpoint (trained with augmentation -> crop)
    assert _compose("checkpoint=x").env.default_suite == "sim_reach"  # what the embedded default learns


def test_eval_entry_on_the_sim_writes_results(tmp_path, tiny_vla):
    """eval.py's path end to end: exported tiny VLA, real sim suite, one task, one trial."""
    pytest.importorskip("vla.sim")
    from omegaconf import OmegaConf

    from vla.eval.app import run_eval
    from vla.models import save_vla

    save_vla(tiny_vla, tmp_path / "export")
    cfg = _compose(f"checkpoint={tmp_path / 'export'}", "env=sim", "task_suite=sim_reach", "unnorm_key=sim",
                   "num_trials_per_task=1", "task_ids=[0]", "max_steps=3", "progress=false", f"out_dir={tmp_path / 'run'}")
    OmegaConf.resolve(cfg)
    results = run_eval(cfg)
    assert results["suite"]["episodes"] == 1 and results["settings"]["unnorm_key"] == "sim"
    record = json.loads((tmp_path / "run" / "episodes.jsonl").read_text())
    assert record["error"] is None and record["steps"] == 3 and record["mean_latency_s"] > 0
    assert (tmp_path / "run" / "results.csv").exists()
