"""OpenVLA's training-time image augmentation, seeded so a data stream stays reproducible.

OpenVLA runs dlimp's ``augment_image`` with ``image_augment_kwargs`` (random resized crop scale 0.9
ratio 1, brightness 0.2, contrast and saturation [0.8, 1.2], hue 0.05) on the uint8 image already
resized to the backbone's resolution: ``convert_image_dtype`` to float32 (``x * float32(1/255)``),
then in float32, clipping to [0, 1] after each op, ``tf.image.crop_and_resize`` on a normalised box
of ``sqrt(0.9)`` per side at offsets in ``[0, 1 - sqrt(0.9)]`` (bilinear, back to the input size),
brightness, contrast, saturation and hue, and ``convert_image_dtype(saturate=True)`` back to uint8
(``x * 255.5`` clipped to [0, 255] and truncated). Each op is a numpy function with explicit
parameters (:func:`vla.contract.images.crop_and_resize`, shared with eval's center crop; :func:`adjust_brightness`, :func:`adjust_contrast`,
:func:`adjust_saturation`, :func:`adjust_hue`).

OpenVLA seeds every op of one image with the same seed, so all its parameters come from one
uniform draw ``u`` (23-bit float32, as TF's ``stateless_random_uniform``): offsets ``u (1 -
sqrt(0.9))`` on both axes, brightness ``-0.2 + 0.4 u``, contrast and saturation ``0.8 + 0.4 u``,
hue ``-0.05 + 0.1 u``, each in TF's float32 arithmetic. :meth:`OpenVLAAugmentation.sample` draws
that ``u`` from the sample's generator (one draw per image; this replaced the integer-pixel PIL crop
and five independent draws, so seeded streams changed once).

Measured against TensorFlow (tests/test_augmentation_tf.py, which also runs dlimp's sequence with
TF's own draws): crop, brightness, conversions identical; contrast within 4.8e-7 (its mean is
accumulated in float64, then float32); saturation / hue within 9.8e-7 / 9.5e-7 (the closed-form
HSV round trip, not TF's fused kernels). After the final truncation the uint8 output equals TF's
but for rare values one level apart (measured 7e-6 of them: 32 of 4.6M, 40 images with TF's draws).

Two places to run it (``VLADataModule(augment_on=...)``): ``worker`` calls :class:`OpenVLAAugmentation`
on each image in the loader workers; ``device`` has the workers only draw the parameters (packed by
:meth:`AugmentationParams.as_array`) and :func:`augment_batch` applies them to the whole batch on the
model's device with the same float32 arithmetic (identical pixels on CPU; on other devices float32
rounding may move rare pixels by one level).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from vla.contract.images import FLOAT_TO_UINT8_SCALE, UINT8_TO_FLOAT_SCALE, crop_and_resize, to_float, to_uint8


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (..., 3) -> HSV in [0, 1], as ``tf.image.rgb_to_hsv``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = np.maximum(np.maximum(r, g), b)
    delta = value - np.minimum(np.minimum(r, g), b)
    saturation = np.divide(delta, value, out=np.zeros_like(value), where=value > 0)
    safe_delta = np.where(delta > 0, delta, rgb.dtype.type(1))
    hue = np.where(value == r, (g - b) / safe_delta, np.where(value == g, 2 + (b - r) / safe_delta, 4 + (r - g) / safe_delta))
    hue /= 6
    hue = np.where(delta > 0, np.where(hue < 0, hue + 1, hue), 0)  # (hue / 6) mod 1, hue / 6 in [-1/6, 5/6)
    return np.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (closed form: channel n = v - v s clip(min(k, 4 - k), 0, 1))."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = np.array([5, 3, 1], dtype=hsv.dtype) + h * 6  # in [1, 12) for h in [0, 1]: k mod 6 is exact
    k = np.where(k >= 6, k - 6, k)
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


# ---------------------------------------------------------------------------------------------- ops
def adjust_brightness(x: np.ndarray, delta: float) -> np.ndarray:
    """``tf.image.adjust_brightness``: add ``delta`` (no clipping)."""
    return x + np.float32(delta)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` with each channel's mean over H, W.

    The mean is accumulated in float64 and rounded to float32: numpy's float32 sum over the strided
    H, W axes is sequential (off by up to ~7e-5 at 224 px), and the batched torch path
    (:func:`augment_batch`) gets the same float32 mean this way, whatever its summation order.
    """
    mean = x.mean(axis=(-3, -2), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x - mean) * np.float32(factor) + mean


def adjust_saturation_hue(x: np.ndarray, saturation: float = 1.0, hue_delta: float = 0.0) -> np.ndarray:
    """Scale HSV saturation by ``saturation`` (clipped to [0, 1]) and shift hue by ``hue_delta`` in one round trip."""
    if not -1 <= hue_delta <= 1:
        raise ValueError(f"hue delta must be in [-1, 1] (as tf.image.adjust_hue), got {hue_delta}")
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0, 1)
    hue = hsv[..., 0] + np.float32(hue_delta)  # in [-1, 2) for |delta| <= 1 (TF's range): mod 1 as one shift
    hsv[..., 0] = np.where(hue < 0, hue + 1, np.where(hue >= 1, hue - 1, hue))
    return hsv_to_rgb(hsv)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """``tf.image.adjust_saturation``: HSV saturation times ``factor``, clipped to [0, 1]."""
    return adjust_saturation_hue(x, saturation=factor)


def adjust_hue(x: np.ndarray, delta: float) -> np.ndarray:
    """``tf.image.adjust_hue``: rotate HSV hue by ``delta`` (a fraction of the colour circle)."""
    return adjust_saturation_hue(x, hue_delta=delta)


_FLOAT_MAX = np.float32(1.0)
_UNIFORM_BITS = 23  # TF's float32 uniform: 23 random mantissa bits, a multiple of 2**-23 in [0, 1)


def _tf_uniform(u: np.float32, low: float, high: float) -> np.float32:
    """``stateless_random_uniform(minval=low, maxval=high)`` for the unit draw ``u``: ``u (high - low) + low`` in float32."""
    low, high = np.float32(low), np.float32(high)
    return np.float32(u * (high - low) + low)


@dataclass(frozen=True)
class AugmentationParams:
    """One image's parameters: dlimp's crop box (normalised ``y1, x1, y2, x2``) and the four colour factors.

    All float32 values, so :meth:`as_array` carries them to the device path exactly.
    """

    y1: float
    x1: float
    y2: float
    x2: float
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.y1, self.x1, self.y2, self.x2

    def as_array(self) -> np.ndarray:
        """The parameters as float32 [8] in field order."""
        return np.array(dataclasses.astuple(self), dtype=np.float32)


PARAMS_SIZE = len(dataclasses.fields(AugmentationParams))


@dataclass(frozen=True)
class OpenVLAAugmentation:
    """dlimp's ``augment_image`` with OpenVLA's kwargs (crop ratio 1: the crop keeps the image's aspect)."""

    crop_area: float = 0.9
    brightness_delta: float = 0.2
    contrast_range: tuple[float, float] = (0.8, 1.2)
    saturation_range: tuple[float, float] = (0.8, 1.2)
    hue_delta: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.crop_area <= 1:
            raise ValueError(f"crop_area must be in (0, 1], got {self.crop_area}")
        if not 0 <= self.hue_delta <= 0.5:
            raise ValueError(f"hue_delta must be in [0, 0.5] (as tf.image.random_hue), got {self.hue_delta}")

    def params(self, u: float) -> AugmentationParams:
        """The parameters dlimp derives from one image's unit draw ``u`` (every op of an image shares OpenVLA's seed).

        random_resized_crop: scale ``uniform(crop_area, crop_area)``, ratio ``exp(uniform(log 1, log 1)) = 1``,
        side ``clip(sqrt(scale / ratio), 0, 1)``, offsets ``uniform(0, 1 - side)``; then each colour factor.
        """
        u = np.float32(u)
        scale = _tf_uniform(u, self.crop_area, self.crop_area)
        ratio = np.exp(_tf_uniform(u, 0.0, 0.0))  # log(1.0) = 0 at both ends
        height = np.clip(np.sqrt(scale / ratio), 0, _FLOAT_MAX)
        width = np.clip(np.sqrt(scale * ratio), 0, _FLOAT_MAX)
        top, left = _tf_uniform(u, 0.0, _FLOAT_MAX - height), _tf_uniform(u, 0.0, _FLOAT_MAX - width)
        return AugmentationParams(
            y1=float(top), x1=float(left), y2=float(top + height), x2=float(left + width),
            brightness=float(_tf_uniform(u, -self.brightness_delta, self.brightness_delta)),
            contrast=float(_tf_uniform(u, *self.contrast_range)),
            saturation=float(_tf_uniform(u, *self.saturation_range)),
            hue=float(_tf_uniform(u, -self.hue_delta, self.hue_delta)),
        )

    def sample(self, rng: np.random.Generator) -> AugmentationParams:
        """Draw one image's parameters: exactly one draw from ``rng`` (part of the seeded stream: keep it so)."""
        return self.params(np.float32(rng.integers(0, 1 << _UNIFORM_BITS)) * np.float32(2.0 ** -_UNIFORM_BITS))

    @staticmethod
    def apply(image: np.ndarray, params: AugmentationParams) -> np.ndarray:
        """uint8 HxWx3 -> augmented uint8 HxWx3 with explicit parameters, in float32, clipping to [0, 1] after each op."""
        p = params
        x = np.clip(crop_and_resize(to_float(image), p.box), 0, 1)
        x = np.clip(adjust_brightness(x, p.brightness), 0, 1)
        x = np.clip(adjust_contrast(x, p.contrast), 0, 1)
        x = np.clip(adjust_saturation(x, p.saturation), 0, 1)
        x = np.clip(adjust_hue(x, p.hue), 0, 1)
        return to_uint8(x)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 HxWx3 -> augmented uint8 HxWx3 of the same size; all randomness drawn from ``rng``."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
        return self.apply(image, self.sample(rng))


# ------------------------------------------------------------------------------------ batched torch
# The same ops on a batch already on the model's device, with parameters drawn in the workers.
# Images per pass on a CPU: each op's float32 operands then stay in cache (measured on 2 cores, 224 px:
# 2.7-3.4 ms per image in passes of 2, 3.6-6.0 in passes of 4, 6.6 in one pass of 32); a GPU takes the
# whole batch at once.
_CPU_CHUNK = 2


def _crop_axis_batch(low: torch.Tensor, high: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """:func:`crop_and_resize`'s sampling of one axis per sample (output size = input size), float32 as TF's kernel.

    Returns the low / high source indices [N, size], the float32 weight of the high one and whether
    the position lies inside the image (TF fills 0 outside).
    """
    if size > 1:
        step = (high - low) * float(size - 1) / float(size - 1)
        position = low * float(size - 1) + torch.arange(size, device=low.device, dtype=torch.float32) * step
    else:
        position = (0.5 * (low + high) * float(size - 1)).expand(-1, 1)
    floor = torch.floor(position)
    inside = (position >= 0) & (position <= size - 1)
    lower = torch.clamp(floor, 0, size - 1).to(torch.int64)
    upper = torch.clamp(torch.ceil(position), 0, size - 1).to(torch.int64)
    return lower, upper, position - floor, inside


def crop_and_resize_batch(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """float32 [N, C, H, W] + normalised boxes [N, 4] (``y1, x1, y2, x2``) -> [N, C, H, W]: :func:`crop_and_resize` per sample."""
    n, c, height, width = x.shape
    y1, x1, y2, x2 = (b[:, None] for b in boxes.unbind(1))
    top, bottom, dy, in_y = _crop_axis_batch(y1, y2, height)
    left, right, dx, in_x = _crop_axis_batch(x1, x2, width)

    def rows(index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 2, index.view(n, 1, height, 1).expand(n, c, height, width))

    def columns(image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(image, 3, index.view(n, 1, 1, width).expand(n, c, height, width))

    dx = dx.view(n, 1, 1, width)
    top_rows, bottom_rows = rows(top), rows(bottom)
    top_left, bottom_left = columns(top_rows, left), columns(bottom_rows, left)
    upper = top_left + (columns(top_rows, right) - top_left) * dx  # TF's order of float32 operations
    lower = bottom_left + (columns(bottom_rows, right) - bottom_left) * dx
    out = upper + (lower - upper) * dy.view(n, 1, height, 1)
    inside = (in_y.view(n, 1, height, 1) & in_x.view(n, 1, 1, width))
    return torch.where(inside, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _rgb_to_hsv_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float [N, 3, H, W] -> hue, saturation, value [N, H, W]: :func:`rgb_to_hsv` op for op."""
    r, g, b = x.unbind(1)
    value = x.amax(1)
    delta = value - x.amin(1)
    safe_delta = torch.where(delta > 0, delta, 1)
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, 1), 0)
    hue = torch.where(value == r, (g - b) / safe_delta,
                      torch.where(value == g, 2 + (b - r) / safe_delta, 4 + (r - g) / safe_delta))
    hue = hue / 6
    hue = torch.where(delta > 0, torch.where(hue < 0, hue + 1, hue), 0)  # mod 1 as rgb_to_hsv: one shift
    return hue, saturation, value


def _adjust_hsv_batch(x: torch.Tensor, saturation: torch.Tensor | float = 1.0,
                      hue: torch.Tensor | float = 0.0) -> torch.Tensor:
    """:func:`adjust_saturation_hue` on float [N, 3, H, W], factors [N, 1, 1] or scalars, op for op."""
    h, s, v = _rgb_to_hsv_batch(x)
    s = torch.clamp(s * saturation, 0, 1)
    h = h + hue  # mod 1 and mod 6 as shifts, as the numpy ops (exact; no division to round)
    h = torch.where(h < 0, h + 1, torch.where(h >= 1, h - 1, h))
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = offsets + (h * 6)[:, None]
    k = torch.where(k >= 6, k - 6, k)
    v, s = v[:, None], s[:, None]
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def augment_batch(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] + float32 [N, 8] (:meth:`AugmentationParams.as_array`) -> augmented uint8 [N, 3, H, W].

    :meth:`OpenVLAAugmentation.apply` for a whole batch on its device, the same float32 operations in
    the same order: identical to the per-sample numpy path on CPU; another device's float32 rounding
    may move rare pixels by one level (the bound tests/test_device_augmentation.py allows).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {list(images.shape)}")
    if params.shape != (images.shape[0], PARAMS_SIZE):
        raise ValueError(f"expected augmentation parameters [{images.shape[0]}, {PARAMS_SIZE}], got {list(params.shape)}")
    params = params.to(images.device, torch.float32)
    if images.device.type == "cpu" and images.shape[0] > _CPU_CHUNK:
        return torch.cat([augment_batch(chunk, chunk_params)
                          for chunk, chunk_params in zip(images.split(_CPU_CHUNK), params.split(_CPU_CHUNK))])
    brightness, contrast, saturation, hue = (p.view(-1, 1, 1, 1) for p in params[:, 4:].unbind(1))
    x = images.to(torch.float32) * float(UINT8_TO_FLOAT_SCALE)
    x = torch.clamp(crop_and_resize_batch(x, params[:, :4]), 0, 1)
    x = torch.clamp(x + brightness, 0, 1)
    mean = x.mean(dim=(-2, -1), keepdim=True, dtype=torch.float64).to(torch.float32)  # as adjust_contrast
    x = torch.clamp((x - mean) * contrast + mean, 0, 1)
    x = torch.clamp(_adjust_hsv_batch(x, saturation=saturation[:, 0]), 0, 1)
    x = torch.clamp(_adjust_hsv_batch(x, hue=hue[:, 0]), 0, 1)
    return torch.clamp(x * float(FLOAT_TO_UINT8_SCALE), 0, 255).to(torch.uint8)


AUGMENT_PARAMS_KEY = "image_aug_params"  # batch key of the drawn parameters: float32 [B, 8] or [B, V, 8]


def augment_pixel_values(pixel_values: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """:func:`augment_batch` on a batch's ``pixel_values``: [B, 3, H, W] with [B, 8], or [B, V, 3, H, W] with [B, V, 8]."""
    if pixel_values.shape[:-3] != params.shape[:-1]:
        raise ValueError(f"augmentation parameters {list(params.shape)} do not match pixel_values {list(pixel_values.shape)}")
    images = pixel_values.reshape(-1, *pixel_values.shape[-3:])
    return augment_batch(images, params.reshape(-1, params.shape[-1])).view(pixel_values.shape)
