"""End-to-end data_prep: RLDS written here (and the shared Bridge sample) -> statistics + shards.

Expected values are derived in the test from the raw TFRecords (protobuf parsing, reference
transforms and NumPy statistics written here), never from the code under test.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from data_prep import prepare  # noqa: E402
from vla.data.registry import EpisodeError  # noqa: E402
from vla.data.shards import CorruptShardError, decode_sample, iter_shard, load_prepared, verify_shard  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (32, 32, 3)


# === Writing tiny RLDS datasets (the layout of docs/contracts.md, "Sim demos (RLDS)") ===


def _jpeg(rng: np.random.Generator, shape: tuple[int, int, int] = IMAGE_SHAPE) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _episode(rng: np.random.Generator, length: int, nan_action: bool = False, small_image: bool = False) -> dict:
    steps = []
    for t in range(length):
        action = rng.normal(0, 0.02, 7).astype(np.float32)
        action[6] = float(rng.random() > 0.5)
        if nan_action and t == 1:
            action[2] = np.nan
        state = rng.normal(0, 0.3, 7).astype(np.float32)
        state[6] = rng.random()
        steps.append(
            {
                "observation": {
                    "image": io.BytesIO(_jpeg(rng, (16, 16, 3) if small_image and t == 0 else IMAGE_SHAPE)),
                    "wrist_image": io.BytesIO(_jpeg(rng)),
                    "state": state,
                },
                "action": action,
                "language_instruction": f"pick up the block {length}",
                "is_first": t == 0,
                "is_last": t == length - 1,
                "is_terminal": t == length - 1,
                "reward": np.float32(t == length - 1),
                "discount": np.float32(1),
            }
        )
    return steps


def write_sim_rlds(
    root: Path,
    splits: dict[str, int],
    seed: int = 0,
    nan_episode: int | None = None,
    small_image_episode: int | None = None,
    empty_episode: int | None = None,
) -> Path:
    """A real tfds builder directory ``root/vla_sim/1.0.0`` with the given episodes per split."""
    rng = np.random.default_rng(seed)
    episodes = {
        split: [
            (
                _episode(
                    rng,
                    0 if (split == "train" and i == empty_episode) else int(rng.integers(3, 7)),
                    nan_action=(split == "train" and i == nan_episode),
                    small_image=(split == "train" and i == small_image_episode),
                ),
                i,
            )
            for i in range(count)
        ]
        for split, count in splits.items()
    }

    with tfds.core.registered.skip_registration():  # one builder class per call

        class VlaSim(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self) -> tfds.core.DatasetInfo:
                image = tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg")
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {
                            "steps": tfds.features.Dataset(
                                {
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
                            ),
                            "episode_metadata": {
                                "file_path": tfds.features.Text(),
                                "episode_id": tfds.features.Text(),
                                "task_id": np.int32,
                                "seed": np.int64,
                            },
                        }
                    ),
                )

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(split) for split in episodes}

            def _generate_examples(self, split):
                for steps, i in episodes[split]:
                    yield (
                        f"{split}_{i}",
                        {
                            "steps": steps,
                            "episode_metadata": {
                                "file_path": f"sim/{split}/{i}",
                                "episode_id": f"{split}-{i}",
                                "task_id": i % 3,
                                "seed": i,
                            },
                        },
                    )

    builder = VlaSim(data_dir=str(root))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return root


# === Independent reference from the raw TFRecords ===


def raw_episodes(source: Path, dataset: str, split: str) -> list[dict]:
    """Parse ``<dataset>-<split>.tfrecord-*`` with protobuf: flat features, reshaped per step."""
    files = sorted((source / dataset / "1.0.0").glob(f"{dataset}-{split}.tfrecord-*"))
    episodes = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]):
        features = tf.train.Example.FromString(raw.numpy()).features.feature
        value = {k: getattr(f, f.WhichOneof("kind")).value for k, f in features.items()}
        length = len(value["steps/is_first"])
        episodes.append(
            {
                k: (
                    np.asarray(v, dtype=np.float32).reshape(length, 7)
                    if k in ("steps/action", "steps/observation/state")
                    else list(v)
                )
                for k, v in value.items()
            }
        )
    return episodes


def reference_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    values = values.astype(np.float32)
    return {
        "mean": values.mean(0),
        "std": values.std(0),
        "min": values.min(0),
        "max": values.max(0),
        "q01": np.quantile(values.astype(np.float64), 0.01, axis=0),  # OpenVLA's outputs: the float64 computation
        "q99": np.quantile(values.astype(np.float64), 0.99, axis=0),
    }


def reference_normalize(x: np.ndarray, stats: dict, mask: list[bool]) -> np.ndarray:
    low, high = np.float32(stats["q01"]), np.float32(stats["q99"])
    scaled = np.clip(2 * (x - low) / (high - low + np.float32(1e-8)) - 1, -1, 1)
    out = np.where(mask, scaled, x)
    return np.where(np.float32(stats["min"]) == np.float32(stats["max"]), 0, out).astype(np.float32)


def assert_stats_close(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def shard_samples(directory: Path, split: str) -> list[dict]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return [
        decode_sample(s) for shard in manifest["splits"][split]["shards"] for s in iter_shard(directory / shard["file"])
    ]


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# === Fixtures ===


@pytest.fixture(scope="module")
def sim_source(tmp_path_factory) -> Path:
    return write_sim_rlds(tmp_path_factory.mktemp("rlds"), {"train": 6, "val": 2})


@pytest.fixture(scope="module")
def prepared(sim_source, tmp_path_factory) -> Path:
    return prepare(
        dataset="vla_sim", source=sim_source, out=tmp_path_factory.mktemp("prepared") / "vla_sim", shard_size_mb=0.02
    )


# === Sim dataset written here ===


def test_statistics_match_raw_tfrecords(sim_source, prepared):
    episodes = raw_episodes(sim_source, "vla_sim", "train") + raw_episodes(sim_source, "vla_sim", "val")
    actions = np.concatenate([e["steps/action"] for e in episodes])
    states = np.concatenate([e["steps/observation/state"] for e in episodes])
    proprio = np.concatenate([states[:, :6], np.zeros((len(states), 1), np.float32), states[:, 6:]], axis=1)
    stats = json.loads((prepared / "dataset_statistics.json").read_text())["vla_sim"]
    assert_stats_close(stats["action"], reference_stats(actions))
    assert_stats_close(stats["proprio"], reference_stats(proprio))
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert (stats["num_transitions"], stats["num_trajectories"]) == (len(actions), 8)


def test_shards_hold_normalized_transitions_and_source_jpeg_bytes(sim_source, prepared):
    stats = json.loads((prepared / "dataset_statistics.json").read_text())["vla_sim"]
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["image_views"] == ["primary", "wrist"] and manifest["normalization"] == "bounds_q99"
    assert len(manifest["splits"]["train"]["shards"]) > 1  # the small target size splits train
    for split in ("train", "val"):
        samples = shard_samples(prepared, split)
        raw = raw_episodes(sim_source, "vla_sim", split)
        assert (
            len(samples) == sum(len(e["steps/is_first"]) for e in raw) == manifest["splits"][split]["num_transitions"]
        )
        for sample in samples:
            meta = sample["meta"]
            episode, t = raw[meta["episode_index"]], meta["timestep"]
            assert sample["__key__"] == f"{meta['episode_index']:06d}_{t:04d}"
            assert meta["split"] == split and meta["dataset"] == "vla_sim"
            assert meta["file_path"] == episode["episode_metadata/file_path"][0].decode()
            assert meta["episode_id"] == episode["episode_metadata/episode_id"][0].decode()
            assert sample["action"].dtype == np.float32
            np.testing.assert_array_equal(
                sample["action"], reference_normalize(episode["steps/action"][t], stats["action"], [True] * 6 + [False])
            )
            state = episode["steps/observation/state"][t]
            proprio = np.concatenate([state[:6], [0], state[6:]]).astype(np.float32)
            np.testing.assert_array_equal(sample["proprio"], reference_normalize(proprio, stats["proprio"], [True] * 8))
            assert sample["image_primary"] == episode["steps/observation/image"][t]
            assert sample["image_wrist"] == episode["steps/observation/wrist_image"][t]
            assert sample["instruction"] == episode["steps/language_instruction"][t].decode()


def test_load_prepared_checks_and_lists_shards(prepared):
    loaded = load_prepared(prepared)
    loaded.verify()
    assert loaded.dataset == "vla_sim" and loaded.image_views == ("primary", "wrist")
    assert all(p.is_file() for p in loaded.shard_paths("train"))
    with pytest.raises(KeyError, match="test"):
        loaded.shard_paths("test")


def test_corrupt_or_truncated_shard_is_named(prepared, tmp_path):
    copy = Path(shutil.copytree(prepared, tmp_path / "copy"))
    entry = json.loads((copy / "manifest.json").read_text())["splits"]["train"]["shards"][0]
    shard = copy / entry["file"]
    shard.write_bytes(shard.read_bytes()[:1500])
    with pytest.raises(CorruptShardError, match=entry["file"]):
        verify_shard(shard, entry["sha256"])
    with pytest.raises(CorruptShardError, match=entry["file"]):
        list(iter_shard(shard))
    with pytest.raises(CorruptShardError, match=entry["file"]):
        load_prepared(copy).verify()


def test_missing_statistics_or_manifest_is_a_clear_error(prepared, tmp_path):
    copy = Path(shutil.copytree(prepared, tmp_path / "copy"))
    (copy / "dataset_statistics.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        load_prepared(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_prepared(copy)


def test_changed_statistics_file_is_rejected(prepared, tmp_path):
    copy = Path(shutil.copytree(prepared, tmp_path / "copy"))
    (copy / "dataset_statistics.json").write_text("{}")
    with pytest.raises(ValueError, match="sha256"):
        load_prepared(copy)


def test_nan_action_names_the_episode_or_is_skipped(tmp_path):
    source = write_sim_rlds(tmp_path / "rlds", {"train": 3, "val": 1}, seed=1, nan_episode=1)
    bad = [i for i, e in enumerate(raw_episodes(source, "vla_sim", "train")) if np.isnan(e["steps/action"]).any()]
    assert len(bad) == 1
    with pytest.raises(
        EpisodeError, match=rf"train episode {bad[0]} .*'sim/train/1'.*non-finite action nan at step 1, dim 2"
    ):
        prepare(dataset="vla_sim", source=source, out=tmp_path / "strict")
    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "lenient", skip_bad_episodes=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(s["split"], s["episode_index"]) for s in manifest["skipped_episodes"]] == [("train", bad[0])]
    assert manifest["splits"]["train"]["num_episodes"] == 2
    assert {s["meta"]["episode_index"] for s in shard_samples(out, "train")} == {0, 1, 2} - {bad[0]}
    stats = json.loads((out / "dataset_statistics.json").read_text())["vla_sim"]
    assert stats["num_trajectories"] == 3 and np.all(np.isfinite(stats["action"]["mean"]))


def test_wrong_image_shape_names_the_episode(tmp_path):
    source = write_sim_rlds(tmp_path / "rlds", {"train": 2, "val": 1}, seed=2, small_image_episode=0)
    with pytest.raises(EpisodeError, match=r"train episode \d .*'sim/train/0'.*step 0 image 'image'.*\(16, 16, 3\)"):
        prepare(dataset="vla_sim", source=source, out=tmp_path / "out")


def test_empty_episode_names_the_episode_or_is_skipped(tmp_path):
    source = write_sim_rlds(tmp_path / "rlds", {"train": 3, "val": 1}, seed=5, empty_episode=2)
    empty = [i for i, e in enumerate(raw_episodes(source, "vla_sim", "train")) if not e.get("steps/is_first")]
    assert len(empty) == 1
    with pytest.raises(EpisodeError, match=rf"train episode {empty[0]} .*'sim/train/2'.*empty episode"):
        prepare(dataset="vla_sim", source=source, out=tmp_path / "strict")
    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "lenient", skip_bad_episodes=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["episode_index"] for s in manifest["skipped_episodes"]] == empty
    assert manifest["splits"]["train"]["num_episodes"] == 2


def test_source_without_val_gets_deterministic_95_5_split(tmp_path):
    source = write_sim_rlds(tmp_path / "rlds", {"train": 20}, seed=3)
    out = prepare(dataset="vla_sim", source=source, out=tmp_path / "out", normalization="bounds")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["splits"]["train"]["num_episodes"], manifest["splits"]["val"]["num_episodes"]) == (19, 1)
    raw = raw_episodes(source, "vla_sim", "train")
    val = shard_samples(out, "val")
    assert {s["meta"]["episode_index"] for s in val} == {0}
    assert val[0]["image_primary"] == raw[19]["steps/observation/image"][0]
    assert manifest["normalization"] == "bounds"
