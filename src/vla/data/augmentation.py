"""OpenVLA's training-time image augmentation, seeded so a data stream stays reproducible.

OpenVLA (dlimp ``augment_image``) applies, in this order and clipping to [0, 1] after each op:
random resized crop (scale 0.9, ratio 1.0, bilinear resize back), brightness (additive delta in
[-0.2, 0.2]), contrast (factor in [0.8, 1.2] around each channel's mean), saturation (factor in
[0.8, 1.2] on HSV saturation) and hue (shift in [-0.05, 0.05] of the colour circle), with the
``tf.image`` definitions reproduced here in numpy. It runs on the image already resized to the
backbone's resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (..., 3) -> HSV in [0, 1], as ``tf.image.rgb_to_hsv``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    safe_delta = np.where(delta > 0, delta, 1)
    saturation = np.where(value > 0, delta / np.where(value > 0, value, 1), 0)
    hue = np.where(value == r, (g - b) / safe_delta, np.where(value == g, 2 + (b - r) / safe_delta, 4 + (r - g) / safe_delta))
    hue = np.where(delta > 0, (hue / 6) % 1.0, 0)
    return np.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (closed form: channel n = v - v s clip(min(k, 4 - k), 0, 1))."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = (np.array([5, 3, 1], dtype=hsv.dtype) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


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
        side = math.sqrt(self.crop_area)  # ratio 1.0: the crop keeps the aspect, sqrt(area) per side
        crop_h, crop_w = max(1, round(height * side)), max(1, round(width * side))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        box = (left, top, left + crop_w, top + crop_h)
        cropped = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, box=box)
        x = np.asarray(cropped, dtype=np.float32) / 255.0

        x = np.clip(x + np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta)), 0, 1)
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = np.clip((x - mean) * np.float32(rng.uniform(*self.contrast_range)) + mean, 0, 1)
        hsv = rgb_to_hsv(x)
        hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(rng.uniform(*self.saturation_range)), 0, 1)
        hsv[..., 0] = (hsv[..., 0] + np.float32(rng.uniform(-self.hue_delta, self.hue_delta))) % 1.0
        x = np.clip(hsv_to_rgb(hsv), 0, 1)
        return np.round(x * 255.0).astype(np.uint8)
