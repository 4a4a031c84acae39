"""Damaged prepared shards fail loudly on the training path, naming the shard (and the sample).

The data is the built-in sim dataset (``sim_data_root``), copied and then damaged here: bytes flipped
inside JPEG members (the tar stays well-formed, so only the manifest's sha256 can tell), actions
rewritten out of range, NaN, or with invalid UTF-8 instructions (the tar re-written, the manifest not).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import vla.data.datamodule as datamodule
from vla.data import VLADataModule
from vla.data.shards import (
    ACTION_MEMBER,
    INSTRUCTION_MEMBER,
    CorruptShardError,
    file_sha256,
    image_member,
    iter_shard,
    read_array,
    read_image,
    write_shard,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = "train-000000.tar"
PRIMARY = image_member("primary")


@pytest.fixture()
def root(sim_data_root, tmp_path) -> Path:
    """A private copy of the sim data root (``vla_sim/``), safe to damage."""
    shutil.copytree(sim_data_root / "vla_sim", tmp_path / "vla_sim", ignore=shutil.ignore_patterns("_progress"))
    return tmp_path


def make_dm(root: Path, processor, **overrides) -> VLADataModule:
    kwargs = dict(batch_size=4, num_workers=0, shuffle_buffer=0, seed=0, samples_per_epoch=8, processor=processor)
    return VLADataModule(root, **{**kwargs, **overrides})


def manifest(root: Path) -> dict:
    return json.loads((root / "vla_sim" / "manifest.json").read_text())


def sample_keys(batches: list[dict]) -> list[str]:
    return [key for batch in batches for key in batch["sample_key"]]


def flip_jpeg_middles(shard: Path, view: str = "primary", n_bytes: int = 64) -> None:
    """Invert ``n_bytes`` in the middle of every ``view`` JPEG in place; the tar itself stays valid.

    Bytes that are or would become 0xFF, or follow one, are left alone so no JPEG marker appears:
    the images still decode, with about half their pixels off by more than 20 grey levels.
    """
    with tarfile.open(shard) as tar:
        starts = [m.offset_data + m.size // 2 - n_bytes // 2 for m in tar if m.name.endswith(image_member(view))]
    data = bytearray(shard.read_bytes())
    for i in (start + j for start in starts for j in range(n_bytes)):
        if 0xFF not in (data[i], data[i] ^ 0xFF, data[i - 1]):
            data[i] ^= 0xFF
    shard.write_bytes(bytes(data))


def rewrite_sample(shard: Path, index: int, edit: Callable[[dict[str, bytes]], None]) -> str:
    """Re-write ``shard`` with sample ``index`` edited; the manifest is left as it was. Returns the sample key."""
    samples = list(iter_shard(shard))
    edit(samples[index])
    write_shard(shard, samples)
    return samples[index]["__key__"].decode()


def npy(values: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, values, allow_pickle=False)
    return out.getvalue()


def set_action(dim: int, value: float) -> Callable[[dict[str, bytes]], None]:
    def edit(sample: dict[str, bytes]) -> None:
        action = read_array(sample[ACTION_MEMBER]).copy()
        action[dim] = value
        sample[ACTION_MEMBER] = npy(action)

    return edit


def split_train_shard(root: Path) -> list[dict]:
    """Re-shard the train split into two intact halves with a correct manifest (sim data has one train shard)."""
    directory = root / "vla_sim"
    samples = list(iter_shard(directory / TRAIN))
    (directory / TRAIN).unlink()
    half = len(samples) // 2
    entries = [write_shard(directory / f"train-{i:06d}.tar", part) for i, part in enumerate([samples[:half], samples[half:]])]
    data = manifest(root)
    data["splits"]["train"]["shards"] = entries
    (directory / "manifest.json").write_text(json.dumps(data, sort_keys=True))
    return entries


# --- item 1: the manifest's sha256 is checked on the training path ------------------------------


def test_flipped_jpeg_bytes_decode_silently_so_only_the_hash_can_tell(root):
    shard = root / "vla_sim" / TRAIN
    before = [s[PRIMARY] for s in iter_shard(shard)][:4]
    flip_jpeg_middles(shard)
    after = [s[PRIMARY] for s in iter_shard(shard)][:4]  # the tar still reads
    assert file_sha256(shard) != manifest(root)["splits"]["train"]["shards"][0]["sha256"]
    for good, bad in zip(before, after):
        changed = np.abs(np.asarray(read_image(good), np.int16) - np.asarray(read_image(bad), np.int16)).max(axis=-1)
        assert (changed > 20).mean() > 0.3  # visibly different pixels, and no decode error


@pytest.mark.parametrize("num_workers", [0, 2])
def test_damaged_shard_fails_the_train_loader_naming_it(root, tiny_vla, num_workers):
    flip_jpeg_middles(root / "vla_sim" / TRAIN)
    with pytest.raises(CorruptShardError, match=f"{TRAIN}.*sha256"):
        list(make_dm(root, tiny_vla.processor, num_workers=num_workers).train_dataloader())


def test_damaged_val_shard_fails_the_val_loader(root, tiny_vla):
    flip_jpeg_middles(root / "vla_sim" / "val-000000.tar")
    with pytest.raises(CorruptShardError, match="val-000000.tar"):
        list(make_dm(root, tiny_vla.processor).val_dataloader())


def test_setup_mode_hashes_before_any_batch(root):
    flip_jpeg_middles(root / "vla_sim" / TRAIN)
    with pytest.raises(CorruptShardError, match=TRAIN):
        VLADataModule(root, verify_shards="setup").setup("fit")


def test_off_reads_damaged_shards_without_a_word(root, tiny_vla):
    flip_jpeg_middles(root / "vla_sim" / TRAIN)
    assert len(list(make_dm(root, tiny_vla.processor, verify_shards="off").train_dataloader())) == 2


def test_first_read_hashes_each_shard_once_per_process(root, tiny_vla, monkeypatch):
    hashed: list[str] = []
    original = datamodule.verify_shard
    monkeypatch.setattr(datamodule, "verify_shard", lambda path, *a: (hashed.append(Path(path).name), original(path, *a)))
    dm = make_dm(root, tiny_vla.processor, shuffle_buffer=8, samples_per_epoch=16)
    loader = dm.train_dataloader()
    list(loader), list(loader), list(dm.val_dataloader())
    assert sorted(hashed) == [TRAIN, "val-000000.tar"]


@pytest.mark.parametrize("verify_shards", ["first_read", "off"])
def test_truncated_shard_still_names_the_file(root, tiny_vla, verify_shards):
    shard = root / "vla_sim" / TRAIN
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match=TRAIN):
        list(make_dm(root, tiny_vla.processor, verify_shards=verify_shards, samples_per_epoch=None).train_dataloader())


def test_skip_drops_the_damaged_shard_and_counts_it(root, tiny_vla):
    intact, damaged = split_train_shard(root)
    flip_jpeg_middles(root / "vla_sim" / damaged["file"])
    dm = make_dm(root, tiny_vla.processor, verify_shards="setup", on_corrupt_shard="skip", samples_per_epoch=None,
                 batch_size=16)
    with pytest.warns(UserWarning, match=damaged["file"]):
        dm.setup("fit")
    assert dm.integrity_counts == {"skipped_shards": 1, "skipped_samples": damaged["num_samples"]}
    assert [(s.split, s.file) for s in dm.skipped_shards] == [("train", damaged["file"])]
    seen = sample_keys(list(dm.train_dataloader()))  # one epoch = the intact shard's samples, each once
    expected = [s["__key__"].decode() for s in iter_shard(root / "vla_sim" / intact["file"])]
    assert len(seen) == intact["num_samples"] // 16 * 16 and set(seen) <= set(expected) and len(set(seen)) == len(seen)


def test_skip_resume_continues_the_stream(root, tiny_vla):
    _, damaged = split_train_shard(root)
    flip_jpeg_middles(root / "vla_sim" / damaged["file"])
    settings = dict(verify_shards="setup", on_corrupt_shard="skip", shuffle_buffer=8, samples_per_epoch=16)
    with pytest.warns(UserWarning):
        reference = sample_keys(list(make_dm(root, tiny_vla.processor, **settings).train_dataloader()))
        interrupted = make_dm(root, tiny_vla.processor, **settings)
        iterator = iter(interrupted.train_dataloader())
        next(iterator)
        resumed = make_dm(root, tiny_vla.processor, **settings)
        resumed.load_state_dict(interrupted.state_dict())
        rest = sample_keys(list(resumed.train_dataloader()))
    assert rest == reference[4:]


def test_skip_never_empties_a_split(root):
    flip_jpeg_middles(root / "vla_sim" / TRAIN)
    with pytest.warns(UserWarning), pytest.raises(CorruptShardError, match="every train shard"):
        VLADataModule(root, verify_shards="setup", on_corrupt_shard="skip").setup("fit")


def test_skip_needs_setup_verification(root):
    with pytest.raises(ValueError, match="verify_shards='setup'"):
        VLADataModule(root, on_corrupt_shard="skip")
    with pytest.raises(ValueError, match="verify_shards"):
        VLADataModule(root, verify_shards="sometimes")


# --- item 2: each sample is validated, and errors name the shard and the sample key -------------


def test_out_of_range_action_names_shard_and_sample(root, tiny_vla):
    key = rewrite_sample(root / "vla_sim" / TRAIN, 2, set_action(0, 1e30))
    with pytest.raises(CorruptShardError, match=rf"'{key}' in shard .*{TRAIN}.*\[-1, 1\].*\[0\]"):
        list(make_dm(root, tiny_vla.processor, verify_shards="off").train_dataloader())
    with pytest.raises(CorruptShardError, match=f"{TRAIN}.*sha256"):  # the re-written shard fails the hash too
        list(make_dm(root, tiny_vla.processor).train_dataloader())


@pytest.mark.parametrize("dim,value,normalization", [
    (6, 1e30, "bounds_q99"),  # the gripper is not normalized (mask false)
    (0, 5.0, "normal"),  # mean/std normalization has no bound
    (0, 1 + 1e-6, "bounds_q99"),  # float rounding
])
def test_unbounded_dimensions_are_not_range_checked(root, tiny_vla, dim, value, normalization):
    rewrite_sample(root / "vla_sim" / TRAIN, 2, set_action(dim, value))
    path = root / "vla_sim" / "manifest.json"
    path.write_text(path.read_text().replace('"bounds_q99"', f'"{normalization}"'))
    assert len(list(make_dm(root, tiny_vla.processor, verify_shards="off").train_dataloader())) == 2


def _nan_action(sample: dict[str, bytes]) -> None:
    set_action(3, np.nan)(sample)


def _bad_utf8(sample: dict[str, bytes]) -> None:
    sample[INSTRUCTION_MEMBER] = b"pick \xff\xfe up"


def _short_action(sample: dict[str, bytes]) -> None:
    sample[ACTION_MEMBER] = npy(np.zeros(5, np.float32))


def _not_a_jpeg(sample: dict[str, bytes]) -> None:
    sample[PRIMARY] = b"not an image"


@pytest.mark.parametrize("edit,reason", [(_nan_action, "NaN"), (_bad_utf8, "utf-8"), (_short_action, "shape"),
                                         (_not_a_jpeg, "image")])
def test_every_sample_error_names_shard_and_key(root, tiny_vla, edit, reason):
    key = rewrite_sample(root / "vla_sim" / TRAIN, 1, edit)
    with pytest.raises(CorruptShardError, match=rf"(?i)'{key}' in shard .*{TRAIN}.*{reason}"):
        list(make_dm(root, tiny_vla.processor, verify_shards="off").train_dataloader())
