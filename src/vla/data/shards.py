"""The prepared-shard format in one place: member names, writer, reader and checks.

Format: docs/contracts.md, "Prepared shards". Writing: :func:`encode_sample` builds one
transition's tar members, :func:`write_shard` writes a tar atomically with fixed member metadata
(so a re-run yields identical bytes). Reading: :func:`load_prepared` loads and checks
``manifest.json`` + ``dataset_statistics.json``; :func:`iter_shard` yields raw samples and detects
truncation; :func:`verify_shard` checks a shard against its manifest hash; the ``read_*``
functions decode single members (``allow_pickle=False``), :func:`decode_sample` a whole sample, and
:func:`check_normalized_action` rejects actions that normalization cannot have produced.
The readers take a local path or an fsspec URL (:mod:`vla.data.locations`); writing is local only.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from vla.atomic import atomic_write
from vla.contract.images import JPEG_QUALITY, decode_jpeg
from vla.data.locations import Location, UrlPath, as_location, missing_files
from vla.data.statistics import load_statistics

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
JPEG_MAGIC = b"\xff\xd8\xff"
# Tar members of one sample (``<key>.<member>``).
ACTION_MEMBER = "action.npy"
PROPRIO_MEMBER = "proprio.npy"
INSTRUCTION_MEMBER = "instruction.txt"
META_MEMBER = "meta.json"
# Normalization kinds that map (masked) dimensions into [-1, 1]; ``normal`` has no bound.
BOUNDED_NORMALIZATIONS = ("bounds_q99", "bounds")
# Slack for float rounding when checking that a bounded dimension lies in [-1, 1].
RANGE_TOLERANCE = 1e-5


def image_member(view: str) -> str:
    """The member holding a camera view's JPEG (``image_primary.jpg``, ``image_wrist.jpg``, ...)."""
    return f"image_{view}.jpg"


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
    sample = {"__key__": key.encode(), ACTION_MEMBER: _npy(action), PROPRIO_MEMBER: _npy(proprio)}
    for view, image in images.items():
        sample[image_member(view)] = to_jpeg(image)
    sample[INSTRUCTION_MEMBER] = instruction.encode("utf-8")
    sample[META_MEMBER] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return sample


def file_sha256(path: str | Path | UrlPath) -> str:
    path = as_location(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        if isinstance(path, UrlPath):  # backends' network errors rarely say which object they were reading
            err.add_note(f"while hashing {path}")
        raise
    return digest.hexdigest()


def write_shard(path: Path, samples: Iterable[dict[str, bytes]]) -> dict[str, Any]:
    """Write a tar at ``path`` atomically (fsynced before the rename); return its manifest entry.

    Members get mtime 0, root ownership and mode 0644, so equal samples give byte-identical shards.
    """
    path = Path(path)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
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

    atomic_write(path, write, fsync=True)
    return {"file": path.name, "num_samples": count, "sha256": file_sha256(path)}


# === Reading ===


@dataclass(frozen=True)
class PreparedDataset:
    """A loaded, checked prepared-dataset directory (local, or a URL: see :mod:`vla.data.locations`)."""

    root: Location
    dataset: str
    normalization: str
    statistics: dict[str, Any]  # the whole dataset_statistics.json ({dataset: {...}})
    image_views: tuple[str, ...]
    splits: dict[str, dict[str, Any]]  # split -> {"num_episodes", "num_transitions", "shards": [...]}

    def shard_paths(self, split: str) -> list[Location]:
        if split not in self.splits:
            raise KeyError(f"{self.root} has no split {split!r} (have {sorted(self.splits)})")
        return [self.root / shard["file"] for shard in self.splits[split]["shards"]]

    def bounded_action_dims(self) -> np.ndarray:
        """Boolean ``[A]``: action dimensions that normalization clipped into [-1, 1] (none under ``normal``).

        A value outside [-1, 1] there cannot come from data_prep, so readers treat it as corruption.
        """
        stats = self.statistics[self.dataset]["action"]
        mask = np.asarray(stats.get("mask", [True] * len(stats["q01"])), dtype=bool)
        return mask if self.normalization in BOUNDED_NORMALIZATIONS else np.zeros_like(mask)

    def proprio_dim(self) -> int:
        """Size P of the dataset's proprio, 0 when it has none.

        data_prep stores zeros (and so all-zero statistics) for sources without state, as OpenVLA
        does, so an all-zero ``proprio`` statistics entry means "no proprio"; every shard still
        holds a ``proprio.npy`` member.
        """
        stats = self.statistics[self.dataset].get("proprio")
        if not stats:
            return 0
        values = np.asarray([stats[key] for key in ("mean", "std", "min", "max")], dtype=np.float64)
        return 0 if values.size == 0 or not values.any() else values.shape[1]

    def verify(self) -> None:
        """Hash every shard against the manifest (reads all bytes once)."""
        for split in self.splits.values():
            for shard in split["shards"]:
                verify_shard(self.root / shard["file"], shard["sha256"], shard["num_samples"])


def load_prepared(directory: str | Path | UrlPath) -> PreparedDataset:
    """Load ``manifest.json`` and the statistics it pins; raise a clear error for anything missing.

    ``directory`` may be a URL (``s3://bucket/oxe/bridge_orig``): the files are read through fsspec.
    """
    root = as_location(directory)
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
    shard_files = [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]
    missing = missing_files(root, shard_files)
    if missing:
        raise FileNotFoundError(f"missing shard {root / missing[0]} listed in {manifest_path}")
    return PreparedDataset(
        root=root,
        dataset=manifest["dataset"],
        normalization=manifest["normalization"],
        statistics=statistics,
        image_views=tuple(manifest["image_views"]),
        splits=manifest["splits"],
    )


def verify_shard(path: str | Path | UrlPath, expected_sha256: str, expected_samples: int | None = None) -> None:
    """Raise :class:`CorruptShardError` (naming the file) if the shard's bytes or sample count are off."""
    path = as_location(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing shard {path}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CorruptShardError(f"shard {path} is corrupt or truncated: sha256 {actual} != manifest {expected_sha256}")
    if expected_samples is not None:
        count = sum(1 for _ in iter_shard(path))
        if count != expected_samples:
            raise CorruptShardError(f"shard {path} holds {count} samples, manifest says {expected_samples}")


def iter_shard(path: str | Path | UrlPath) -> Iterator[dict[str, bytes]]:
    """Samples of one shard as WebDataset-style dicts (``__key__`` + ``{extension: bytes}``).

    A URL shard is streamed (fsspec's read-ahead file, members read in order), never copied to disk.
    """
    path = as_location(path)
    current: dict[str, bytes] = {}
    try:
        with path.open("rb") as raw:
            for name, read in _tar_members(raw):
                key, _, extension = name.partition(".")
                if current and current["__key__"] != key.encode():
                    yield current
                    current = {}
                current["__key__"] = key.encode()
                current[extension] = read()
            end = raw.read()
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptShardError(f"shard {path} is corrupt or truncated ({exc})") from exc
    except OSError as exc:
        if isinstance(path, UrlPath):  # network, credentials or a vanished object: not damage, so not "corrupt"
            exc.add_note(f"while reading shard {path}")
            raise
        raise CorruptShardError(f"shard {path} is corrupt or truncated ({exc})") from exc
    # tarfile stops quietly at a cut-off header; a complete tar ends in >= 2 zero blocks.
    if len(end) < 2 * tarfile.BLOCKSIZE or end.strip(b"\0"):
        raise CorruptShardError(f"shard {path} is truncated (no end-of-archive marker)")
    if current:
        yield current


# A POSIX ustar regular-file header as write_shard writes it: its size field and, below, its checksum field.
_USTAR_MAGIC = b"ustar\x0000"
_OCTAL_SIZE = re.compile(rb"[0-7]{11}\x00")


def _plain_member(header: bytes) -> tuple[str, int] | None:
    """(name, size) from a header of the kind :func:`write_shard` writes (POSIX ustar, regular file, ASCII name
    without prefix, intact checksum); None for anything else, which tarfile then reads and judges."""
    if (len(header) != tarfile.BLOCKSIZE or header[257:265] != _USTAR_MAGIC or header[156:157] != tarfile.REGTYPE
            or header[345] != 0 or not _OCTAL_SIZE.fullmatch(header, 124, 136)):
        return None
    checksum = sum(header) - sum(header[148:156]) + 8 * ord(" ")  # the field counts as spaces, as tarfile sums it
    name = header[:100].split(b"\0", 1)[0]
    if header[148:156] != b"%06o\0 " % checksum or not name.isascii():
        return None
    return name.decode("ascii"), int(header[124:135], 8)


def _tar_members(raw: BinaryIO) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read its bytes) of each tar member in order; ``raw`` is left just past the last one (the end marker).

    Why not tarfile alone: it spends ~18 us parsing each header, six per sample, about a tenth of a
    training sample's CPU time. Headers as :func:`write_shard` writes them are read here (~4 us);
    from the first other header (another writer's pax / GNU records, damage, the end-of-archive
    block) on, tarfile reads the rest, so it alone judges those and its errors stay the same. The
    reads and their checks follow tarfile's order (a member's bytes are read after its header is
    handed out, a cut-off padding fails before the next header), with tarfile's error messages.
    """
    offset = 0
    while (member := _plain_member(raw.read(tarfile.BLOCKSIZE))) is not None:
        name, size = member
        yield name, lambda start=offset + tarfile.BLOCKSIZE, size=size: _read_exactly(raw, start, size)
        offset += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE  # header + padded data
        raw.seek(offset - 1)
        if not raw.read(1):
            raise tarfile.ReadError("unexpected end of data")
    raw.seek(offset)
    with tarfile.open(fileobj=raw, mode="r" if offset == 0 else "r:") as tar:  # "r" detects compressed tars
        for info in tar:
            yield info.name, lambda info=info: tar.extractfile(info).read()
        raw.seek(tar.offset)


def _read_exactly(raw: BinaryIO, start: int, size: int) -> bytes:
    raw.seek(start)
    data = raw.read(size)
    if len(data) != size:
        raise tarfile.ReadError("unexpected end of data")
    return data


_NPY_V1 = b"\x93NUMPY\x01\x00"  # magic + format version 1.0, the one np.save writes for small arrays


def read_array(data: bytes) -> np.ndarray:
    """A ``.npy`` member (float32 actions / proprio); never unpickles.

    Why not only ``np.load``: it parses the header's Python literal every time (~20 us, more than
    the rest of an action's checks and tokens, and chunked samples read K actions). A dataset's
    members share a few headers, so each is parsed once (:func:`_npy_layout`); anything else
    (other versions, object dtypes, short data) goes through ``np.load``, which gives its errors.
    """
    if data[:8] == _NPY_V1:
        header_size = 10 + int.from_bytes(data[8:10], "little")
        layout = _npy_layout(bytes(data[:header_size]))
        if layout is not None:
            dtype, shape, fortran_order = layout
            count = math.prod(shape)
            if len(data) >= header_size + count * dtype.itemsize:
                array = np.frombuffer(data, dtype, count, header_size).copy()  # writable, as np.load's
                return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    return np.load(io.BytesIO(data), allow_pickle=False)


@functools.lru_cache(maxsize=256)
def _npy_layout(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool] | None:
    """(dtype, shape, Fortran order) of a version 1.0 ``.npy`` header; None where ``np.load`` must decide."""
    try:
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(header[8:]))
    except ValueError:
        return None
    return None if dtype.hasobject else (dtype, shape, fortran_order)


def read_image(data: bytes) -> np.ndarray:
    """A JPEG member -> HxWx3 uint8, the pixels TF's decoder gives OpenVLA (``ValueError`` if not a colour JPEG)."""
    return decode_jpeg(data)


def check_normalized_action(action: np.ndarray, bounded: np.ndarray) -> None:
    """Raise ``ValueError`` if ``action`` has another length than the statistics or leaves [-1, 1] in a bounded dim.

    Out-of-range values would be clipped silently to the edge bins by the action tokenizer, so a
    damaged value (say 1e30) would train as a plausible extreme action instead of failing.
    """
    if action.shape != bounded.shape:
        raise ValueError(f"action has shape {action.shape}, the dataset statistics have {bounded.size} dimensions")
    outside = bounded & (np.abs(action) > 1 + RANGE_TOLERANCE)
    if outside.any():
        dims = np.flatnonzero(outside).tolist()
        raise ValueError(f"normalized action leaves [-1, 1] in bounded dimensions {dims}: {action[outside].tolist()}")


def read_text(data: bytes | str) -> str:
    return data.decode("utf-8") if isinstance(data, bytes) else data


def decode_sample(sample: dict[str, bytes]) -> dict[str, Any]:
    """Arrays, text and metadata of one sample; image members stay JPEG bytes (decode with :func:`read_image`)."""
    decoded: dict[str, Any] = {"__key__": read_text(sample["__key__"])}
    for extension, data in sample.items():
        if extension.endswith(".npy"):
            decoded[extension[: -len(".npy")]] = read_array(data)
        elif extension == INSTRUCTION_MEMBER:
            decoded["instruction"] = read_text(data)
        elif extension == META_MEMBER:
            decoded["meta"] = json.loads(data)
        elif extension.endswith(".jpg"):
            decoded[extension[: -len(".jpg")]] = bytes(data)
    return decoded
