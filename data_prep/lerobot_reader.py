"""Read a local LeRobotDataset (v3.0, or v2.0 / v2.1) into the per-episode dicts ``standardize`` consumes.

No TensorFlow and no torch: tables are read with pyarrow, video frames with PyAV (the optional
``lerobot`` extra). Layout, as LeRobot writes it (``lerobot/datasets/utils.py``):

- ``meta/info.json``: ``codebase_version``, ``fps``, ``features`` (name -> ``dtype``, ``shape``,
  ``names``), ``splits`` (``{"train": "0:N"}``, episode-index ranges), ``data_path`` and
  ``video_path`` templates, ``chunks_size``.
- v3.0: ``meta/episodes/chunk-XXX/file-XXX.parquet`` (one row per episode: ``episode_index``,
  ``length``, ``data/chunk_index``, ``data/file_index``, and per video key
  ``videos/<key>/{chunk_index,file_index,from_timestamp}``), ``meta/tasks.parquet`` (task string
  -> ``task_index``), ``data/chunk-XXX/file-XXX.parquet`` (frames of many episodes),
  ``videos/<key>/chunk-XXX/file-XXX.mp4`` (episodes one after another).
- v2.x: ``meta/episodes.jsonl``, ``meta/tasks.jsonl``, one parquet and one MP4 per episode
  (``data/chunk-XXX/episode_XXXXXX.parquet``, ``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``).

Video frames are picked by timestamp as LeRobot does (``decode_video_frames``): for frame ``t`` the
decoded frame whose presentation time is nearest to ``from_timestamp + timestamp[t]``, which must be
within ``TOLERANCE_S`` (LeRobot's default ``tolerance_s``). Each decoded frame is JPEG-encoded at
once with the shards' encoder (:func:`vla.data.shards.to_jpeg`, the bytes ``encode_sample`` would
write), so an episode is held as JPEG bytes, not raw frames. Cameras of dtype ``image`` (encoded
images inside the parquet) are passed on as their bytes. Problems with one episode (a missing or
unreadable video file, a frame with no video frame at its timestamp, a data file whose row count
differs from the episode's length) are yielded as :class:`EpisodeError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla.data.registry import DatasetConfig, EpisodeError
from vla.data.shards import to_jpeg

TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s
CAMERA_DTYPES = ("video", "image")
_V3_EPISODE_FIELDS = ("episode_index", "length", "data/chunk_index", "data/file_index")


class LeRobotSource:
    """A LeRobotDataset directory opened for the pipeline (see :class:`data_prep.rlds_reader.RLDSSource`).

    ``config`` is the registry entry with its views resolved for this dataset's cameras; only the
    cameras it uses are read.
    """

    def __init__(self, root: str | Path, dataset: str, config: DatasetConfig):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"not a LeRobotDataset directory (no meta/info.json): {self.root}")
        self.info = json.loads(info_path.read_text())
        version = str(self.info.get("codebase_version", ""))
        if version.startswith("v3."):
            self.version = 3
        elif version in ("v2.0", "v2.1"):
            self.version = 2
        else:
            raise ValueError(f"{info_path}: unsupported codebase_version {version!r} (v2.0, v2.1 and v3.x are read)")
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        cameras = [
            k
            for k, f in self.features.items()
            if f.get("dtype") in CAMERA_DTYPES and not (f.get("info") or {}).get("video.is_depth_map", False)
        ]
        self.config = config.for_cameras(cameras)
        self.cameras = [self.config.image_obs_keys[v] for v in self.config.image_views]
        self._check_config(dataset, cameras)
        self.episodes = self._load_episodes()
        self.tasks = self._load_tasks()
        self._split_episodes = self._splits()
        self._data: tuple[Path, pa.Table, dict[int, np.ndarray]] | None = None
        self._videos: dict[str, tuple[Path, Any]] = {}

    # --- metadata ---

    def _check_config(self, dataset: str, cameras: list[str]) -> None:
        where = f"LeRobot dataset {self.root} (registry entry {dataset!r})"
        if not self.cameras:
            raise ValueError(f"{where}: no camera for the primary view (cameras: {cameras})")
        for key in self.cameras:
            if self.features.get(key, {}).get("dtype") not in CAMERA_DTYPES:
                raise ValueError(f"{where}: camera {key!r} is not a video/image feature (cameras: {cameras})")
        for key in self.config.state_obs_keys:
            if key is not None and key not in self.features:
                raise ValueError(f"{where}: no state feature {key!r} (features: {sorted(self.features)})")
        action_keys = getattr(self.config.transform, "action_keys", ())  # lerobot_config entries
        missing = [key for key in action_keys if key not in self.features]
        if missing:
            raise ValueError(f"{where}: no action feature {missing} (features: {sorted(self.features)})")
        dims = sum(int(np.prod(self.features[key].get("shape") or [1])) for key in action_keys)
        mask = self.config.action_normalization_mask
        if action_keys and dims != len(mask):
            raise ValueError(
                f"{where}: the action {list(action_keys)} has {dims} dimensions but the entry's normalization mask "
                f"has {len(mask)}; register an entry with vla.data.registry.lerobot_config(action_mask=...)"
            )

    def _load_episodes(self) -> list[dict[str, Any]]:
        if self.version == 2:
            path = self.root / "meta" / "episodes.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"missing LeRobot episode metadata {path}")
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise FileNotFoundError(f"missing LeRobot episode metadata {self.root / 'meta' / 'episodes'}/*/*.parquet")
            rows = []
            for file in files:
                names = pq.read_schema(file).names
                wanted = [n for n in names if n in (*_V3_EPISODE_FIELDS, "tasks") or n.startswith("videos/")]
                missing = [n for n in _V3_EPISODE_FIELDS if n not in names]
                if missing:
                    raise ValueError(f"{file}: episode metadata without columns {missing}")
                rows.extend(pq.read_table(file, columns=wanted).to_pylist())
        return sorted(rows, key=lambda row: int(row["episode_index"]))

    def _load_tasks(self) -> dict[int, str]:
        if self.version == 2:
            path = self.root / "meta" / "tasks.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
            return {int(r["task_index"]): str(r["task"]) for r in rows}
        path = self.root / "meta" / "tasks.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"missing LeRobot task table {path}")
        table = pq.read_table(path)
        if "task" in table.column_names:  # a plain column, or pandas' index (how LeRobot writes it)
            task_column = "task"
        else:
            pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            index = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
            if not index:
                raise ValueError(f"{path}: no task column (columns {table.column_names})")
            task_column = index[0]
        return {
            int(i): str(t)
            for i, t in zip(table.column("task_index").to_pylist(), table.column(task_column).to_pylist(), strict=True)
        }

    def _splits(self) -> dict[str, list[int]]:
        """Split name -> positions in ``self.episodes`` (``info.json`` ranges of episode indices)."""
        position = {int(e["episode_index"]): i for i, e in enumerate(self.episodes)}
        ranges = self.info.get("splits") or {"train": f"0:{len(self.episodes)}"}
        splits = {}
        for name, spec in ranges.items():
            start, stop = (int(x) for x in str(spec).split(":"))
            splits[name] = [position[i] for i in range(start, stop) if i in position]
        return splits

    def split_sizes(self) -> dict[str, int]:
        return {name: len(episodes) for name, episodes in self._split_episodes.items()}

    def image_shapes(self) -> dict[str, tuple]:
        """Camera feature -> declared (H, W, C), from ``shape`` and ``names`` in ``info.json``."""
        shapes = {}
        for key in self.cameras:
            feature = self.features[key]
            shape, names = list(feature.get("shape") or []), feature.get("names")
            if len(shape) != 3:
                continue
            if isinstance(names, list) and sorted(map(str, names)) == ["channels", "height", "width"]:
                order = {str(n): s for n, s in zip(names, shape)}
                shapes[key] = (order["height"], order["width"], order["channels"])
            else:
                shapes[key] = tuple(shape) if shape[-1] in (1, 3, 4) else (shape[1], shape[2], shape[0])
        return shapes

    # --- episodes ---

    def read_episodes(
        self, split: str, start: int, stop: int, decode_images: bool = True
    ) -> Iterator[tuple[dict, dict | EpisodeError]]:
        """Episodes ``start..stop-1`` of ``split`` (episode-index order) as ``(metadata, episode or error)``.

        ``decode_images=False``: video frames are checked from the packets (timestamps, frame size)
        and stand in as zeros, for the scan pass; the write pass decodes them.
        """
        for position in self._split_episodes[split][start:stop]:
            episode = self.episodes[position]
            data_file = self._data_file(episode)
            metadata = {"file_path": data_file, "episode_id": str(int(episode["episode_index"]))}
            try:
                yield metadata, self._episode(episode, data_file, decode_images)
            except EpisodeError as error:
                yield metadata, error

    def _data_file(self, episode: dict[str, Any]) -> str:
        index = int(episode["episode_index"])
        if self.version == 2:
            chunk = index // int(self.info.get("chunks_size", 1000))
            return self.info["data_path"].format(episode_chunk=chunk, episode_index=index)
        return self.info["data_path"].format(
            chunk_index=int(episode["data/chunk_index"]), file_index=int(episode["data/file_index"])
        )

    def _video_file(self, episode: dict[str, Any], key: str) -> tuple[str, float]:
        """Path (relative to the root) of ``key``'s video holding the episode, and the episode's start in it."""
        index = int(episode["episode_index"])
        if self.version == 2:
            chunk = index // int(self.info.get("chunks_size", 1000))
            return self.info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0
        if f"videos/{key}/chunk_index" not in episode:
            raise EpisodeError(f"meta/episodes has no video location for camera {key!r}")
        path = self.info["video_path"].format(
            video_key=key,
            chunk_index=int(episode[f"videos/{key}/chunk_index"]),
            file_index=int(episode[f"videos/{key}/file_index"]),
        )
        return path, float(episode[f"videos/{key}/from_timestamp"])

    def _rows(self, episode: dict[str, Any], data_file: str) -> pa.Table:
        """The episode's rows of its data file (one data file cached at a time)."""
        path = self.root / data_file
        if self._data is None or self._data[0] != path:
            if not path.is_file():
                raise EpisodeError(f"missing data file {data_file}")
            try:  # image columns of cameras not used are not read
                names = pq.read_schema(path).names
                table = pq.read_table(path, columns=[
                    n for n in names if self.features.get(n, {}).get("dtype") != "image" or n in self.cameras
                ])
            except (OSError, pa.ArrowException) as exc:
                raise EpisodeError(f"unreadable data file {data_file} ({exc})") from exc
            if "episode_index" not in table.column_names:
                raise EpisodeError(f"data file {data_file} has no episode_index column")
            column = table.column("episode_index").to_numpy()
            order = np.argsort(column, kind="stable")
            values, starts = np.unique(column[order], return_index=True)
            bounds = [*starts.tolist(), len(order)]
            rows = {int(v): order[bounds[i] : bounds[i + 1]] for i, v in enumerate(values)}
            self._data = (path, table, rows)
        _, table, rows = self._data
        index = int(episode["episode_index"])
        if index not in rows:
            raise EpisodeError(f"data file {data_file} holds no rows of episode_index {index}")
        taken = rows[index]
        if len(taken) and np.all(np.diff(taken) == 1):
            return table.slice(int(taken[0]), len(taken))
        return table.take(pa.array(taken))

    def _episode(self, episode: dict[str, Any], data_file: str, decode_images: bool) -> dict[str, Any]:
        rows = self._rows(episode, data_file)
        length = rows.num_rows
        if int(episode["length"]) != length:
            raise EpisodeError(
                f"data file {data_file} holds {length} rows of episode_index {episode['episode_index']}, "
                f"its metadata says length {episode['length']}"
            )
        raw: dict[str, Any] = {"observation": {}}
        for name, feature in self.features.items():
            if feature.get("dtype") == "video" or name not in rows.column_names:
                continue
            if feature.get("dtype") == "image" and name not in self.cameras:
                continue
            values = _image_bytes(rows.column(name), self.root) if feature.get("dtype") == "image" else _array(
                rows.column(name), length
            )
            (raw["observation"] if name.startswith("observation.") else raw)[name] = values
        if "timestamp" in rows.column_names:
            timestamps = np.asarray(rows.column("timestamp").to_numpy(zero_copy_only=False), dtype=np.float64)
        else:
            timestamps = np.arange(length) / self.fps
        if "task_index" in rows.column_names:
            task_index = rows.column("task_index").to_pylist()
            unknown = sorted({i for i in task_index if i not in self.tasks})
            if unknown:
                raise EpisodeError(f"data file {data_file}: task_index {unknown} not in the task table")
            raw["task"] = np.array([self.tasks[i] for i in task_index], dtype=object)
        else:
            raw["task"] = np.array([(episode.get("tasks") or [""])[0]] * length, dtype=object)
        for key in self.cameras:
            if self.features[key].get("dtype") == "video":
                raw["observation"][key] = self._frames(episode, key, timestamps, decode_images)
        return raw

    def close(self) -> None:
        """Close the open videos and drop the cached data table."""
        for _, container in self._videos.values():
            container.close()
        self._videos.clear()
        self._data = None

    # --- video ---

    def _container(self, key: str, path: Path) -> Any:
        """The open video of camera ``key`` (one file per camera kept open)."""
        cached = self._videos.get(key)
        if cached is not None and cached[0] == path:
            return cached[1]
        if cached is not None:
            cached[1].close()
            del self._videos[key]
        container = av.open(str(path))
        self._videos[key] = (path, container)
        return container

    def _frames(self, episode: dict[str, Any], key: str, timestamps: np.ndarray, decode_images: bool) -> np.ndarray:
        """For each frame the video frame nearest its timestamp (within the tolerance), as JPEG bytes
        (object array ``[T]``); without ``decode_images`` zeros ``[T, H, W, 3]`` of the video's size."""
        video_file, offset = self._video_file(episode, key)
        path = self.root / video_file
        if not path.is_file():
            raise EpisodeError(f"missing video file {video_file} (camera {key!r})")
        queries = offset + timestamps
        low, high = float(queries.min()) - TOLERANCE_S, float(queries.max()) + TOLERANCE_S
        try:
            container = self._container(key, path)
            stream = container.streams.video[0]
            times, images = _read_video(container, stream, low, high, decode_images)
            size = (stream.codec_context.height, stream.codec_context.width, 3)
        except (av.FFmpegError, IndexError, OSError) as exc:
            self._videos.pop(key, (None, None))
            raise EpisodeError(f"unreadable video file {video_file} ({type(exc).__name__}: {exc})") from exc
        order = np.argsort(times, kind="stable")
        times = np.asarray(times, dtype=np.float64)[order]
        nearest = _nearest(times, queries)
        bad = np.flatnonzero(np.abs(times[nearest] - queries) >= TOLERANCE_S) if len(times) else np.arange(len(queries))
        if len(bad):
            t = int(bad[0])
            found = f"{len(times)} frames between {times[0]:.4f} s and {times[-1]:.4f} s" if len(times) else "no frames"
            raise EpisodeError(
                f"video file {video_file} (camera {key!r}) has no frame within {TOLERANCE_S} s of timestamp "
                f"{queries[t]:.4f} s (frame {t} of {len(queries)}); it has {found} for this episode"
            )
        if not decode_images:
            return np.broadcast_to(np.zeros((), dtype=np.uint8), (len(queries), *size))
        frames = np.empty(len(queries), dtype=object)
        frames[:] = [images[i] for i in order[nearest]]
        return frames


def _read_video(container: Any, stream: Any, low: float, high: float, decode: bool) -> tuple[list[float], list]:
    """Presentation times (s) of the frames in ``[low, high]``, and the frames as JPEG bytes if ``decode``.

    Seeks to the key frame at or before ``low`` first; without ``decode`` only packets are read.
    """
    time_base = stream.time_base
    container.seek(max(0, math.floor(low / time_base)), stream=stream, backward=True, any_frame=False)
    times: list[float] = []
    images: list[bytes] = []
    if decode:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * time_base)
            if t > high:
                break
            if t >= low:
                times.append(t)
                images.append(to_jpeg(frame.to_ndarray(format="rgb24")))
    else:
        for packet in container.demux(stream):
            if packet.dts is not None and float(packet.dts * time_base) > high:
                break  # pts >= dts: nothing later is in range
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * time_base)
            if low <= t <= high:
                times.append(t)
    return times, images


def _nearest(times: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest time (sorted ``times``) for every query."""
    if not len(times):
        return np.zeros(len(queries), dtype=np.int64)
    right = np.clip(np.searchsorted(times, queries), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    return np.where(np.abs(times[left] - queries) <= np.abs(times[right] - queries), left, right)


def _array(column: pa.ChunkedArray, length: int) -> np.ndarray:
    """A numeric (list) column as ``[T, ...]`` (nulls become NaN, caught by the finiteness checks)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    depth = 0
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
        depth += 1
    values = array.to_numpy(zero_copy_only=False)
    if values.dtype == object:
        values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return values.reshape(length, -1) if depth else values


def _image_bytes(column: pa.ChunkedArray, root: Path) -> np.ndarray:
    """Encoded images of an ``image`` feature (Hugging Face ``{bytes, path}`` structs) as an object array."""
    items = column.to_pylist()
    out = np.empty(len(items), dtype=object)
    for t, item in enumerate(items):
        data = item.get("bytes") if isinstance(item, dict) else item
        if not data and isinstance(item, dict) and item.get("path") and (root / item["path"]).is_file():
            data = (root / item["path"]).read_bytes()
        out[t] = bytes(data or b"")
    return out
