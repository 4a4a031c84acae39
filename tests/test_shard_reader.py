"""The shard reader's fast paths (ustar headers, cached ``.npy`` layouts) read exactly what tarfile / np.load do.

Reference: the plain ``tarfile`` loop ``iter_shard`` used before the fast header path. Every other tar
kind (pax, GNU, compressed, long names) and every damaged shard must give the same samples or fail the
same way.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vla.data.shards import CorruptShardError, iter_shard, read_array, write_shard


def reference_samples(path: Path) -> list[dict[str, bytes]]:
    """What tarfile alone reads (members grouped by key), or CorruptShardError where iter_shard must fail."""
    samples: list[dict[str, bytes]] = []
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if not samples or samples[-1]["__key__"] != key.encode():
                    samples.append({"__key__": key.encode()})
                samples[-1][extension] = tar.extractfile(member).read()
            raw.seek(tar.offset)
            end = raw.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptShardError(str(exc)) from exc
    if len(end) < 2 * tarfile.BLOCKSIZE or end.strip(b"\0"):
        raise CorruptShardError("no end-of-archive marker")
    return samples


def read_both(path: Path) -> tuple[object, object]:
    results = []
    for read in (lambda: list(iter_shard(path)), lambda: reference_samples(path)):
        try:
            results.append(read())
        except CorruptShardError:
            results.append(CorruptShardError)
    return results[0], results[1]


SAMPLES = [{"__key__": f"ep{i:03d}_{t:02d}".encode(), "image.jpg": bytes(range(i * 7 % 256)) * (t + 1),
            "action.npy": np.arange(7, dtype=np.float32).tobytes(), "instruction.txt": b"move to the red block"}
           for i in range(3) for t in range(2)]


def test_write_shard_shards_read_back_the_samples(tmp_path):
    write_shard(tmp_path / "s.tar", SAMPLES)
    assert list(iter_shard(tmp_path / "s.tar")) == SAMPLES


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("long_names", [False, True])
@pytest.mark.parametrize("compress", [False, True])
def test_other_writers_tars_read_like_tarfile(tmp_path, tar_format, long_names, compress):
    if long_names and tar_format == tarfile.USTAR_FORMAT:
        pytest.skip("ustar holds names up to 100 bytes (plus a prefix at a '/')")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for sample in SAMPLES:
            key = sample["__key__"].decode() + ("x" * 120 if long_names else "")
            for extension, data in sample.items():
                if extension != "__key__":
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(buffer.getvalue()) if compress else buffer.getvalue()
    (tmp_path / "s.tar").write_bytes(data)
    ours, reference = read_both(tmp_path / "s.tar")
    assert ours == reference
    # plain tars are read; a compressed one is refused by both (the end-of-archive check reads the raw file)
    assert reference is CorruptShardError if compress else len(reference) == len(SAMPLES)


def test_cut_or_damaged_shards_fail_or_read_like_tarfile(tmp_path):
    write_shard(tmp_path / "s.tar", SAMPLES)
    whole = (tmp_path / "s.tar").read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted({*range(0, len(whole), 256), *(int(c) for c in rng.integers(0, len(whole), 40))})
    damaged = [whole[:cut] for cut in cuts]
    for _ in range(60):  # a flipped byte, mostly inside headers (where the fast path decides)
        data = bytearray(whole)
        data[int(rng.integers(0, 12)) * 512 + int(rng.integers(0, 512))] ^= 1 << int(rng.integers(0, 8))
        damaged.append(bytes(data))
    for index, data in enumerate(damaged):
        (tmp_path / "d.tar").write_bytes(data)
        ours, reference = read_both(tmp_path / "d.tar")
        assert ours == reference, f"case {index}"


@pytest.mark.parametrize("array", [
    np.arange(7, dtype=np.float32), np.arange(12, dtype=np.float64).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)), np.arange(5, dtype=">f4"),
    np.array(3.5, dtype=np.float32), np.zeros((0, 7), dtype=np.float32), np.array([True, False]),
])
def test_read_array_equals_np_load(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    for _ in range(2):  # the second read takes the cached header
        loaded = read_array(buffer.getvalue())
        assert loaded.dtype == array.dtype and loaded.shape == array.shape and loaded.flags.writeable
        np.testing.assert_array_equal(loaded, array)
    with pytest.raises(ValueError):  # cut-off data: np.load's error, not a short array
        read_array(buffer.getvalue()[:-1]) if array.size else np.load(io.BytesIO(b"junk"))


def test_read_array_never_unpickles():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_array(buffer.getvalue())
