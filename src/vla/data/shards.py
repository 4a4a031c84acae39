"""Prepared-dataset shards (contract S2): deterministic WebDataset tar writing and reader-side checks.

Writing: :func:`encode_sample` builds one transition's tar members, :func:`write_shard` writes a
tar under a temporary name with fixed member metadata (so a re-run yields identical bytes) and
renames it when complete. Reading: :func:`load_prepared` loads and checks ``manifest.json`` +
``dataset_statistics.json``; :func:`verify_shard` detects corrupt or truncated shards;
:func:`decode_sample` turns a WebDataset sample dict into arrays (``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vla.data.statistics import load_statistics

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_QUALITY = 95


class CorruptShardError(ValueError):
    """A shard whose bytes do not match the manifest (truncated, damaged or replaced)."""


# === Writing ===


def to_jpeg(image: bytes | np.ndarray) -> bytes:
    """Source JPEG bytes pass through unchanged; other encodings and raw arrays are JPEG-encoded once."""
    if isinstance(image, bytes | np.bytes_) and bytes(image[:3]) == JPEG_MAGIC:
        return bytes(image)
    pixels = (
        Image.open(io.BytesIO(bytes(image))).convert("RGB")
        if isinstance(image, bytes | np.bytes_)
        else Image.fromarray(np.asarray(image))
    )
    out = io.BytesIO()
    pixels.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return out.getvalue()


def sample_key(episode_index: int, timestep: int) -> str:
    return f"{episode_index:06d}_{timestep:04d}"


def encode_sample(
    key: str,
    action: np.ndarray,
    proprio: np.ndarray,
    images: dict[str, bytes | np.ndarray],
    instruction: str,
    meta: dict[str, Any],
) -> dict[str, bytes]:
    """One transition as WebDataset members (``{extension: bytes}`` plus ``__key__``)."""
    sample = {"__key__": key.encode(), "action.npy": _npy(action), "proprio.npy": _npy(proprio)}
    for view, image in images.items():
        sample[f"image_{view}.jpg"] = to_jpeg(image)
    sample["instruction.txt"] = instruction.encode("utf-8")
    sample["meta.json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return sample


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, samples: Iterable[dict[str, bytes]]) -> dict[str, Any]:
    """Write a tar at ``path`` via ``path.tmp`` + rename; return its manifest entry.

    Members get mtime 0, root ownership and mode 0644, so equal samples give byte-identical shards.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"].decode()
            for extension, data in sample.items():
                if extension == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
            count += 1
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"file": path.name, "num_samples": count, "sha256": file_sha256(path)}


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


# === Reading ===


@dataclass(frozen=True)
class PreparedDataset:
    """A loaded, checked prepared-dataset directory."""

    root: Path
    dataset: str
    normalization: str
    statistics: dict[str, Any]  # the whole dataset_statistics.json ({dataset: {...}})
    image_views: tuple[str, ...]
    splits: dict[str, dict[str, Any]]  # split -> {"num_episodes", "num_transitions", "shards": [...]}

    def shard_paths(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise KeyError(f"{self.root} has no split {split!r} (have {sorted(self.splits)})")
        return [self.root / shard["file"] for shard in self.splits[split]["shards"]]

    def verify(self) -> None:
        """Hash every shard against the manifest (reads all bytes once)."""
        for split in self.splits.values():
            for shard in split["shards"]:
                verify_shard(self.root / shard["file"], shard["sha256"], shard["num_samples"])


def load_prepared(directory: str | Path) -> PreparedDataset:
    """Load ``manifest.json`` and the statistics it pins; raise a clear error for anything missing."""
    root = Path(directory)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"missing {manifest_path}: not a prepared dataset, or data_prep has not finished")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    if manifest.get("complete") is not True:
        raise ValueError(f"{manifest_path}: preparation incomplete; re-run data_prep to resume")
    statistics = load_statistics(root, manifest["statistics_sha256"])
    if manifest["dataset"] not in statistics:
        raise ValueError(f"{root}/dataset_statistics.json has no entry for {manifest['dataset']!r}")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if not (root / shard["file"]).is_file():
                raise FileNotFoundError(f"missing shard {root / shard['file']} listed in {manifest_path}")
    return PreparedDataset(
        root=root,
        dataset=manifest["dataset"],
        normalization=manifest["normalization"],
        statistics=statistics,
        image_views=tuple(manifest["image_views"]),
        splits=manifest["splits"],
    )


def verify_shard(path: str | Path, expected_sha256: str, expected_samples: int | None = None) -> None:
    """Raise :class:`CorruptShardError` (naming the file) if the shard's bytes or sample count are off."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing shard {path}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CorruptShardError(f"shard {path} is corrupt or truncated: sha256 {actual} != manifest {expected_sha256}")
    if expected_samples is not None:
        count = sum(1 for _ in iter_shard(path))
        if count != expected_samples:
            raise CorruptShardError(f"shard {path} holds {count} samples, manifest says {expected_samples}")


def iter_shard(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Samples of one shard as WebDataset-style dicts (``__key__`` + ``{extension: bytes}``)."""
    path = Path(path)
    current: dict[str, bytes] = {}
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if current and current["__key__"] != key.encode():
                    yield current
                    current = {}
                current["__key__"] = key.encode()
                current[extension] = tar.extractfile(member).read()
            raw.seek(tar.offset)
            end = raw.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptShardError(f"shard {path} is corrupt or truncated ({exc})") from exc
    # tarfile stops quietly at a cut-off header; a complete tar ends in >= 2 zero blocks.
    if len(end) < 2 * tarfile.BLOCKSIZE or end.strip(b"\0"):
        raise CorruptShardError(f"shard {path} is truncated (no end-of-archive marker)")
    if current:
        yield current


def decode_sample(sample: dict[str, bytes]) -> dict[str, Any]:
    """Arrays, text and metadata of one sample; image members stay JPEG bytes."""
    decoded: dict[str, Any] = {"__key__": _str(sample["__key__"])}
    for extension, data in sample.items():
        if extension.endswith(".npy"):
            decoded[extension[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
        elif extension == "instruction.txt":
            decoded["instruction"] = _str(data)
        elif extension == "meta.json":
            decoded["meta"] = json.loads(data)
        elif extension.endswith(".jpg"):
            decoded[extension[: -len(".jpg")]] = bytes(data)
    return decoded


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
