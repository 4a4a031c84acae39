"""OpenVLA's data filters in data_prep (docs/contracts.md, "Prepared shards", Filters).

Tiny RLDS datasets written here with chosen actions, proprio and instructions; expected drops and
statistics come from NumPy references over the arrays written, never from the code under test.
OpenVLA's order: statistics over every episode, then the episode filters on normalized values
(skip_unlabeled, max_action, max_proprio), then DROID's per-transition zero-action filter.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from test_data_prep import (  # noqa: E402
    _jpeg,
    assert_stats_close,
    raw_episodes,
    reference_normalize,
    reference_stats,
    shard_samples,
)

from data_prep import prepare  # noqa: E402
from vla.data import registry  # noqa: E402
from vla.data.registry import EpisodeError, get_dataset_config  # noqa: E402

IMAGE_SHAPE = (32, 32, 3)
MASK = [True] * 6 + [False]


def _proprio(state: np.ndarray) -> np.ndarray:
    """vla_sim's proprio: EEF_state (6), a zero pad, gripper_state (1)."""
    return np.concatenate([state[:, :6], np.zeros((len(state), 1), np.float32), state[:, 6:]], axis=1)


def write_rlds(root: Path, episodes: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``root/vla_sim/1.0.0``; each episode is ``{"actions": [T,7], "states": [T,7], "instruction": str}``.

    Returns the episodes in the source's order (tfds shuffles by key; read back from the TFRecords).
    """
    rng = np.random.default_rng(0)

    def steps(ep: dict) -> list[dict]:
        n = len(ep["actions"])
        return [
            {
                "observation": {
                    "image": io.BytesIO(_jpeg(rng)),
                    "wrist_image": io.BytesIO(_jpeg(rng)),
                    "state": np.asarray(ep["states"][t], np.float32),
                },
                "action": np.asarray(ep["actions"][t], np.float32),
                "language_instruction": ep["instruction"],
                "is_first": t == 0,
                "is_last": t == n - 1,
                "is_terminal": t == n - 1,
                "reward": np.float32(t == n - 1),
                "discount": np.float32(1),
            }
            for t in range(n)
        ]

    with tfds.core.registered.skip_registration():

        class VlaSim(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self) -> tfds.core.DatasetInfo:
                image = tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg")
                step = {
                    "observation": {
                        "image": image,
                        "wrist_image": image,
                        "state": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                    },
                    "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                    "language_instruction": tfds.features.Text(),
                    "is_first": np.bool_,
                    "is_last": np.bool_,
                    "is_terminal": np.bool_,
                    "reward": np.float32,
                    "discount": np.float32,
                }
                meta = {"file_path": tfds.features.Text(), "episode_id": tfds.features.Text()}
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {"steps": tfds.features.Dataset(step), "episode_metadata": meta}
                    ),
                )

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(split) for split in episodes}

            def _generate_examples(self, split):
                for i, ep in enumerate(episodes[split]):
                    meta = {"file_path": f"sim/{split}/{i}", "episode_id": f"{split}-{i}"}
                    yield f"{split}_{i}", {"steps": steps(ep), "episode_metadata": meta}

    builder = VlaSim(data_dir=str(root))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    ordered = {}
    for split, eps in episodes.items():
        ids = [e["episode_metadata/episode_id"][0].decode() for e in raw_episodes(root, "vla_sim", split)]
        ordered[split] = [eps[int(i.split("-")[1])] for i in ids]
    return ordered


def _index(episodes: list[dict], tag: str) -> int:
    return next(i for i, ep in enumerate(episodes) if ep.get("tag") == tag)


def _random_episode(rng: np.random.Generator, n: int, instruction: str = "pick up the block") -> dict:
    actions = rng.normal(0, 0.02, (n, 7)).astype(np.float32)
    actions[:, 6] = rng.random(n) > 0.5
    states = rng.normal(0, 0.3, (n, 7)).astype(np.float32)
    states[:, 6] = rng.random(n)
    return {"actions": actions, "states": states, "instruction": instruction}


def _reference_normal(x: np.ndarray, stats: dict, mask: list[bool]) -> np.ndarray:
    mean, std = np.float32(stats["mean"]), np.float32(stats["std"])
    return np.where(mask, (x - mean) / (std + np.float32(1e-8)), x).astype(np.float32)


def _all(episodes: dict[str, list[dict]], key: str) -> np.ndarray:
    return np.concatenate([ep[key] for split in episodes.values() for ep in split])


# === Episode filters: empty instruction, max_action, max_proprio ===


@pytest.fixture(scope="module")
def episode_filter_source(tmp_path_factory) -> tuple[Path, dict]:
    rng = np.random.default_rng(1)
    train = [_random_episode(rng, int(rng.integers(4, 7))) for _ in range(6)]
    train[1].update(instruction="", tag="empty")  # unlabelled: skipped whatever its values
    train[1]["actions"][0, 0] = 9.0  # ... even though it would also fail max_action (the reasons' order)
    train[2].update(tag="max_action")
    train[2]["actions"][2, 1] = 5.0  # an action outlier
    train[4].update(tag="max_proprio")
    train[4]["states"][1, 3] = 30.0  # a proprio outlier
    episodes = {"train": train, "val": [_random_episode(rng, 5), _random_episode(rng, 4)]}
    root = tmp_path_factory.mktemp("rlds_episodes")
    return root, write_rlds(root, episodes)


def _check_statistics_over_all_episodes(out: Path, episodes: dict) -> dict:
    """OpenVLA computes statistics before any filter: every episode of every split counts."""
    stats = json.loads((out / "dataset_statistics.json").read_text())["vla_sim"]
    actions, proprio = _all(episodes, "actions"), _proprio(_all(episodes, "states"))
    assert_stats_close(stats["action"], reference_stats(actions))
    assert_stats_close(stats["proprio"], reference_stats(proprio))
    assert stats["num_transitions"] == len(actions)
    assert stats["num_trajectories"] == sum(len(eps) for eps in episodes.values())
    return stats


def _check_kept(out: Path, episodes: dict, skipped: dict[str, set[int]], normalize) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    stats = json.loads((out / "dataset_statistics.json").read_text())["vla_sim"]
    assert "filtered_transitions" not in manifest  # vla_sim has no zero-action filter
    for split, eps in episodes.items():
        kept = [i for i in range(len(eps)) if i not in skipped.get(split, set())]
        samples = shard_samples(out, split)
        info = manifest["splits"][split]
        assert info["num_episodes"] == len(kept)
        assert info["num_transitions"] == len(samples) == sum(len(eps[i]["actions"]) for i in kept)
        assert sorted({s["meta"]["episode_index"] for s in samples}) == kept
        for s in samples:
            ep, t = eps[s["meta"]["episode_index"]], s["meta"]["timestep"]
            np.testing.assert_array_equal(s["action"], normalize(ep["actions"][t], stats["action"], MASK))


def test_empty_instruction_episodes_are_skipped_after_statistics(episode_filter_source, tmp_path):
    source, episodes = episode_filter_source
    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "out", shard_size_mb=0.02)
    _check_statistics_over_all_episodes(out, episodes)
    manifest = json.loads((out / "manifest.json").read_text())
    empty = _index(episodes["train"], "empty")
    assert manifest["skipped_episodes"] == [
        {"split": "train", "episode_index": empty, "reason": "empty instruction (OpenVLA skip_unlabeled)"}
    ]
    _check_kept(out, episodes, {"train": {empty}}, reference_normalize)
    assert all(s["instruction"] for split in ("train", "val") for s in shard_samples(out, split))


def test_max_action_and_max_proprio_compare_normalized_values(episode_filter_source, tmp_path):
    source, episodes = episode_filter_source
    bound = 4.0
    out = prepare(
        dataset="vla_sim",
        source=source,
        out=tmp_path / "out",
        normalization="normal",
        max_action=bound,
        max_proprio=bound,
    )
    stats = _check_statistics_over_all_episodes(out, episodes)
    # reference: any normalized |value| > bound in any dim at any step (the gripper passes raw)
    expected = []
    for split, eps in episodes.items():
        for i, ep in enumerate(eps):
            if not ep["instruction"]:
                expected.append((split, i, "empty instruction"))
            elif np.abs(_reference_normal(ep["actions"], stats["action"], MASK)).max() > bound:
                expected.append((split, i, "max_action"))
            elif np.abs(_reference_normal(_proprio(ep["states"]), stats["proprio"], [True] * 8)).max() > bound:
                expected.append((split, i, "max_proprio"))
    tags = ("empty", "max_action", "max_proprio")
    assert sorted(i for _, i, _ in expected) == sorted(_index(episodes["train"], tag) for tag in tags)
    skipped = json.loads((out / "manifest.json").read_text())["skipped_episodes"]
    assert [(s["split"], s["episode_index"]) for s in skipped] == [(s, i) for s, i, _ in expected]
    for entry, (_, _, reason) in zip(skipped, expected, strict=True):
        assert entry["reason"].startswith(reason)
    _check_kept(out, episodes, {"train": {i for _, i, _ in expected}}, _reference_normal)


def test_max_action_on_clipped_bounds_normalization_drops_nothing(episode_filter_source, tmp_path):
    """Raw |action| 5.0 > 1.0, but OpenVLA compares the normalized (clipped to [-1, 1]) values."""
    source, episodes = episode_filter_source
    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "out", max_action=1.0, max_proprio=1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = [(s["split"], s["episode_index"]) for s in manifest["skipped_episodes"]]
    assert skipped == [("train", _index(episodes["train"], "empty"))]
    plan = json.loads((out / "_progress" / "plan.json").read_text())
    assert plan["options"]["max_action"] == plan["options"]["max_proprio"] == 1.0


def test_max_action_must_be_positive(episode_filter_source, tmp_path):
    with pytest.raises(ValueError, match="max_action"):
        prepare(dataset="vla_sim", source=episode_filter_source[0], out=tmp_path / "out", max_action=0)


def test_partly_unlabelled_episode_is_a_bad_episode(tmp_path):
    rng = np.random.default_rng(3)
    episodes = {"train": [_random_episode(rng, 4) for _ in range(2)], "val": [_random_episode(rng, 3)]}
    episodes["train"][0]["tag"] = "partly"
    source = tmp_path / "rlds"
    episodes = write_rlds(source, episodes)
    partly = _index(episodes["train"], "partly")
    config = get_dataset_config("vla_sim")

    def transform(episode):  # write_rlds gives every step the same instruction: blank steps 1..
        episode = config.transform(episode)
        if np.array_equal(np.asarray(episode["action"], np.float32), episodes["train"][partly]["actions"]):
            episode["language_instruction"] = [episode["language_instruction"][0]] + [b""] * 3
        return episode

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.DATASET_CONFIGS, "vla_sim", replace(config, transform=transform))
        with pytest.raises(EpisodeError, match=rf"train episode {partly}: empty instruction at steps \[1, 2, 3\]"):
            prepare(dataset="vla_sim", source=source, out=tmp_path / "out")
        out = prepare(dataset="vla_sim", source=source, out=tmp_path / "out2", skip_bad_episodes=True)
    skipped = json.loads((out / "manifest.json").read_text())["skipped_episodes"]
    assert [(s["split"], s["episode_index"]) for s in skipped] == [("train", partly)]


# === DROID's zero-action filter (per transition, after normalization) ===


def test_droid_entry_has_openvla_zero_action_filter():
    assert get_dataset_config("droid").zero_action_dims == (0, 1, 2, 3, 4, 5)
    assert all(not c.zero_action_dims for name, c in registry.DATASET_CONFIGS.items() if name != "droid")


def test_zero_action_transitions_dropped_after_statistics(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    train = [_random_episode(rng, 6) for _ in range(3)]
    train[0]["tag"] = "some"
    train[0]["actions"][[1, 4], :6] = 0.0  # zero motion, gripper kept: dropped
    train[0]["actions"][2, :6] = 0.0
    train[0]["actions"][2, 5] = 0.01  # one non-zero dim: kept
    train[1]["tag"] = "all"
    train[1]["actions"][:, :6] = 0.0  # all zero: the episode is left empty -> skipped
    train[2]["tag"] = "none"
    val = [_random_episode(rng, 5)]
    val[0]["actions"][0, :6] = 0.0
    source = tmp_path / "rlds"
    episodes = write_rlds(source, {"train": train, "val": val})
    some, all_, none = (_index(episodes["train"], tag) for tag in ("some", "all", "none"))
    config = get_dataset_config("vla_sim")
    monkeypatch.setitem(registry.DATASET_CONFIGS, "vla_sim", replace(config, zero_action_dims=(0, 1, 2, 3, 4, 5)))

    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "out", shard_size_mb=0.02)
    stats = _check_statistics_over_all_episodes(out, episodes)  # zero steps count in the statistics
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filtered_transitions"] == {"zero_action": {"train": 2 + 6, "val": 1}}
    assert manifest["skipped_episodes"] == [
        {"split": "train", "episode_index": all_, "reason": "zero_action: all 6 transitions have a zero action"}
    ]
    train_keys = sorted([(some, t) for t in (0, 2, 3, 5)] + [(none, t) for t in range(6)])
    expected = {"train": train_keys, "val": [(0, t) for t in range(1, 5)]}
    for split, keys in expected.items():
        samples = shard_samples(out, split)
        assert [(s["meta"]["episode_index"], s["meta"]["timestep"]) for s in samples] == keys
        assert [s["__key__"] for s in samples] == [f"{i:06d}_{t:04d}" for i, t in keys]
        assert manifest["splits"][split]["num_transitions"] == len(keys)
        for s in samples:
            ep, t = episodes[split][s["meta"]["episode_index"]], s["meta"]["timestep"]
            np.testing.assert_array_equal(s["action"], reference_normalize(ep["actions"][t], stats["action"], MASK))
    assert manifest["splits"]["train"]["num_episodes"] == 2
