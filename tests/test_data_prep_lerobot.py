"""data_prep from local LeRobotDatasets (v3.0 and v2.1) -> the same statistics and shards as the RLDS path.

The datasets are written here by a small writer that follows LeRobot's on-disk layout (the one
``LeRobotDataset.create`` / ``save_episode`` produce, see data_prep/lerobot_reader.py), so these
tests need only the ``lerobot`` extra (PyAV, pyarrow); one more test converts a dataset written by
LeRobot's own writer when the ``lerobot`` package is importable. Expected values come from the
arrays written: statistics through ``compute_statistics`` (what the RLDS path runs on the same
arrays), normalized actions through an independent formula, frames against the source pixels
(video is lossy: the error is bounded, and the neighbouring frame must be clearly farther).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from data_prep import prepare  # noqa: E402
from vla.data.registry import DATASET_CONFIGS, EpisodeError, lerobot_config  # noqa: E402
from vla.data.shards import decode_sample, iter_shard, load_prepared, read_image  # noqa: E402
from vla.data.statistics import compute_statistics, statistics_bytes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
EEF_MASK = [True] * 6 + [False]
FRONT, WRIST = "observation.images.front", "observation.images.wrist"
MAX_MEAN_ERROR = 6.0  # grey levels, H.264 (crf 18) + JPEG (q95) round trip of the smooth test frames


# === Source episodes and a LeRobot-layout writer ===


def frame(episode: int, t: int, height: int, width: int, camera: int = 0) -> np.ndarray:
    """A smooth image, blue level rising 20 per frame, with a moving bright square: every frame differs."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 160 // width + 40, y * 160 // height + 40, np.full_like(x, 40 + 20 * t + 5 * (episode % 5))], -1)
    top, left = (4 + 3 * camera) % (height - 12), (6 * t + 2 * episode) % (width - 12)
    image[top : top + 12, left : left + 12] = [235, 235, 90 + 60 * camera]
    return image.astype(np.uint8)


def make_episodes(n: int, seed: int, cameras: dict[str, tuple[int, int]], tasks: list[str]) -> list[dict]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        length = int(rng.integers(3, 8))
        action = rng.normal(0, 0.05, (length, 7)).astype(np.float32)
        action[:, 6] = rng.random(length) > 0.5
        episodes.append(
            {
                "task": tasks[i % len(tasks)],
                "action": action,
                "state": rng.normal(0, 0.3, (length, 8)).astype(np.float32),
                "frames": {
                    key: np.stack([frame(i, t, h, w, c) for t in range(length)])
                    for c, (key, (h, w)) in enumerate(cameras.items())
                },
            }
        )
    return episodes


def _encode_video(path: Path, frames: list[tuple[int, np.ndarray]], fps: int) -> None:
    """H.264 MP4 (yuv420p), frames at the given pts in units of 1/fps, as LeRobot's encoder writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "g": "4"})
        stream.pix_fmt, stream.height, stream.width = "yuv420p", *frames[0][1].shape[:2]
        for pts, image in frames:
            video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            video_frame.pts, video_frame.time_base = pts, Fraction(1, fps)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _features(episodes: list[dict], image_cameras: tuple[str, ...]) -> dict:
    features = {}
    for key, frames in episodes[0]["frames"].items():
        features[key] = {
            "dtype": "image" if key in image_cameras else "video",
            "shape": list(frames.shape[1:]),
            "names": ["height", "width", "channels"],
        }
    features["observation.state"] = {"dtype": "float32", "shape": [8], "names": None}
    features["action"] = {"dtype": "float32", "shape": [7], "names": None}
    for name, dtype in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")]:
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _data_table(episodes: list[dict], indices: list[int], first_index: int, fps: int, tasks: dict,
                image_cameras: tuple[str, ...], nan: tuple[int, int] | None) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index",
                                             "episode_index", "index", "task_index", *image_cameras)}
    for i in indices:
        episode = episodes[i]
        action = episode["action"].copy()
        if nan is not None and nan[0] == i:
            action[nan[1], 2] = np.nan
        for t in range(len(action)):
            rows["observation.state"].append(episode["state"][t].tolist())
            rows["action"].append(action[t].tolist())
            rows["timestamp"].append(t / fps)
            rows["frame_index"].append(t)
            rows["episode_index"].append(i)
            rows["index"].append(first_index + len(rows["index"]))
            rows["task_index"].append(tasks[episode["task"]])
            for key in image_cameras:
                rows[key].append({"bytes": _png(episode["frames"][key][t]), "path": None})
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types = {"observation.state": pa.list_(pa.float32(), 8), "action": pa.list_(pa.float32(), 7),
             "timestamp": pa.float32(), **{k: image for k in image_cameras}}
    return pa.table({k: pa.array(v, type=types.get(k, pa.int64())) for k, v in rows.items()})


def write_lerobot(root: Path, episodes: list[dict], fps: int, version: str = "v3.0", splits: dict | None = None,
                  episodes_per_file: int = 6, image_cameras: tuple[str, ...] = (),
                  drop_frame: tuple[int, int] | None = None, nan: tuple[int, int] | None = None) -> Path:
    """A LeRobotDataset directory; ``drop_frame=(episode, t)`` leaves that frame out of the videos,
    ``nan=(episode, t)`` writes a NaN action."""
    tasks = {task: i for i, task in enumerate(dict.fromkeys(e["task"] for e in episodes))}
    videos = [k for k in episodes[0]["frames"] if k not in image_cameras]
    (root / "meta").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": version, "robot_type": None, "total_episodes": len(episodes),
        "total_frames": sum(len(e["action"]) for e in episodes), "total_tasks": len(tasks), "chunks_size": 1000,
        "fps": fps, "splits": splits or {"train": f"0:{len(episodes)}"},
        "features": _features(episodes, image_cameras),
    }
    lengths = [len(e["action"]) for e in episodes]
    starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()

    def video_frames(i: int, key: str, first_pts: int) -> list[tuple[int, np.ndarray]]:
        return [(first_pts + t, image) for t, image in enumerate(episodes[i]["frames"][key]) if (i, t) != drop_frame]

    if version.startswith("v2"):
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        for i in range(len(episodes)):
            table = _data_table(episodes, [i], starts[i], fps, tasks, image_cameras, nan)
            path = root / info["data_path"].format(episode_chunk=0, episode_index=i)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            for key in videos:
                video = root / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=i)
                _encode_video(video, video_frames(i, key, 0), fps)
        (root / "meta" / "episodes.jsonl").write_text(
            "".join(json.dumps({"episode_index": i, "tasks": [e["task"]], "length": len(e["action"])}) + "\n"
                    for i, e in enumerate(episodes)))
        (root / "meta" / "tasks.jsonl").write_text(
            "".join(json.dumps({"task_index": i, "task": task}) + "\n" for task, i in tasks.items()))
    else:
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        meta: dict[str, list] = {}
        for file_index, first in enumerate(range(0, len(episodes), episodes_per_file)):
            indices = list(range(first, min(first + episodes_per_file, len(episodes))))
            path = root / info["data_path"].format(chunk_index=0, file_index=file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_data_table(episodes, indices, starts[first], fps, tasks, image_cameras, nan), path)
            for key in videos:
                frames = [f for i in indices for f in video_frames(i, key, starts[i] - starts[first])]
                _encode_video(root / info["video_path"].format(video_key=key, chunk_index=0, file_index=file_index),
                              frames, fps)
            for i in indices:
                row = {"episode_index": i, "tasks": [episodes[i]["task"]], "length": lengths[i],
                       "data/chunk_index": 0, "data/file_index": file_index,
                       "dataset_from_index": starts[i], "dataset_to_index": starts[i + 1]}
                for key in videos:
                    begin = (starts[i] - starts[first]) / fps
                    row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": file_index,
                            f"videos/{key}/from_timestamp": begin, f"videos/{key}/to_timestamp": begin + lengths[i] / fps}
                for k, v in row.items():
                    meta.setdefault(k, []).append(v)
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.table(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        pq.write_table(pa.table({"task_index": list(tasks.values()), "task": list(tasks)}), root / "meta" / "tasks.parquet")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


# === Reference checks ===


def reference_normalize(x: np.ndarray, stats: dict, mask: list[bool]) -> np.ndarray:
    low, high = np.float32(stats["q01"]), np.float32(stats["q99"])
    scaled = np.clip(2 * (x - low) / (high - low + np.float32(1e-8)) - 1, -1, 1)
    out = np.where(mask, scaled, x)
    return np.where(np.float32(stats["min"]) == np.float32(stats["max"]), 0, out).astype(np.float32)


def samples(directory: Path, split: str) -> list[dict]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return [decode_sample(s) for shard in manifest["splits"][split]["shards"]
            for s in iter_shard(directory / shard["file"])]


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def image_error(jpeg: bytes, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(read_image(jpeg), dtype=np.float32) - expected.astype(np.float32)).mean())


def check_prepared(out: Path, dataset: str, episodes: list[dict], splits: dict[str, list[int]],
                   views: dict[str, str], proprio: bool = True, max_error: float = MAX_MEAN_ERROR) -> None:
    """Statistics bytes = compute_statistics on the written arrays; every sample against its source."""
    expected = compute_statistics([e["action"] for e in episodes],
                                  [e["state"] for e in episodes] if proprio else None, EEF_MASK)
    assert (out / "dataset_statistics.json").read_bytes() == statistics_bytes({dataset: expected})
    stats = expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_views"] == list(views) and manifest["normalization"] == "bounds_q99"
    for split, indices in splits.items():
        got = samples(out, split)
        assert manifest["splits"][split]["num_episodes"] == len(indices)
        assert len(got) == sum(len(episodes[i]["action"]) for i in indices)
        for sample in got:
            meta, t = sample["meta"], sample["meta"]["timestep"]
            source = indices[meta["episode_index"]]
            episode = episodes[source]
            assert meta["episode_id"] == str(source) and meta["file_path"].startswith("data/chunk-000/")
            np.testing.assert_array_equal(sample["action"], reference_normalize(episode["action"][t], stats["action"], EEF_MASK))
            if proprio:
                np.testing.assert_array_equal(
                    sample["proprio"], reference_normalize(episode["state"][t], stats["proprio"], [True] * 8))
            assert sample["instruction"] == episode["task"]
            for view, key in views.items():
                frames = episode["frames"][key]
                errors = [image_error(sample[f"image_{view}"], f) for f in frames]
                assert errors[t] < max_error, (view, source, t, errors)
                assert np.argmin(errors) == t and sorted(errors)[1] > errors[t] + 3, (view, source, t, errors)


# === Fixtures ===

CAMERAS_A = {FRONT: (48, 64), WRIST: (32, 32)}
TASKS_A = ["Pick up the red block", "push the cube to the left"]


@pytest.fixture(scope="module")
def episodes_a() -> list[dict]:
    return make_episodes(20, seed=0, cameras=CAMERAS_A, tasks=TASKS_A)


@pytest.fixture(scope="module")
def source_a(episodes_a, tmp_path_factory) -> Path:
    return write_lerobot(tmp_path_factory.mktemp("lerobot") / "two_cameras", episodes_a, fps=10)


@pytest.fixture(scope="module")
def prepared_a(source_a, tmp_path_factory) -> Path:
    """The reference: one uninterrupted in-process run (format detected from meta/info.json)."""
    return prepare(dataset="lerobot", source=source_a, out=tmp_path_factory.mktemp("prepared") / "lerobot",
                   shard_size_mb=0.02)


# === Conversion ===


def test_two_camera_v3_matches_rlds_statistics_frames_and_tasks(episodes_a, prepared_a):
    manifest = json.loads((prepared_a / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) > 1  # several shards from several data/video files
    # no val split in info.json: the RLDS rule, first round(0.95 * 20) = 19 episodes train, the last one val
    check_prepared(prepared_a, "lerobot", episodes_a, {"train": list(range(19)), "val": [19]},
                   {"primary": FRONT, "wrist": WRIST})
    load_prepared(prepared_a).verify()


def test_other_fps_explicit_mapping_image_camera_and_source_splits(tmp_path, monkeypatch):
    cameras = {"observation.images.top": (64, 64), "observation.images.gripper": (32, 48)}
    episodes = make_episodes(6, seed=1, cameras=cameras, tasks=["stack the cups"])
    source = write_lerobot(tmp_path / "src", episodes, fps=30, splits={"train": "0:4", "val": "4:6"},
                           episodes_per_file=4, image_cameras=("observation.images.gripper",))
    entry = lerobot_config(views={"primary": "observation.images.top", "wrist": "observation.images.gripper"},
                           state_keys=())
    monkeypatch.setitem(DATASET_CONFIGS, "lerobot_cups", entry)
    out = prepare(dataset="lerobot_cups", source=source, out=tmp_path / "out", format="lerobot")
    check_prepared(out, "lerobot_cups", episodes, {"train": [0, 1, 2, 3], "val": [4, 5]},
                   {"primary": "observation.images.top", "wrist": "observation.images.gripper"}, proprio=False)
    proprio = samples(out, "train")[0]["proprio"]
    assert proprio.shape == (7,) and not proprio.any()  # no state keys: zeros like the actions, as for RLDS


def test_v21_layout_converts_like_v3(episodes_a, prepared_a, tmp_path):
    episodes = episodes_a[:8]
    source = write_lerobot(tmp_path / "v21", episodes, fps=15, version="v2.1")
    out = prepare(dataset="lerobot", source=source, out=tmp_path / "out")
    check_prepared(out, "lerobot", episodes, {"train": list(range(8))}, {"primary": FRONT, "wrist": WRIST})


# === Resume, workers, CLI ===


def test_interrupted_prep_resumes_to_identical_bytes(source_a, prepared_a, tmp_path, monkeypatch):
    import data_prep.pipeline as prep_module

    real_write_task, calls = prep_module._write_task, []

    def interrupted(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task)
        return real_write_task(task)

    monkeypatch.setattr(prep_module, "_write_task", interrupted)
    out = tmp_path / "lerobot"
    with pytest.raises(KeyboardInterrupt):
        prepare(dataset="lerobot", source=source_a, out=out, shard_size_mb=0.02)
    assert not (out / "manifest.json").exists() and len(list(out.glob("*.tar"))) == 2
    (out / "train-000002.tar.tmp").write_bytes(b"half-written")
    monkeypatch.setattr(prep_module, "_write_task", real_write_task)
    prepare(dataset="lerobot", source=source_a, out=out, shard_size_mb=0.02)
    actual = {k: v for k, v in tree_bytes(out).items() if not k.endswith(".tmp")}
    assert actual == tree_bytes(prepared_a)


def test_two_workers_give_identical_bytes_without_tensorflow(source_a, prepared_a, tmp_path):
    """vla-prep's entry point with num_workers=2 (spawned workers) and TensorFlow made unimportable."""
    blocker = tmp_path / "no_tf"
    for name in ("tensorflow", "tensorflow_datasets"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported on the LeRobot path')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "lerobot"
    done = subprocess.run(
        [sys.executable, "-m", "data_prep", "dataset=lerobot", f"source={source_a}", f"out={out}",
         "format=lerobot", "num_workers=2", "shard_size_mb=0.02"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert tree_bytes(out) == tree_bytes(prepared_a)


def test_cli_config_detects_the_format_and_checks_the_entry(source_a, prepared_a, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    def cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
            return compose("data_prep", overrides=[f"source={source_a}", "shard_size_mb=0.02", *overrides])

    assert cfg("dataset=lerobot", "out=x").format == "auto"
    out = Path(instantiate(cfg("dataset=lerobot", f"out={tmp_path / 'auto'}").prepare))
    assert tree_bytes(out) == tree_bytes(prepared_a)
    with pytest.raises(ValueError, match="'vla_sim' is a registry entry for rlds sources, but .* is read as lerobot"):
        prepare(dataset="vla_sim", source=source_a, out=tmp_path / "wrong")
    monkeypatch.setitem(DATASET_CONFIGS, "lerobot_six", lerobot_config(action_mask=[True] * 5 + [False]))
    with pytest.raises(ValueError, match=r"'lerobot_six'\): the action \['action'\] has 7 dimensions but .* mask has 6"):
        prepare(dataset="lerobot_six", source=source_a, out=tmp_path / "six")


def test_train_py_runs_on_the_lerobot_shards(prepared_a, tmp_path):
    """conf/data/lerobot_default.yaml + the tiny model: two training steps, the statistics reach the export."""
    from hydra import compose, initialize_config_dir

    from vla.training.run import train

    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=lerobot_default", "model=tiny", "head=tokens", f"run_dir={tmp_path}", f"data.datamodule.data_root={prepared_a.parent}",
            "data.datamodule.batch_size=4", "data.datamodule.num_workers=0", "data.datamodule.shuffle_buffer=16",
            "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        ])
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and np.isfinite(metrics["train/loss_step"])
    exported = json.loads((Path(metrics["export_dir"]) / "dataset_statistics.json").read_text())
    assert exported["lerobot"]["action"]["q99"] == json.loads((prepared_a / "dataset_statistics.json").read_text())[
        "lerobot"]["action"]["q99"]


# === Bad input ===


def _small_source(episodes_a, root: Path, **kwargs) -> Path:
    return write_lerobot(root, episodes_a[:5], fps=10, episodes_per_file=3, **kwargs)


def test_missing_video_file_names_episode_and_file(episodes_a, tmp_path):
    source = _small_source(episodes_a, tmp_path / "src")
    (source / "videos" / WRIST / "chunk-000" / "file-001.mp4").unlink()
    with pytest.raises(EpisodeError, match=r"lerobot train episode 3 \(file_path='data/chunk-000/file-001.parquet', "
                                           rf"episode_id='3'\): missing video file videos/{WRIST}/chunk-000/file-001.mp4"):
        prepare(dataset="lerobot", source=source, out=tmp_path / "strict")
    out = prepare(dataset="lerobot", source=source, out=tmp_path / "lenient", skip_bad_episodes=True)
    manifest = json.loads((out / "manifest.json").read_text())
    # file-001 holds episodes 3 and 4 (5 episodes: round(0.95 * 5) = 5 stay train, none val)
    assert [(s["split"], s["episode_index"]) for s in manifest["skipped_episodes"]] == [("train", 3), ("train", 4)]
    assert manifest["splits"]["train"]["num_episodes"] == 3


def test_missing_frame_names_episode_and_file(episodes_a, tmp_path):
    source = _small_source(episodes_a, tmp_path / "src", drop_frame=(1, 2))
    with pytest.raises(EpisodeError, match=r"train episode 1 \(file_path='data/chunk-000/file-000.parquet'.*"
                                           rf"video file videos/{FRONT}/chunk-000/file-000.mp4 .*no frame within "
                                           r".* of timestamp .*\(frame 2 of"):
        prepare(dataset="lerobot", source=source, out=tmp_path / "out")


def test_row_count_mismatch_names_episode_and_file(episodes_a, tmp_path):
    source = _small_source(episodes_a, tmp_path / "src")
    path = source / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    lengths[2] += 1
    pq.write_table(table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path)
    with pytest.raises(EpisodeError, match=rf"train episode 2 .*data file data/chunk-000/file-000.parquet holds "
                                           rf"{lengths[2] - 1} rows of episode_index 2, its metadata says length {lengths[2]}"):
        prepare(dataset="lerobot", source=source, out=tmp_path / "out")


def test_non_finite_action_names_episode_and_file(episodes_a, tmp_path):
    source = _small_source(episodes_a, tmp_path / "src", nan=(4, 1))
    with pytest.raises(EpisodeError, match=r"lerobot train episode 4 \(file_path='data/chunk-000/file-001.parquet', "
                                           r"episode_id='4'\): non-finite action nan at step 1, dim 2"):
        prepare(dataset="lerobot", source=source, out=tmp_path / "out")


# === A dataset written by LeRobot itself ===


def test_dataset_written_by_lerobot_converts(tmp_path):
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    cameras = {"observation.images.laptop": (48, 64), "observation.images.phone": (32, 32)}
    episodes = make_episodes(4, seed=3, cameras=cameras, tasks=["open the drawer", "close the drawer"])
    features = {key: {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
                for key, (h, w) in cameras.items()}
    features |= {"observation.state": {"dtype": "float32", "shape": (8,), "names": None},
                 "action": {"dtype": "float32", "shape": (7,), "names": None}}
    dataset = lerobot_dataset.LeRobotDataset.create("local/drawer", fps=20, features=features,
                                                    root=tmp_path / "src", use_videos=True, vcodec="h264")
    for episode in episodes:
        for t in range(len(episode["action"])):
            dataset.add_frame({"action": episode["action"][t], "observation.state": episode["state"][t],
                               "task": episode["task"], **{k: v[t] for k, v in episode["frames"].items()}})
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    out = prepare(dataset="lerobot", source=tmp_path / "src", out=tmp_path / "out")
    # LeRobot's tasks.parquet keeps the task strings in a pandas index; no val split: 95/5 of 4 = 4 + 0
    check_prepared(out, "lerobot", episodes, {"train": [0, 1, 2, 3]},
                   {"primary": "observation.images.laptop", "secondary": "observation.images.phone"},
                   max_error=10.0)  # LeRobot encodes at crf 30
