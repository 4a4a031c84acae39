"""VLADataModule over small prepared shard sets written here in the prepared-shard layout (docs/contracts.md)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from vla.data import VLADataModule
from vla.data.augmentation import OpenVLAAugmentation
from vla.contract.images import decode_jpeg, lanczos_resize
from vla.contract.prompt import IGNORE_INDEX
from vla.data.shards import CorruptShardError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTION_DIM = 7


def _stats(dim: int) -> dict:
    return {"mean": [0.0] * dim, "std": [1.0] * dim, "min": [-1.0] * dim, "max": [1.0] * dim,
            "q01": [-1.0] * dim, "q99": [1.0] * dim, "mask": [True] * (dim - 1) + [False]}


def _jpeg(rng: np.random.Generator, size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def write_prepared(root: Path, name: str, splits: dict[str, tuple[int, int, int]], seed: int = 0) -> Path:
    """Write ``root/name`` in the prepared-shard layout; ``splits[split] = (episodes, steps per episode, shards)``."""
    out = root / name
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_total = sum(e * s for e, s, _ in splits.values())
    stats = {name: {"action": _stats(ACTION_DIM), "proprio": _stats(8), "num_transitions": n_total,
                    "num_trajectories": sum(e for e, _, _ in splits.values())}}
    stats_bytes = json.dumps(stats).encode()
    (out / "dataset_statistics.json").write_bytes(stats_bytes)
    manifest_splits = {}
    for split, (episodes, steps, n_shards) in splits.items():
        keys = [(e, t) for e in range(episodes) for t in range(steps)]
        entries = []
        for shard_index, chunk in enumerate(np.array_split(np.arange(len(keys)), n_shards)):
            path = out / f"{split}-{shard_index:06d}.tar"
            with wds.TarWriter(str(path)) as sink:
                for i in chunk:
                    episode, step = keys[i]
                    key = f"{episode:06d}_{step:04d}"
                    sink.write({
                        "__key__": key,
                        "action.npy": rng.uniform(-1, 1, ACTION_DIM).astype(np.float32),
                        "proprio.npy": rng.uniform(-1, 1, 8).astype(np.float32),
                        "image_primary.jpg": _jpeg(rng),
                        "instruction.txt": f"Pick up block {episode}",
                        "meta.json": {"dataset": name, "split": split, "episode_index": episode, "timestep": step,
                                      "file_path": "synthetic", "episode_id": str(episode)},
                    })
            entries.append({"file": path.name, "num_samples": len(chunk), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        manifest_splits[split] = {"num_episodes": episodes, "num_transitions": len(keys), "shards": entries}
    manifest = {"format_version": 1, "dataset": name, "normalization": "bounds_q99",
                "statistics_sha256": hashlib.sha256(stats_bytes).hexdigest(), "image_views": ["primary"],
                "splits": manifest_splits, "complete": True}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def write_two_datasets(root: Path) -> Path:
    """The two small prepared datasets (vla_sim, bridge_orig) these tests and the remote-shard tests read."""
    write_prepared(root, "vla_sim", {"train": (6, 4, 3), "val": (2, 3, 1)}, seed=0)
    write_prepared(root, "bridge_orig", {"train": (5, 4, 2), "val": (1, 2, 1)}, seed=1)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_two_datasets(tmp_path_factory.mktemp("prepared"))


def make_dm(root: Path, processor, **overrides) -> VLADataModule:
    kwargs = dict(mixture="vla_sim", batch_size=4, num_workers=0, shuffle_buffer=0, seed=3, processor=processor)
    return VLADataModule(root, **{**kwargs, **overrides})


def keys(batches: list[dict]) -> list[tuple[str, str]]:
    return [(name, key) for b in batches for name, key in zip(b["dataset_name"], b["sample_key"])]


def test_batch_layout_and_action_tokens(data_root, tiny_vla):
    dm = make_dm(data_root, tiny_vla.processor)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 224, 224) and batch["pixel_values"].dtype == torch.uint8
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["labels"].shape
    assert batch["dataset_name"] == ["vla_sim"] * 4
    # No shuffle, one worker: the first sample is the first transition of the first shard.
    assert batch["sample_key"][0] == "000000_0000"
    tokenizer = tiny_vla.processor.action_tokenizer
    with wds.WebDataset(str(data_root / "vla_sim" / "train-000000.tar"), shardshuffle=False).decode() as stream:
        first = next(iter(stream))
    for row in range(4):
        labels, mask = batch["labels"][row], batch["attention_mask"][row].bool()
        assert (batch["input_ids"][row][~mask] == tiny_vla.processor.pad_token_id).all()
        supervised = labels[labels != IGNORE_INDEX]
        assert len(supervised) == ACTION_DIM + 1  # action tokens + stop token
        assert (labels[~mask] == IGNORE_INDEX).all()
    supervised = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX][:ACTION_DIM].numpy()
    np.testing.assert_allclose(tokenizer.decode(supervised), first["action.npy"], atol=2 / 255)


def test_statistics_are_exposed_per_dataset(data_root):
    dm = VLADataModule(data_root, mixture={"vla_sim": 1.0, "bridge_orig": 1.0})
    stats = dm.dataset_statistics
    assert set(stats) == {"vla_sim", "bridge_orig"}
    assert stats["vla_sim"]["num_transitions"] == 24 + 6 and "q99" in stats["bridge_orig"]["action"]


def test_balanced_weights_use_dataset_sizes(data_root):
    dm = VLADataModule(data_root, mixture={"vla_sim": 1.0, "bridge_orig": 1.0}, balance_weights=True)
    assert dm.sampling_weights == pytest.approx({"vla_sim": 24 / 44, "bridge_orig": 20 / 44})


def test_mixture_frequencies_follow_weights(data_root, tiny_vla):
    dm = make_dm(data_root, tiny_vla.processor, mixture={"vla_sim": 3.0, "bridge_orig": 1.0}, shuffle_buffer=8,
                 batch_size=20, samples_per_epoch=400)
    counts = Counter(name for name, _ in keys(list(dm.train_dataloader())))
    assert sum(counts.values()) == 400
    assert counts["vla_sim"] / 400 == pytest.approx(0.75, abs=0.07)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_epoch_without_shuffle_covers_every_sample_once(data_root, tiny_vla, num_workers):
    dm = make_dm(data_root, tiny_vla.processor, num_workers=num_workers)
    seen = keys(list(dm.train_dataloader()))
    expected = {("vla_sim", f"{e:06d}_{t:04d}") for e in range(6) for t in range(4)}
    assert len(seen) == 24 and set(seen) == expected


def test_shuffle_depends_on_seed_and_epoch(data_root, tiny_vla):
    loader = make_dm(data_root, tiny_vla.processor, shuffle_buffer=6).train_dataloader()
    epoch0, epoch1 = keys(list(loader)), keys(list(loader))
    again = keys(list(make_dm(data_root, tiny_vla.processor, shuffle_buffer=6).train_dataloader()))
    other_seed = keys(list(make_dm(data_root, tiny_vla.processor, shuffle_buffer=6, seed=4).train_dataloader()))
    assert epoch0 == again and epoch0 != epoch1 and epoch0 != other_seed
    assert set(epoch0) != set() and len(set(epoch0)) > 12


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_the_interrupted_stream(data_root, tiny_vla, num_workers):
    settings = dict(mixture={"vla_sim": 1.0, "bridge_orig": 2.0}, shuffle_buffer=5, image_aug=True, num_workers=num_workers,
                    samples_per_epoch=36)
    reference = list(make_dm(data_root, tiny_vla.processor, **settings).train_dataloader())
    assert len(reference) == 9

    interrupted = make_dm(data_root, tiny_vla.processor, **settings)
    iterator = iter(interrupted.train_dataloader())
    for _ in range(3):
        next(iterator)
    state = interrupted.state_dict()
    assert state["batches_consumed"] == 3 and state["epoch"] == 0

    resumed = make_dm(data_root, tiny_vla.processor, **settings)
    resumed.load_state_dict(state)
    rest = list(resumed.train_dataloader())
    assert keys(rest) == keys(reference[3:])
    for got, want in zip(rest, reference[3:]):
        assert torch.equal(got["pixel_values"], want["pixel_values"]) and torch.equal(got["input_ids"], want["input_ids"])


def test_val_loader_is_finite_deterministic_and_unaugmented(data_root, tiny_vla):
    dm = make_dm(data_root, tiny_vla.processor, mixture={"vla_sim": 1.0, "bridge_orig": 1.0}, image_aug=True, num_workers=2)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert sorted(keys(first)) == sorted({("vla_sim", f"{e:06d}_{t:04d}") for e in range(2) for t in range(3)}
                                         | {("bridge_orig", f"000000_{t:04d}") for t in range(2)})
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(first, second))
    with wds.WebDataset(str(data_root / "vla_sim" / "val-000000.tar"), shardshuffle=False) as stream:
        raw = next(iter(stream))
    transform = tiny_vla.processor.image_transform  # OpenVLA's frame: TF-exact decode + dlimp's Lanczos to S x S
    plain = transform(lanczos_resize(decode_jpeg(raw["image_primary.jpg"]), transform.image_size))
    index = keys(first).index(("vla_sim", raw["__key__"]))
    batch, row = divmod(index, 4)
    assert torch.equal(first[batch]["pixel_values"][row], plain)


def test_augmentation_is_seeded_and_changes_pixels():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    augment = OpenVLAAugmentation()
    a, b = augment(image, np.random.default_rng(1)), augment(image, np.random.default_rng(1))
    c = augment(image, np.random.default_rng(2))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, image)
    with pytest.raises(ValueError, match="uint8"):
        augment(image.astype(np.float32), np.random.default_rng(0))


# --- the promised errors ------------------------------------------------------------------------


@pytest.fixture()
def own_root(tmp_path) -> Path:
    write_prepared(tmp_path, "vla_sim", {"train": (2, 4, 1), "val": (1, 2, 1)})
    return tmp_path


def test_truncated_shard_names_the_file(own_root, tiny_vla):
    shard = own_root / "vla_sim" / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match="train-000000.tar"):
        list(make_dm(own_root, tiny_vla.processor).train_dataloader())


def test_corrupt_shard_names_the_file(own_root, tiny_vla):
    shard = own_root / "vla_sim" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2048:2560] = b"\x07" * 512  # garbage over the second member's header
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="train-000000.tar"):
        list(make_dm(own_root, tiny_vla.processor).train_dataloader())


def test_missing_statistics_file_names_it(own_root):
    (own_root / "vla_sim" / "dataset_statistics.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        VLADataModule(own_root).setup("fit")


def test_changed_statistics_file_is_rejected(own_root):
    path = own_root / "vla_sim" / "dataset_statistics.json"
    path.write_text(path.read_text().replace("1.0", "2.0"))
    with pytest.raises(ValueError, match="dataset_statistics.json"):
        VLADataModule(own_root).dataset_statistics


def test_unknown_dataset_is_named(own_root):
    with pytest.raises(ValueError, match="not_a_dataset"):
        VLADataModule(own_root, mixture={"vla_sim": 1.0, "not_a_dataset": 1.0}).setup("fit")


def test_loader_needs_a_processor(own_root):
    with pytest.raises(ValueError, match="processor"):
        VLADataModule(own_root).train_dataloader()


def test_hsv_conversion_matches_the_reference_definition():
    import colorsys

    from vla.data.augmentation import hsv_to_rgb, rgb_to_hsv

    rgb = np.random.default_rng(0).uniform(0, 1, (20, 20, 3)).astype(np.float32)
    rgb[0, 0] = [0.5, 0.5, 0.5]  # grey: hue and saturation 0
    expected = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in rgb.reshape(-1, 3)]).reshape(rgb.shape)
    np.testing.assert_allclose(rgb_to_hsv(rgb), expected, atol=1e-6)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-6)
