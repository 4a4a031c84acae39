"""data_prep on the shared real Bridge sample (skipped when absent), checked against the raw TFRecords."""

from __future__ import annotations

import json

import numpy as np
from test_data_prep import assert_stats_close, raw_episodes, reference_normalize, reference_stats, shard_samples

from data_prep import prepare
from vla.data.shards import load_prepared


def reference_bridge(episode: dict) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """OpenVLA's bridge_orig transform, written out step by step for the check."""
    action, state = episode["steps/action"][1:], episode["steps/observation/state"][1:]
    images = episode["steps/observation/image_0"][1:]
    gripper = action[:, -1].copy()
    for i in range(len(gripper)):
        if 0.05 <= action[i, -1] <= 0.95:
            later = [action[j, -1] for j in range(i + 1, len(gripper)) if not 0.05 <= action[j, -1] <= 0.95]
            gripper[i] = float(later[0] > 0.95) if later else action[-1, -1]
        else:
            gripper[i] = float(action[i, -1] > 0.95)
    movement = state[1:, :6] - state[:-1, :6]
    actions = np.concatenate([movement, gripper[:-1, None]], axis=1).astype(np.float32)
    proprio = np.concatenate([state[:-1, :6], np.zeros((len(actions), 1)), state[:-1, -1:]], axis=1).astype(np.float32)
    return actions, proprio, images[:-1]


def test_bridge_sample_matches_reference(bridge_rlds_dir, tmp_path):
    out = prepare(dataset="bridge_dataset", source=bridge_rlds_dir, out=tmp_path / "bridge")
    refs = {
        split: [reference_bridge(e) for e in raw_episodes(bridge_rlds_dir, "bridge_dataset", split)]
        for split in ("train", "val")
    }
    actions = np.concatenate([a for split in refs.values() for a, _, _ in split])
    proprio = np.concatenate([p for split in refs.values() for _, p, _ in split])
    stats = json.loads((out / "dataset_statistics.json").read_text())["bridge_dataset"]
    assert_stats_close(stats["action"], reference_stats(actions))
    assert_stats_close(stats["proprio"], reference_stats(proprio))
    assert (stats["num_transitions"], stats["num_trajectories"]) == (400, 50)
    samples = shard_samples(out, "train")
    assert len(samples) == 200  # 25 episodes x (10 steps - first - last)
    mask = [True] * 6 + [False]
    for sample in samples:
        ref_actions, ref_proprio, ref_images = refs["train"][sample["meta"]["episode_index"]]
        t = sample["meta"]["timestep"]
        np.testing.assert_array_equal(sample["action"], reference_normalize(ref_actions[t], stats["action"], mask))
        np.testing.assert_array_equal(
            sample["proprio"], reference_normalize(ref_proprio[t], stats["proprio"], [True] * 8)
        )
        assert sample["image_primary"] == ref_images[t]
    load_prepared(out).verify()
