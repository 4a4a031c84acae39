"""OpenVLA's DROID exterior-camera swap (``rand_swap_exterior_images``): seeded, per episode, only for ``droid``."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from vla.data import VLADataModule
from vla.data.datamodule import views_swapped
from vla.data.registry import DATASET_CONFIGS

COLOURS = {"primary": (220, 30, 30), "secondary": (30, 30, 220), "wrist": (30, 220, 30)}
EPISODES, STEPS = 24, 2


def test_only_droid_swaps_its_exterior_cameras():
    swapping = {name: config.swapped_views for name, config in DATASET_CONFIGS.items() if config.swapped_views}
    assert swapping == {"droid": ("primary", "secondary")}
    droid = DATASET_CONFIGS["droid"]
    assert (droid.image_obs_keys["primary"], droid.image_obs_keys["secondary"]) == ("exterior_image_1_left", "exterior_image_2_left")
    assert DATASET_CONFIGS["droid_wipe"].swapped_views is None  # droid_finetuning_transform does not swap


def test_the_coin_is_fair_and_seeded():
    episodes = [f"{e:06d}" for e in range(4000)]
    draws = [views_swapped(7, 0, "droid", e) for e in episodes]
    assert 0.46 < np.mean(draws) < 0.54  # 4000 fair coins: 0.5 +- 0.008 (1 sigma)
    assert draws == [views_swapped(7, 0, "droid", e) for e in episodes]  # same seed, same choices
    other_seed = [views_swapped(8, 0, "droid", e) for e in episodes]
    next_epoch = [views_swapped(7, 1, "droid", e) for e in episodes]
    for other in (other_seed, next_epoch):  # independent coins: they agree about half the time
        assert 0.45 < np.mean(np.equal(draws, other)) < 0.55


def _solid_jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), colour, np.uint8)).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _write_droid(root: Path, name: str, views: tuple[str, ...]) -> None:
    """A prepared dataset whose every view is a solid colour naming the camera it came from."""
    out = root / name
    out.mkdir(parents=True)
    stats_entry = {"mean": [0.0] * 7, "std": [1.0] * 7, "min": [-1.0] * 7, "max": [1.0] * 7,
                   "q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}
    stats = json.dumps({name: {"action": stats_entry, "proprio": stats_entry, "num_transitions": EPISODES * STEPS,
                               "num_trajectories": EPISODES}}).encode()
    (out / "dataset_statistics.json").write_bytes(stats)
    path = out / "train-000000.tar"
    images = {f"image_{view}.jpg": _solid_jpeg(COLOURS[view]) for view in views}
    with wds.TarWriter(str(path)) as sink:
        for episode in range(EPISODES):
            for step in range(STEPS):
                sink.write({"__key__": f"{episode:06d}_{step:04d}", "action.npy": np.zeros(7, np.float32),
                            "proprio.npy": np.zeros(7, np.float32), "instruction.txt": "wipe the table", **images})
    shard = {"file": path.name, "num_samples": EPISODES * STEPS, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    manifest = {"format_version": 1, "dataset": name, "normalization": "bounds_q99",
                "statistics_sha256": hashlib.sha256(stats).hexdigest(), "image_views": list(views),
                "splits": {"train": {"num_episodes": EPISODES, "num_transitions": EPISODES * STEPS, "shards": [shard]}},
                "complete": True}
    (out / "manifest.json").write_text(json.dumps(manifest))


def _camera(pixels: torch.Tensor) -> str:
    """Which camera a decoded [3, S, S] frame shows, from its mean colour."""
    mean = pixels.float().mean(dim=(-1, -2)).numpy()
    return min(COLOURS, key=lambda view: np.abs(mean - COLOURS[view]).sum())


def _cameras(root: Path, name: str, views: tuple[str, ...], processor, num_workers: int = 0) -> dict[str, list[str]]:
    """sample key -> the camera behind each model view, over one epoch of the training stream (seed 3)."""
    dm = VLADataModule(root, mixture={name: 1.0}, batch_size=4, num_workers=num_workers, shuffle_buffer=0, seed=3,
                       processor=processor, image_views=views, train_split="train", val_split=None)
    seen = {}
    for batch in dm.train_dataloader():
        pixels = batch["pixel_values"]
        for row, key in enumerate(batch["sample_key"]):
            frames = [pixels[row]] if len(views) == 1 else list(pixels[row].view(len(views), 3, *pixels.shape[-2:]))
            seen[key] = [_camera(frame) for frame in frames]
    return seen


@pytest.fixture(scope="module")
def droid_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("droid")
    _write_droid(root, "droid", ("primary", "secondary", "wrist"))
    _write_droid(root, "droid_wipe", ("primary", "secondary", "wrist"))
    return root


def test_droid_samples_really_show_the_swapped_cameras(droid_root, tiny_vla):
    seen = _cameras(droid_root, "droid", ("primary",), tiny_vla.processor)
    assert len(seen) == EPISODES * STEPS
    swapped = {key.split("_")[0] for key, cameras in seen.items() if cameras == ["secondary"]}
    for key, cameras in seen.items():
        expected = "secondary" if views_swapped(3, 0, "droid", key.split("_")[0]) else "primary"
        assert cameras == [expected], key  # every step of an episode follows the episode's coin
    assert 0 < len(swapped) < EPISODES  # 24 fair coins: both outcomes occur (all-equal odds 2^-23)
    assert _cameras(droid_root, "droid", ("primary",), tiny_vla.processor) == seen  # same seed, same stream
    assert _cameras(droid_root, "droid", ("primary",), tiny_vla.processor, num_workers=2) == seen  # any worker split

    both = _cameras(droid_root, "droid", ("primary", "secondary", "wrist"), tiny_vla.processor)
    for key, cameras in both.items():
        exterior = ["secondary", "primary"] if key.split("_")[0] in swapped else ["primary", "secondary"]
        assert cameras == [*exterior, "wrist"], key  # the two exterior cameras trade places, the wrist stays


def test_other_datasets_never_swap(droid_root, tiny_vla):
    seen = _cameras(droid_root, "droid_wipe", ("primary",), tiny_vla.processor)
    assert set(map(tuple, seen.values())) == {("primary",)}


def test_droid_without_its_second_camera_is_refused(tmp_path, tiny_vla):
    _write_droid(tmp_path, "droid", ("primary", "wrist"))
    with pytest.raises(ValueError, match=r"droid.*swaps views \['primary', 'secondary'\].*manifest\.json"):
        _cameras(tmp_path, "droid", ("primary",), tiny_vla.processor)
