"""OpenVLA's training-time image augmentation, seeded so a data stream stays reproducible.

OpenVLA (dlimp ``augment_image``) applies, in this order and clipping to [0, 1] after each op:
random resized crop (scale 0.9, ratio 1.0, bilinear resize back), brightness (additive delta in
[-0.2, 0.2]), contrast (factor in [0.8, 1.2] around each channel's mean), saturation (factor in
[0.8, 1.2] on HSV saturation) and hue (shift in [-0.05, 0.05] of the colour circle). Each op is a
function with explicit parameters (:func:`crop_and_resize`, :func:`adjust_brightness`,
:func:`adjust_contrast`, :func:`adjust_saturation`, :func:`adjust_hue`) reproducing the ``tf.image``
definition in numpy; ``tests/test_augmentation_tf.py`` measures each against TensorFlow. It runs on
the image already resized to the backbone's resolution.

Measured against TensorFlow (float32 images in [0, 1]; see the test for the bounds):

* brightness: identical (max |diff| 0); contrast: 4.8e-7 (float32 mean summation order).
* saturation / hue: one RGB -> HSV -> RGB round trip each, as TF's fused kernels; max |diff| 9.8e-7 / 9.5e-7.
* crop: :func:`crop_and_resize` is ``tf.image.crop_and_resize`` (normalised box, corners mapped to
  ``y1 * (H - 1)`` .. ``y2 * (H - 1)``, bilinear, 0 outside the image): identical on dlimp's boxes.
  :class:`OpenVLAAugmentation` itself keeps the uint8 PIL crop it has always used (so seeded data
  streams do not change): an integer ``top``/``left`` window of ``round(side * sqrt(0.9))`` pixels
  resized back with PIL bilinear, i.e. pixel-centre sampling ``y = top + (i + 0.5) * crop_h / H - 0.5``.
  That is the same bilinear interpolation as TF with the box :func:`pil_crop_box`, to within uint8
  rounding (PIL rounds to uint8 after each of its two separable passes: <= 1/255, measured 0.99/255),
  except where that grid reaches 0.03 px past the image edge (``top == 0`` or a crop flush with the
  bottom/right): PIL clamps to the edge pixel where
  TF would fill 0. dlimp's own box (continuous offsets in ``[0, 1 - sqrt(0.9)]``, zoom
  ``sqrt(0.9) = 0.9487`` per side) is the same crop family: ours zooms by ``crop_h / H`` (213/224 =
  0.9509 at 224 px) and draws integer offsets.
* The pipeline converts back with ``round(x * 255)``; dlimp's ``convert_image_dtype`` truncates
  ``x * 255.5`` (at most one uint8 level apart).
* Saturation and hue share one HSV round trip in ``__call__`` (dlimp clips between them, a no-op:
  HSV -> RGB with s, v in [0, 1] stays in [0, 1]); running them as two calls differs by float rounding.
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


# ---------------------------------------------------------------------------------------------- ops
def crop_and_resize(image: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int] | None = None,
                    extrapolation_value: float = 0.0) -> np.ndarray:
    """float HxWxC -> ``size`` (default HxW), as ``tf.image.crop_and_resize`` with one bilinear box.

    ``box`` is ``(y1, x1, y2, x2)`` normalised: output row ``i`` samples source row
    ``y1 (H - 1) + i (y2 - y1) (H - 1) / (out_h - 1)``; samples outside the image get ``extrapolation_value``.
    """
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    out_h, out_w = size or (height, width)
    y1, x1, y2, x2 = np.asarray(box, dtype=np.float32)  # TF's kernel: float32 box and coordinates

    def axis(lo: np.float32, hi: np.float32, n_in: int, n_out: int):
        if n_out > 1:
            step = (hi - lo) * np.float32(n_in - 1) / np.float32(n_out - 1)
            pos = lo * np.float32(n_in - 1) + np.arange(n_out, dtype=np.float32) * step
        else:
            pos = np.array([np.float32(0.5) * (lo + hi) * np.float32(n_in - 1)], dtype=np.float32)
        inside = (pos >= 0) & (pos <= n_in - 1)
        low = np.clip(np.floor(pos), 0, n_in - 1).astype(np.int64)
        high = np.clip(np.ceil(pos), 0, n_in - 1).astype(np.int64)
        return low, high, (pos - np.floor(pos)).astype(np.float32), inside

    top, bottom, dy, in_y = axis(y1, y2, height, out_h)
    left, right, dx, in_x = axis(x1, x2, width, out_w)
    dx = dx[None, :, None]
    top_row = image[top][:, left] + (image[top][:, right] - image[top][:, left]) * dx
    bottom_row = image[bottom][:, left] + (image[bottom][:, right] - image[bottom][:, left]) * dx
    out = top_row + (bottom_row - top_row) * dy[:, None, None]
    return np.where((in_y[:, None] & in_x[None, :])[..., None], out, np.float32(extrapolation_value)).astype(np.float32)


def pil_crop_box(top: int, left: int, crop_h: int, crop_w: int, height: int, width: int) -> tuple[float, float, float, float]:
    """The ``crop_and_resize`` box sampling the grid of :func:`pil_crop_and_resize` (same size out as in)."""
    def span(start: int, crop: int, n: int) -> tuple[float, float]:
        first = start + 0.5 * crop / n - 0.5  # pixel-centre sampling of output 0 and n - 1
        last = start + (n - 0.5) * crop / n - 0.5
        return first / (n - 1), last / (n - 1)

    (y1, y2), (x1, x2) = span(top, crop_h, height), span(left, crop_w, width)
    return y1, x1, y2, x2


def pil_crop_and_resize(image: np.ndarray, top: int, left: int, crop_h: int, crop_w: int) -> np.ndarray:
    """uint8 HxWx3: the ``crop_h`` x ``crop_w`` window at (``top``, ``left``) resized back to HxW, PIL bilinear."""
    height, width = image.shape[:2]
    box = (left, top, left + crop_w, top + crop_h)
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, box=box))


def adjust_brightness(x: np.ndarray, delta: float) -> np.ndarray:
    """``tf.image.adjust_brightness``: add ``delta`` (no clipping)."""
    return x + np.float32(delta)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` with each channel's mean over H, W."""
    mean = x.mean(axis=(-3, -2), keepdims=True)
    return (x - mean) * np.float32(factor) + mean


def adjust_saturation_hue(x: np.ndarray, saturation: float = 1.0, hue_delta: float = 0.0) -> np.ndarray:
    """Scale HSV saturation by ``saturation`` (clipped to [0, 1]) and shift hue by ``hue_delta`` in one round trip."""
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0, 1)
    hsv[..., 0] = (hsv[..., 0] + np.float32(hue_delta)) % 1.0
    return hsv_to_rgb(hsv)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """``tf.image.adjust_saturation``: HSV saturation times ``factor``, clipped to [0, 1]."""
    return adjust_saturation_hue(x, saturation=factor)


def adjust_hue(x: np.ndarray, delta: float) -> np.ndarray:
    """``tf.image.adjust_hue``: rotate HSV hue by ``delta`` (a fraction of the colour circle)."""
    return adjust_saturation_hue(x, hue_delta=delta)


@dataclass(frozen=True)
class AugmentationParams:
    """One draw of :class:`OpenVLAAugmentation`'s random parameters."""

    top: int
    left: int
    crop_h: int
    crop_w: int
    brightness: float
    contrast: float
    saturation: float
    hue: float


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

    def sample(self, height: int, width: int, rng: np.random.Generator) -> AugmentationParams:
        """Draw the parameters of one image (the order of draws is part of the seeded stream: keep it)."""
        side = math.sqrt(self.crop_area)  # ratio 1.0: the crop keeps the aspect, sqrt(area) per side
        crop_h, crop_w = max(1, round(height * side)), max(1, round(width * side))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        return AugmentationParams(
            top=top, left=left, crop_h=crop_h, crop_w=crop_w,
            brightness=float(np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta))),
            contrast=float(np.float32(rng.uniform(*self.contrast_range))),
            saturation=float(np.float32(rng.uniform(*self.saturation_range))),
            hue=float(np.float32(rng.uniform(-self.hue_delta, self.hue_delta))),
        )

    @staticmethod
    def apply(image: np.ndarray, params: AugmentationParams) -> np.ndarray:
        """uint8 HxWx3 -> augmented uint8 HxWx3 with explicit parameters, clipping to [0, 1] after each op."""
        p = params
        x = pil_crop_and_resize(image, p.top, p.left, p.crop_h, p.crop_w).astype(np.float32) / 255.0
        x = np.clip(adjust_brightness(x, p.brightness), 0, 1)
        x = np.clip(adjust_contrast(x, p.contrast), 0, 1)
        x = np.clip(adjust_saturation_hue(x, p.saturation, p.hue), 0, 1)
        return np.round(x * 255.0).astype(np.uint8)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 HxWx3 -> augmented uint8 HxWx3 of the same size; all randomness drawn from ``rng``."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
        return self.apply(image, self.sample(*image.shape[:2], rng))
