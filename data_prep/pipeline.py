"""The one-time conversion: RLDS or LeRobot -> statistics -> normalized WebDataset shards (docs/contracts.md).

The episode source is pluggable: :class:`data_prep.rlds_reader.RLDSSource` (tfds builder
directories, TensorFlow) or :class:`data_prep.lerobot_reader.LeRobotSource` (LeRobotDataset
directories, no TensorFlow); both yield the step-batched episodes that the registry's
``standardize`` consumes, and each is imported only when used.

Two passes over the source. The scan pass standardizes every episode of every split, computes
the statistics (written first) and plans which consecutive episodes go to which shard (by
estimated bytes), saved in ``_progress/plan.json``. The write pass normalizes and writes the
planned shards; each finished shard is recorded in ``_progress/part-<i>-of-<n>.json`` so a re-run
skips it, and ``manifest.json`` is written once every planned shard is recorded. Output depends
only on the source and the options, so an interrupted run resumes to identical bytes and
``shard_index`` / ``num_shards`` can split the write pass across machines.

OpenVLA's data filters, in its order (``rlds/dataset.py``: statistics over every episode of every
split, then normalization, then ``apply_trajectory_transforms`` filters, then the per-dataset frame
filter): statistics cover every standardized episode; then an episode is skipped when no step has an
instruction (``skip_unlabeled``), when any normalized |action| > ``max_action`` or any normalized
|proprio| > ``max_proprio``; then, for registry entries with ``zero_action_dims`` (DROID), every
transition whose normalized action equals the normalized zero in those dims is dropped. Skipped
episodes are listed with their reason in the manifest, dropped transitions counted per split.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from vla.contract.normalization import NORMALIZATION_KINDS, normalize
from vla.data.registry import DatasetConfig, EpisodeError, StandardEpisode, get_dataset_config
from vla.atomic import write_json_atomic
from vla.data.shards import FORMAT_VERSION, MANIFEST_FILE, encode_sample, file_sha256, sample_key, write_shard
from vla.data.statistics import compute_statistics, load_statistics, write_statistics

PROGRESS_DIR = "_progress"
PLAN_FILE = "plan.json"
SCAN_CHUNK_EPISODES = 16
_TAR_BYTES_PER_MEMBER = 768  # header (512) + average padding


@dataclass(frozen=True)
class SplitSource:
    """An output split = episodes ``[start, stop)`` of a source split."""

    name: str
    source_split: str
    start: int
    stop: int


def plan_splits(sizes: dict[str, int]) -> list[SplitSource]:
    """Source splits as they are; without ``val``, train is split 95/5 like tfds ``train[:95%]``."""
    if "train" not in sizes:
        raise ValueError(f"source has no 'train' split (have {sorted(sizes)})")
    if "val" in sizes:
        return [SplitSource(name, name, 0, n) for name, n in sizes.items()]
    n = sizes["train"]
    cut = round(95 * n / 100)  # tfds percent slicing rounds to the closest boundary
    rest = [SplitSource(name, name, 0, count) for name, count in sizes.items() if name != "train"]
    return [SplitSource("train", "train", 0, cut), SplitSource("val", "train", cut, n), *rest]


# === Episode sources ===

SOURCE_FORMATS = ("rlds", "lerobot")


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to open the source: its format, resolved path and registry dataset name."""

    format: str
    path: str
    dataset: str


class EpisodeSource(Protocol):
    """One opened source; see :class:`data_prep.rlds_reader.RLDSSource`."""

    def split_sizes(self) -> dict[str, int]: ...

    def image_shapes(self) -> dict[str, tuple]: ...

    def read_episodes(
        self, split: str, start: int, stop: int, decode_images: bool = True
    ) -> Iterator[tuple[dict, dict | EpisodeError]]: ...


def detect_format(source: str | Path) -> str:
    """``lerobot`` for a LeRobotDataset directory (``meta/info.json``), else ``rlds``."""
    return "lerobot" if (Path(source) / "meta" / "info.json").is_file() else "rlds"


# === Worker side (runs in pool processes; opens the source once per process) ===

_SOURCES: dict[SourceSpec, Any] = {}


def _source(spec: SourceSpec) -> EpisodeSource:
    if spec not in _SOURCES:
        if spec.format == "lerobot":
            from data_prep.lerobot_reader import LeRobotSource

            _SOURCES[spec] = LeRobotSource(spec.path, spec.dataset, get_dataset_config(spec.dataset))
        else:
            from data_prep.rlds_reader import RLDSSource

            _SOURCES[spec] = RLDSSource(spec.path, spec.dataset)
    return _SOURCES[spec]


def _dataset_config(spec: SourceSpec) -> DatasetConfig:
    """The registry entry, with its camera views resolved for a LeRobot source (RLDS: not opened)."""
    if spec.format == "lerobot":
        return _source(spec).config  # type: ignore[attr-defined]
    return get_dataset_config(spec.dataset)


def _standard_episodes(
    spec: SourceSpec, split: SplitSource, first: int, stop: int, decode_images: bool = True
) -> Iterator[tuple[int, dict, StandardEpisode | EpisodeError]]:
    """``(episode_index, metadata, episode or its error)`` for output-split indices ``first..stop-1``.

    ``decode_images=False`` (scan pass) lets a source skip pixel decoding that the checks and the
    size estimate do not need (LeRobot video frames: timestamps and sizes come from the packets).
    """
    source, config, dataset = _source(spec), _dataset_config(spec), spec.dataset
    shapes = source.image_shapes()
    records = source.read_episodes(split.source_split, split.start + first, split.start + stop, decode_images)
    for index, (metadata, raw) in zip(range(first, stop), records, strict=True):
        source_ids = f"file_path={metadata.get('file_path')!r}, episode_id={metadata.get('episode_id')!r}"
        where = f"{dataset} {split.name} episode {index} ({source_ids})"
        if isinstance(raw, EpisodeError):
            yield index, metadata, EpisodeError(f"{where}: {raw}")
            continue
        try:
            yield index, metadata, config.standardize(raw, where, shapes)
        except EpisodeError as error:
            yield index, metadata, error


ZERO_ACTION_ATOL = 1e-5  # OpenVLA's zero_action_filter: kept when any |a - normalized_zero| > 1e-5


def zero_action_keep(actions: np.ndarray, action_stats: dict, normalization: str, dims: tuple[int, ...]) -> np.ndarray:
    """Which transitions OpenVLA's DROID ``zero_action_filter`` keeps: ``actions`` are normalized
    ``[T, A]``; a transition is dropped when in every one of ``dims`` it is within 1e-5 of the
    normalized zero action (OpenVLA hard-codes DROID's q01/q99; here the dataset's own statistics)."""
    if not dims:
        return np.ones(len(actions), dtype=bool)
    dims_ = list(dims)
    zero = normalize(np.zeros((1, actions.shape[-1]), np.float32), action_stats, kind=normalization)
    return np.any(np.abs(actions[:, dims_] - zero[:, dims_]) > ZERO_ACTION_ATOL, axis=1)


def _has_text(instruction: str) -> bool:
    return bool(instruction.strip())  # the prompt builder rejects whitespace-only instructions too


def _scan_task(task: tuple[SourceSpec, SplitSource, int, int, int]) -> list[dict[str, Any]]:
    """Standardize a chunk of episodes; keep what statistics and shard planning need."""
    spec, split, first, stop, num_views = task
    summaries = []
    for index, _, episode in _standard_episodes(spec, split, first, stop, decode_images=False):
        if isinstance(episode, EpisodeError):
            summaries.append({"split": split.name, "episode_index": index, "error": str(episode)})
            continue
        labelled = [_has_text(s) for s in episode.instructions]
        if any(labelled) and not all(labelled):
            # OpenVLA keeps such an episode and its unlabelled steps; our prompt builder rejects them
            empty = [t for t, ok in enumerate(labelled) if not ok]
            message = f"{split.name} episode {index}: empty instruction at steps {empty} (others labelled)"
            summaries.append({"split": split.name, "episode_index": index, "error": message})
            continue
        image_bytes = sum(
            len(im) if isinstance(im, bytes) else np.asarray(im).nbytes // 10
            for ims in episode.images.values()
            for im in ims
        )
        summaries.append(
            {
                "split": split.name,
                "episode_index": index,
                "actions": episode.actions,
                "proprio": episode.proprio,
                "unlabelled": not any(labelled),
                "estimated_bytes": image_bytes + len(episode) * (4 + num_views) * _TAR_BYTES_PER_MEMBER,
            }
        )
    return summaries


def _write_task(task: tuple[SourceSpec, SplitSource, dict, dict, str, str]) -> dict[str, Any]:
    """Write one planned shard (normalized actions/proprio, images, instruction, meta)."""
    spec, split, shard, statistics, normalization, out = task
    dataset = spec.dataset
    first, stop = shard["episodes"]
    skip = set(shard["skipped"])
    zero_dims = _dataset_config(spec).zero_action_dims

    def samples() -> Iterator[dict[str, bytes]]:
        for index, metadata, episode in _standard_episodes(spec, split, first, stop):
            if index in skip:
                continue
            if isinstance(episode, EpisodeError):
                raise episode
            actions = normalize(episode.actions, statistics["action"], kind=normalization)
            proprio = normalize(episode.proprio, statistics["proprio"], kind=normalization)
            keep = zero_action_keep(actions, statistics["action"], normalization, zero_dims)
            for t in np.flatnonzero(keep).tolist():  # timesteps keep their source index
                meta = {
                    "dataset": dataset,
                    "split": split.name,
                    "episode_index": index,
                    "timestep": t,
                    "file_path": metadata.get("file_path"),
                    "episode_id": metadata.get("episode_id"),
                }
                images = {view: frames[t] for view, frames in episode.images.items()}
                yield encode_sample(sample_key(index, t), actions[t], proprio[t], images, episode.instructions[t], meta)

    entry = write_shard(Path(out) / shard["file"], samples())
    if entry["num_samples"] != shard["num_samples"]:
        raise RuntimeError(f"{shard['file']}: wrote {entry['num_samples']} samples, planned {shard['num_samples']}")
    return entry


def _run(
    fn: Callable[[Any], Any], tasks: list[Any], num_workers: int, desc: str, unit_sizes: list[int]
) -> Iterator[Any]:
    """Map in order, in-process (``num_workers == 0``) or over a spawn pool (TensorFlow and FFmpeg dislike fork)."""
    bar = tqdm(total=sum(unit_sizes), desc=desc, unit="ep")
    if num_workers == 0 or not tasks:
        results: Iterable[Any] = map(fn, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(num_workers)
        results = pool.imap(fn, tasks)
    try:
        for size, result in zip(unit_sizes, results, strict=True):
            bar.update(size)
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


# === Orchestration ===


def _scan(
    spec: SourceSpec,
    config: DatasetConfig,
    splits: list[SplitSource],
    options: dict[str, Any],
    num_workers: int,
    out: Path,
) -> dict[str, Any]:
    """Scan pass: statistics file + shard plan."""
    dataset = spec.dataset
    tasks = [
        (
            spec,
            split,
            first,
            min(first + SCAN_CHUNK_EPISODES, split.stop - split.start),
            len(config.image_views),
        )
        for split in splits
        for first in range(0, split.stop - split.start, SCAN_CHUNK_EPISODES)
    ]
    summaries = [
        s
        for chunk in _run(_scan_task, tasks, num_workers, f"scan {dataset}", [t[3] - t[2] for t in tasks])
        for s in chunk
    ]
    bad = [s for s in summaries if "error" in s]
    if bad and not options["skip_bad_episodes"]:
        raise EpisodeError(f"{bad[0]['error']} ({len(bad)} bad episode(s); set skip_bad_episodes=true to skip them)")
    good = [s for s in summaries if "error" not in s]
    statistics = compute_statistics(
        [s["actions"] for s in good], [s["proprio"] for s in good], config.action_normalization_mask
    )
    sha = write_statistics(out, dataset, statistics)
    # OpenVLA filters after statistics, on the normalized values (the write pass reads the same file)
    _apply_filters(good, load_statistics(out, sha)[dataset], options, config.zero_action_dims)
    target_bytes = options["shard_size_mb"] * 2**20
    plan_splits_ = {}
    dropped: dict[str, int] = {}
    for split in splits:
        mine = [s for s in summaries if s["split"] == split.name]
        kept = [s for s in mine if "error" not in s]
        plan_splits_[split.name] = {
            "source": [split.source_split, split.start, split.stop],
            "num_episodes": len(kept),
            "num_transitions": sum(s["num_samples"] for s in kept),
            "shards": _plan_shards(split.name, mine, target_bytes),
        }
        dropped[split.name] = sum(s.get("zero_action_dropped", 0) for s in mine)
    plan = {
        "options": options,
        "statistics_sha256": sha,
        "splits": plan_splits_,
        "skipped_episodes": [
            {"split": s["split"], "episode_index": s["episode_index"], "reason": s["error"]}
            for s in summaries
            if "error" in s
        ],
    }
    if config.zero_action_dims:  # only entries with the filter carry the count (others stay byte-identical)
        plan["filtered_transitions"] = {"zero_action": dropped}
    return plan


def _apply_filters(
    summaries: list[dict[str, Any]], statistics: dict[str, Any], options: dict[str, Any], zero_dims: tuple[int, ...]
) -> None:
    """Mark episodes skipped by OpenVLA's filters (``error`` = the reason) and count kept transitions."""
    kind = options["normalization"]
    max_action, max_proprio = options.get("max_action"), options.get("max_proprio")
    for s in summaries:
        s["num_samples"] = len(s["actions"])
        if s.pop("unlabelled"):
            s["error"] = "empty instruction (OpenVLA skip_unlabeled)"
            continue
        actions = normalize(s["actions"], statistics["action"], kind=kind)
        if max_action is not None:
            peak = float(np.max(np.abs(actions)))
            if not peak <= max_action:  # NaN-safe, like OpenVLA's reduce_all(|a| <= max)
                s["error"] = f"max_action: normalized |action| reaches {peak:.6g} > {max_action}"
                continue
        if max_proprio is not None and s["proprio"].shape[-1]:
            peak = float(np.max(np.abs(normalize(s["proprio"], statistics["proprio"], kind=kind))))
            if not peak <= max_proprio:
                s["error"] = f"max_proprio: normalized |proprio| reaches {peak:.6g} > {max_proprio}"
                continue
        if zero_dims:
            kept = int(zero_action_keep(actions, statistics["action"], kind, zero_dims).sum())
            s["zero_action_dropped"] = s["num_samples"] - kept
            s["num_samples"] = kept
            if not kept:
                s["error"] = f"zero_action: all {len(s['actions'])} transitions have a zero action"


def _plan_shards(split: str, summaries: list[dict[str, Any]], target_bytes: float) -> list[dict[str, Any]]:
    """Group consecutive episodes until a shard's estimated size reaches ``target_bytes``."""
    shards: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    size = 0
    for s in summaries:
        if current is None:
            current = {
                "file": f"{split}-{len(shards):06d}.tar",
                "episodes": [s["episode_index"], s["episode_index"] + 1],
                "skipped": [],
                "num_samples": 0,
            }
            size = 0
        current["episodes"][1] = s["episode_index"] + 1
        if "error" in s:
            current["skipped"].append(s["episode_index"])
        else:
            current["num_samples"] += s["num_samples"]
            size += s["estimated_bytes"] * s["num_samples"] // len(s["actions"])
        if size >= target_bytes:
            shards.append(current)
            current = None
    if current is not None and current["num_samples"]:
        shards.append(current)
    return [shard for shard in shards if shard["num_samples"]]


def _load_or_make_plan(
    spec: SourceSpec, config: DatasetConfig, options: dict[str, Any], num_workers: int, out: Path
) -> dict[str, Any]:
    plan_path = out / PROGRESS_DIR / PLAN_FILE
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan["options"] != options:
            raise ValueError(
                f"{out} was prepared with options {plan['options']}, now {options}; use a fresh output directory"
            )
        load_statistics(out, plan["statistics_sha256"])  # missing or changed statistics -> clear error
        return plan
    splits = plan_splits(_source(spec).split_sizes())
    plan = _scan(spec, config, splits, options, num_workers, out)
    write_json_atomic(plan_path, plan, sort_keys=True)
    return plan


def _recorded_shards(progress: Path) -> dict[str, dict[str, Any]]:
    """Finished shards recorded by any machine's part file."""
    done: dict[str, dict[str, Any]] = {}
    for part in sorted(progress.glob("part-*.json")):
        done.update(json.loads(part.read_text()))
    return done


def prepare(
    dataset: str,
    source: str | Path,
    out: str | Path,
    normalization: str = "bounds_q99",
    shard_size_mb: float = 256,
    num_workers: int = 0,
    skip_bad_episodes: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    format: str = "auto",
    max_action: float | None = None,
    max_proprio: float | None = None,
) -> Path:
    """Convert a source into a prepared directory at ``out``; return it.

    ``format``: ``rlds`` (``source`` holds ``<dataset>/<version>``, a tfds builder directory),
    ``lerobot`` (``source`` is a LeRobotDataset directory with ``meta/info.json``) or ``auto`` (LeRobot
    when ``<source>/meta/info.json`` exists). Re-running resumes (finished shards are kept); with
    ``num_shards > 1`` this call writes only the shards ``k`` with ``k % num_shards == shard_index``
    and the manifest appears once all parts are done. ``max_action`` / ``max_proprio`` (OpenVLA's
    ``apply_trajectory_transforms`` options; None = no filter) skip episodes whose normalized
    |action| / |proprio| exceeds the bound anywhere.
    """
    config = get_dataset_config(dataset)
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f"unknown source format {format!r}; choose auto or one of {SOURCE_FORMATS}")
    if fmt != config.source_format:
        raise ValueError(
            f"dataset {dataset!r} is a registry entry for {config.source_format} sources, but {source} is read as "
            f"{fmt} (format={format}); for a LeRobot dataset use dataset=lerobot or another LeRobot entry"
        )
    if normalization.lower() not in NORMALIZATION_KINDS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATION_KINDS}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got {shard_index}")
    if shard_size_mb <= 0 or num_workers < 0:
        raise ValueError(f"shard_size_mb must be > 0 and num_workers >= 0 (got {shard_size_mb}, {num_workers})")
    spec, out = SourceSpec(fmt, str(Path(source).resolve()), dataset), Path(out)
    options = {
        "dataset": dataset,
        "normalization": normalization.lower(),
        "shard_size_mb": shard_size_mb,
        "skip_bad_episodes": skip_bad_episodes,
    }
    if fmt != "rlds":  # RLDS plans keep their original options, so their resume check is unchanged
        options["format"] = fmt
    for name, bound in (("max_action", max_action), ("max_proprio", max_proprio)):
        if bound is not None:  # recorded only when set, so unfiltered plans are unchanged
            if not float(bound) > 0:
                raise ValueError(f"{name} must be > 0 or null, got {bound}")
            options[name] = float(bound)
    if (out / MANIFEST_FILE).is_file():
        finished = json.loads((out / MANIFEST_FILE).read_text())
        if (finished["dataset"], finished["normalization"]) != (dataset, options["normalization"]):
            raise ValueError(
                f"{out} already holds {finished['dataset']} ({finished['normalization']}); use a fresh output directory"
            )
        return out
    progress = out / PROGRESS_DIR
    progress.mkdir(parents=True, exist_ok=True)
    config = _dataset_config(spec)
    plan = _load_or_make_plan(spec, config, options, num_workers, out)
    statistics = load_statistics(out, plan["statistics_sha256"])[dataset]

    part_path = progress / f"part-{shard_index}-of-{num_shards}.json"
    done = json.loads(part_path.read_text()) if part_path.is_file() else {}
    all_shards = [(name, shard) for name, split in plan["splits"].items() for shard in split["shards"]]
    todo = []
    for k, (name, shard) in enumerate(all_shards):
        recorded = done.get(shard["file"])
        if k % num_shards != shard_index or (
            recorded and (out / shard["file"]).is_file() and file_sha256(out / shard["file"]) == recorded["sha256"]
        ):
            continue
        source_split, start, stop = plan["splits"][name]["source"]
        todo.append(
            (
                spec,
                SplitSource(name, source_split, start, stop),
                shard,
                statistics,
                options["normalization"],
                str(out),
            )
        )
    for entry in _run(
        _write_task, todo, num_workers, f"write {dataset}", [t[2]["episodes"][1] - t[2]["episodes"][0] for t in todo]
    ):
        done[entry["file"]] = entry
        write_json_atomic(part_path, done, sort_keys=True)

    if spec.format == "lerobot" and spec in _SOURCES:  # cheap to reopen: close its files now
        _SOURCES.pop(spec).close()
    recorded = _recorded_shards(progress)
    if all(shard["file"] in recorded for _, shard in all_shards):
        _write_manifest(out, dataset, config, plan, recorded)
    return out


def _write_manifest(
    out: Path, dataset: str, config: DatasetConfig, plan: dict[str, Any], recorded: dict[str, dict[str, Any]]
) -> None:
    splits = {
        name: {
            "num_episodes": split["num_episodes"],
            "num_transitions": split["num_transitions"],
            "shards": [recorded[shard["file"]] for shard in split["shards"]],
        }
        for name, split in plan["splits"].items()
    }
    write_json_atomic(
        out / MANIFEST_FILE,
        {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "normalization": plan["options"]["normalization"],
            "statistics_sha256": plan["statistics_sha256"],
            "image_views": list(config.image_views),
            "splits": splits,
            "skipped_episodes": plan["skipped_episodes"],
            **({"filtered_transitions": plan["filtered_transitions"]} if "filtered_transitions" in plan else {}),
            "complete": True,
        },
        sort_keys=True,
    )
