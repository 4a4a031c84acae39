"""The platform end to end, cheaply: train on sim demos -> offline scores -> closed-loop rollouts.

The long version (success well above the language-blind baseline) is bench/bench_closed_loop.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_training import compose_train
from vla.data import VLADataModule
from vla.sim import SimTaskSuite
from vla.eval.offline import evaluate_offline
from vla.policy import Policy
from vla.eval.runner import evaluate
from vla.models import VLA, load_checkpoint
from vla.training.run import train

CHANCE_ACCURACY = 1 / 256


@pytest.mark.slow
def test_trained_tiny_vla_scores_far_above_chance_and_runs_closed_loop(tmp_path, sim_data_root):
    train(compose_train(tmp_path, sim_data_root, "trainer.max_steps=30", "trainer.val_check_interval=30",
                        "checkpoint_every_n_steps=30", "module.learning_rate=3e-3"))
    trained = load_checkpoint(tmp_path / "export")

    def val_scores(vla):
        datamodule = VLADataModule(sim_data_root, batch_size=8, num_workers=0)
        return evaluate_offline(vla, datamodule, limit_batches=4)

    torch.manual_seed(0)
    untrained = VLA(trained.config, norm_stats=trained.norm_stats)
    before, after = val_scores(untrained), val_scores(trained)
    assert after["action_accuracy"] > 50 * CHANCE_ACCURACY, after
    assert after["action_accuracy"] > before["action_accuracy"] + 0.2 and after["loss"] < 0.7 * before["loss"], (before, after)

    suite = SimTaskSuite("sim_reach", n_init_states=2)
    results = evaluate(suite, Policy(trained, preprocessing="openvla-eval", unnorm_key="vla_sim"), tmp_path / "closed_loop", num_trials_per_task=2,
                       num_steps_wait=0, max_steps=6, progress=False)
    records = [json.loads(line) for line in (tmp_path / "closed_loop" / "episodes.jsonl").read_text().splitlines()]
    assert results["suite"]["episodes"] == len(records) == suite.n_tasks * 2
    assert all(r["error"] is None and 1 <= r["steps"] <= 6 for r in records), records
