"""Batched torch augmentation (``augment_on="device"``) against the per-sample numpy path it replaces.

Tolerance: the crop (a batched port of ``tf.image.crop_and_resize``) and the colour ops are the same
float32 operations in the same order (both take the contrast mean in float64), so on CPU the pixels
come out identical (asserted). The end-to-end assertions allow what another device's float32
rounding may do: at most 1 uint8 level, on at most 0.1% of the pixels.
"""

from __future__ import annotations

import dataclasses

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from test_chunk_data import write_views_dataset
from test_datamodule import data_root, keys, make_dm  # noqa: F401  (data_root is a fixture)
from vla.contract.image_transform import ImageTransform
from vla.data import VLADataModule
from vla.data.augmentation import (AUGMENT_PARAMS_KEY, AugmentationParams, OpenVLAAugmentation, augment_batch,
                                   crop_and_resize, crop_and_resize_batch, to_float)

MAX_LEVELS_APART = 1
MAX_FRACTION_APART = 1e-3


def _images(shape: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth gradients plus noise: realistic colours, and every hue sector and saturation level occur."""
    rng = np.random.default_rng(seed)
    height, width = shape
    ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1, 3) + np.linspace(0, 128, height)[:, None, None]
    return [np.clip(ramp * rng.uniform(0.5, 1.0) + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]


def _params(count: int) -> list[AugmentationParams]:
    """Seeded draws, plus the extreme draws (u = 0 and the largest u: boxes flush with each edge)."""
    augment = OpenVLAAugmentation()
    extremes = [augment.params(0.0), augment.params(np.float32(1 - 2.0 ** -23))]
    return extremes + [augment.sample(np.random.default_rng(i)) for i in range(count - len(extremes))]


def _batch(images: list[np.ndarray], params: list[AugmentationParams]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pixels, torch.from_numpy(np.stack([p.as_array() for p in params]))


def _levels_apart(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs()
    return int(diff.max()), float((diff > 0).float().mean())


@pytest.mark.parametrize("shape", [(224, 224), (37, 53)])
def test_batched_crop_is_the_numpy_crop_exactly(shape):
    images, params = _images(shape, 8), _params(8)
    params[-1] = AugmentationParams(-0.1, 0.05, 0.8, 1.1, 0, 1, 1, 0)  # a box past the edges: zeros there
    pixels, packed = _batch(images, params)
    ours = crop_and_resize_batch(pixels.to(torch.float32) * float(np.float32(1 / 255)), packed[:, :4])
    for image, p, got in zip(images, params, ours):
        assert np.array_equal(got.permute(1, 2, 0).numpy(), crop_and_resize(to_float(image), p.box))


@pytest.mark.parametrize("shape", [(224, 224), (37, 53)])
def test_batched_augmentation_matches_numpy_per_sample(shape):
    images, params = _images(shape, 8, seed=1), _params(8)
    pixels, packed = _batch(images, params)
    ours = augment_batch(pixels, packed)
    want = torch.from_numpy(np.stack([OpenVLAAugmentation.apply(image, p) for image, p in zip(images, params)]))
    assert torch.equal(ours, want.permute(0, 3, 1, 2))  # on CPU: the same float32 operations, bit for bit
    assert not torch.equal(ours, pixels)


def test_batched_augmentation_refuses_mismatched_inputs():
    pixels, packed = _batch(_images((16, 16), 2), _params(2))
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(pixels.float(), packed)
    with pytest.raises(ValueError, match=r"parameters \[2, 8\]"):
        augment_batch(pixels, packed[:1])


def test_params_round_trip_through_float32():
    p = OpenVLAAugmentation().sample(np.random.default_rng(3))
    assert AugmentationParams(*p.as_array().tolist()) == p


def test_drawn_boxes_are_dlimps():
    """sqrt(0.9) per side, offsets spread continuously over [0, 1 - sqrt(0.9)], one draw per image from the generator."""
    augment, rng = OpenVLAAugmentation(), np.random.default_rng(0)
    boxes = np.array([augment.sample(rng).box for _ in range(4000)], dtype=np.float32)
    side, room = np.sqrt(np.float32(0.9)), 1 - np.sqrt(np.float32(0.9))
    assert np.allclose(boxes[:, 2:] - boxes[:, :2], side, atol=1e-7)
    offsets = boxes[:, 0]
    assert np.array_equal(offsets, boxes[:, 1])  # dlimp draws both offsets with the same seed
    assert offsets.min() >= 0 and offsets.max() < room and boxes[:, 2:].max() <= 1
    assert len(np.unique(offsets)) > 3990  # continuous, not a pixel grid (room is 2.8 px at 224)
    counts, _ = np.histogram(offsets, bins=10, range=(0, room))
    assert counts.min() > 330 and counts.max() < 470  # uniform: 400 per bin
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    augment.sample(a)
    b.integers(0, 2)
    assert a.bit_generator.state == b.bit_generator.state  # exactly one draw per image


@pytest.mark.parametrize("num_workers", [0, 2])
def test_device_mode_streams_the_same_samples_and_pixels(data_root, tiny_vla, num_workers):  # noqa: F811
    settings = dict(mixture={"vla_sim": 1.0, "bridge_orig": 2.0}, shuffle_buffer=5, image_aug=True, num_workers=num_workers,
                    samples_per_epoch=16)
    on_worker = list(make_dm(data_root, tiny_vla.processor, **settings).train_dataloader())
    device_dm = make_dm(data_root, tiny_vla.processor, augment_on="device", **settings)
    on_device = list(device_dm.train_dataloader())
    unaugmented = list(make_dm(data_root, tiny_vla.processor, **{**settings, "image_aug": False}).train_dataloader())
    assert keys(on_device) == keys(on_worker)
    for raw, plain, want in zip(on_device, unaugmented, on_worker):
        assert raw[AUGMENT_PARAMS_KEY].shape == (4, 8) and torch.equal(raw["pixel_values"], plain["pixel_values"])
        got = device_dm.on_after_batch_transfer(raw, 0)
        assert AUGMENT_PARAMS_KEY not in got and torch.equal(got["input_ids"], want["input_ids"])
        levels, fraction = _levels_apart(got["pixel_values"], want["pixel_values"])
        assert levels <= MAX_LEVELS_APART and fraction <= MAX_FRACTION_APART


def test_device_mode_leaves_validation_alone_and_checks_its_option(data_root, tiny_vla):  # noqa: F811
    dm = make_dm(data_root, tiny_vla.processor, image_aug=True, augment_on="device")
    batch = next(iter(dm.val_dataloader()))
    assert AUGMENT_PARAMS_KEY not in batch
    assert torch.equal(dm.on_after_batch_transfer(dict(batch), 0)["pixel_values"], batch["pixel_values"])
    with pytest.raises(ValueError, match="augment_on must be one of"):
        make_dm(data_root, tiny_vla.processor, augment_on="gpu")


def test_device_mode_refuses_a_transform_that_reshapes_the_augmented_image(data_root, tiny_vla):  # noqa: F811
    """Under resize-crop with crop_pct < 1 the workers augment before the backbone's crop; the device could not."""
    crops = ImageTransform(224, [(0.5, 0.5, 0.5)], [(0.5, 0.5, 0.5)], resize_strategy="resize-crop", crop_pct=0.875)
    processor = dataclasses.replace(tiny_vla.processor, image_transform=crops)
    with pytest.raises(ValueError, match="augment_on='worker'"):
        make_dm(data_root, processor, image_aug=True, augment_on="device").train_dataloader()
    make_dm(data_root, processor, image_aug=True, augment_on="worker").train_dataloader()


class _RecordPixels(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.batches.append(batch)
        return (self.weight * batch["pixel_values"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_augments_every_view_of_every_training_batch_on_the_device(tmp_path, tiny_vla):
    """Through ``Trainer.fit`` with two views: the step sees augmented pixels (each view its own draws), no parameters."""
    write_views_dataset(tmp_path / "data")
    processor = dataclasses.replace(tiny_vla.processor, action_head="l1", chunk_size=4, action_dim=7)

    def datamodule(augment_on: str) -> VLADataModule:
        return VLADataModule(tmp_path / "data", batch_size=4, num_workers=0, shuffle_buffer=5, seed=3, image_aug=True,
                             augment_on=augment_on, samples_per_epoch=12, processor=processor, chunk_size=4,
                             image_views=["primary", "wrist"], val_split=None)

    seen = {}
    for mode in ("worker", "device"):
        module = _RecordPixels()
        trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(module, datamodule=datamodule(mode))
        seen[mode] = module.batches
    assert len(seen["device"]) == 3
    for got, want in zip(seen["device"], seen["worker"]):
        assert AUGMENT_PARAMS_KEY not in got and got["pixel_values"].shape == (4, 2, 3, 224, 224)
        levels, fraction = _levels_apart(got["pixel_values"], want["pixel_values"])
        assert levels <= MAX_LEVELS_APART and fraction <= MAX_FRACTION_APART


def test_lightning_resume_with_device_augmentation_continues_the_same_pixels(tmp_path, tiny_vla):
    """The parameters travel in the stream, so a resumed run augments exactly what the uninterrupted run did."""
    from test_datamodule_lightning import _fit, _RecordChunks

    write_views_dataset(tmp_path / "data")
    processor = dataclasses.replace(tiny_vla.processor, action_head="l1", chunk_size=4, action_dim=7)

    def datamodule() -> VLADataModule:
        return VLADataModule(tmp_path / "data", batch_size=4, num_workers=2, shuffle_buffer=5, seed=3, image_aug=True,
                             augment_on="device", samples_per_epoch=20, processor=processor, chunk_size=4,
                             image_views=["primary", "wrist"], proprio=True)

    reference, resumed = _RecordChunks(), _RecordChunks()
    _fit(tmp_path / "data", processor, 6, tmp_path / "ref", module=reference, datamodule=datamodule)
    checkpoint = tmp_path / "ref" / "epoch=0-step=3.ckpt"
    _fit(tmp_path / "data", processor, 6, tmp_path / "resumed", str(checkpoint), module=resumed, datamodule=datamodule)
    assert resumed.seen == reference.seen[3:]
    for got, want in zip(resumed.tensors, reference.tensors[3:]):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
