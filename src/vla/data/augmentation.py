"""OpenVLA's training-time image augmentation, seeded so a data stream stays reproducible.

OpenVLA (dlimp ``augment_image``) applies, in this order and clipping to [0, 1] after each op:
random resized crop (scale 0.9, ratio 1.0, resized back), brightness (additive delta in
[-0.2, 0.2]), contrast (factor in [0.8, 1.2] around each channel's mean), saturation (factor in
[0.8, 1.2]) and hue (shift in [-0.05, 0.05] of the colour circle). It runs on the image already
resized to the backbone's resolution. Saturation and hue use torchvision's kernels, which follow
the same definitions as ``tf.image`` up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class OpenVLAAugmentation:
    crop_area: float = 0.9
    brightness_delta: float = 0.2
    contrast_range: tuple[float, float] = (0.8, 1.2)
    saturation_range: tuple[float, float] = (0.8, 1.2)
    hue_delta: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.crop_area <= 1:
            raise ValueError(f"crop_area must be in (0, 1], got {self.crop_area}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 HxWx3 -> augmented uint8 HxWx3 of the same size; all randomness drawn from ``rng``."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        x = torch.from_numpy(image.copy()).permute(2, 0, 1).to(torch.float32) / 255.0

        side = math.sqrt(self.crop_area)  # ratio 1.0: the crop keeps the aspect, sqrt(area) per side
        crop_h, crop_w = max(1, round(height * side)), max(1, round(width * side))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        x = F.resized_crop(x, top, left, crop_h, crop_w, [height, width], antialias=True).clamp(0, 1)

        x = (x + float(rng.uniform(-self.brightness_delta, self.brightness_delta))).clamp(0, 1)
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = ((x - mean) * float(rng.uniform(*self.contrast_range)) + mean).clamp(0, 1)
        x = F.adjust_saturation(x, float(rng.uniform(*self.saturation_range))).clamp(0, 1)
        x = F.adjust_hue(x, float(rng.uniform(-self.hue_delta, self.hue_delta))).clamp(0, 1)
        return (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
