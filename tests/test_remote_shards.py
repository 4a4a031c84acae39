"""``data_root`` as an fsspec URL: the same stream, resume and integrity checks as a local run.

Offline through fsspec's ``memory://`` filesystem (a process-wide store; DataLoader workers are
forked on Linux and inherit it) and ``file://`` (local files, but read through fsspec, as a bucket's
would be). The shard sets are the ones tests/test_datamodule.py writes.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem

from tests.test_datamodule import keys, write_two_datasets
from vla.data import VLADataModule
from vla.data.locations import UrlPath, as_location
from vla.data.shards import CorruptShardError, iter_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MIXTURE = {"vla_sim": 1.0, "bridge_orig": 2.0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """tests/test_datamodule.py's two prepared datasets, here the local side of each comparison."""
    return write_two_datasets(tmp_path_factory.mktemp("prepared"))


@pytest.fixture()
def memory_root(data_root) -> Iterator[str]:
    """A private copy of ``data_root`` in fsspec's memory filesystem, as a ``memory://`` URL."""
    fs = fsspec.filesystem("memory")
    base = f"/{uuid.uuid4().hex}/prepared"
    for file in data_root.rglob("*"):
        if file.is_file():
            fs.pipe_file(f"{base}/{file.relative_to(data_root).as_posix()}", file.read_bytes())
    yield f"memory://{base}"
    fs.rm(base, recursive=True)


def make_dm(root: str | Path, processor, **overrides) -> VLADataModule:
    kwargs = dict(mixture=MIXTURE, batch_size=4, num_workers=0, shuffle_buffer=5, image_aug=True, seed=3,
                  samples_per_epoch=36, processor=processor)
    return VLADataModule(root, **{**kwargs, **overrides})


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert keys(got) == keys(want)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["input_ids"], b["input_ids"])


def remote(memory_root: str, file: str) -> tuple[MemoryFileSystem, str]:
    """The memory filesystem and the in-store path of ``file`` under ``memory_root``."""
    return fsspec.filesystem("memory"), f"{memory_root.removeprefix('memory://')}/{file}"


@pytest.mark.parametrize(("scheme", "num_workers"), [("memory", 0), ("memory", 2), ("file", 2)])
def test_url_root_gives_the_local_stream_and_resumes_exactly(data_root, memory_root, tiny_vla, scheme, num_workers):
    url = memory_root if scheme == "memory" else f"file://{data_root}"
    reference = list(make_dm(data_root, tiny_vla.processor, num_workers=num_workers).train_dataloader())
    assert len(reference) == 9

    streamed = make_dm(url, tiny_vla.processor, num_workers=num_workers)
    assert isinstance(streamed.data_root, UrlPath)
    assert_same_batches(list(streamed.train_dataloader()), reference)

    interrupted = make_dm(url, tiny_vla.processor, num_workers=num_workers)
    iterator = iter(interrupted.train_dataloader())
    for _ in range(3):
        next(iterator)
    state = interrupted.state_dict()
    del iterator
    resumed = make_dm(url, tiny_vla.processor, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed.train_dataloader()), reference[3:])


def test_url_root_gives_the_local_statistics_and_val_batches(data_root, memory_root, tiny_vla):
    local, streamed = make_dm(data_root, tiny_vla.processor), make_dm(memory_root, tiny_vla.processor)
    assert streamed.dataset_statistics == local.dataset_statistics
    assert_same_batches(list(streamed.val_dataloader()), list(local.val_dataloader()))


def test_setup_verification_skips_a_damaged_remote_shard_naming_its_url(memory_root, tiny_vla):
    fs, path = remote(memory_root, "vla_sim/train-000001.tar")
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    dm = make_dm(memory_root, tiny_vla.processor, verify_shards="setup", on_corrupt_shard="skip")
    with pytest.warns(UserWarning, match=f"{memory_root}/vla_sim/train-000001.tar"):
        dm.setup("fit")
    assert [s.file for s in dm.skipped_shards] == ["train-000001.tar"]
    seen = keys(list(dm.train_dataloader()))
    assert len(seen) == 36 and any(name == "vla_sim" for name, _ in seen)
    assert not [key for name, key in seen if name == "vla_sim" and key[:6] in ("000002", "000003")]  # its episodes


@pytest.mark.parametrize("num_workers", [0, 2])
def test_damaged_remote_shard_fails_the_first_read_naming_its_url(memory_root, tiny_vla, num_workers):
    fs, path = remote(memory_root, "vla_sim/train-000000.tar")
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    with pytest.raises(CorruptShardError, match=f"shard {memory_root}/vla_sim/train-000000.tar is corrupt.*sha256"):
        list(make_dm(memory_root, tiny_vla.processor, num_workers=num_workers).train_dataloader())


def test_truncated_remote_shard_names_its_url_without_hashing(memory_root, tiny_vla):
    fs, path = remote(memory_root, "bridge_orig/train-000001.tar")
    fs.pipe_file(path, fs.cat_file(path)[:3000])
    with pytest.raises(CorruptShardError, match=f"shard {memory_root}/bridge_orig/train-000001.tar is (corrupt|truncated)"):
        list(make_dm(memory_root, tiny_vla.processor, verify_shards="off", shuffle_buffer=0,
                     samples_per_epoch=None).train_dataloader())


def test_missing_remote_shard_is_named_when_the_datasets_load(memory_root):
    fs, path = remote(memory_root, "vla_sim/train-000002.tar")
    fs.rm(path)
    with pytest.raises(FileNotFoundError, match=f"missing shard {memory_root}/vla_sim/train-000002.tar listed in "
                                                f"{memory_root}/vla_sim/manifest.json"):
        VLADataModule(memory_root, mixture=MIXTURE).setup("fit")


def test_missing_bucket_or_dataset_names_the_url():
    with pytest.raises(FileNotFoundError, match="missing memory://no-such-bucket/oxe/vla_sim/manifest.json"):
        VLADataModule("memory://no-such-bucket/oxe", mixture="vla_sim").dataset_statistics


def test_unknown_protocol_fails_at_construction_naming_the_url():
    with pytest.raises(ValueError, match="cannot read nosuchfs://bucket/oxe: .*nosuchfs"):
        VLADataModule("nosuchfs://bucket/oxe")


def test_denied_listing_is_not_reported_as_a_missing_dataset(memory_root, monkeypatch):
    def deny(self, path, **kwargs):
        raise PermissionError(f"access denied: {path}")

    monkeypatch.setattr(MemoryFileSystem, "info", deny)
    with pytest.raises(PermissionError, match="access denied") as caught:
        VLADataModule(memory_root, mixture=MIXTURE).dataset_statistics
    assert f"{memory_root}/vla_sim/manifest.json" in "".join(caught.value.__notes__)


class _DropsConnection(io.BytesIO):
    """A stream that fails like a network connection reset after ``limit`` bytes."""

    def __init__(self, data: bytes, limit: int):
        super().__init__(data)
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.limit:
            raise ConnectionResetError("connection reset by peer")
        return super().read(size)


def test_remote_read_error_propagates_naming_the_url_not_as_corruption(memory_root, monkeypatch):
    """A transient error past the backend's retries is not damage: it stops the read as itself, naming the URL."""
    shard = as_location(f"{memory_root}/vla_sim/train-000000.tar")
    data = shard.read_bytes()
    assert len(list(iter_shard(shard))) == 8
    monkeypatch.setattr(UrlPath, "open", lambda self, mode="rb": _DropsConnection(data, len(data) // 2))
    with pytest.raises(ConnectionResetError) as caught:
        list(iter_shard(shard))
    assert not isinstance(caught.value, CorruptShardError)
    assert f"while reading shard {shard}" in caught.value.__notes__
