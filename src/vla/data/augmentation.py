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

* brightness: identical (max |diff| 0); contrast: 4.8e-7 (its mean is accumulated in float64, then float32).
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

Two places to run it (``VLADataModule(augment_on=...)``): ``worker`` calls :class:`OpenVLAAugmentation`
on each image in the loader workers; ``device`` has the workers only draw the parameters
(:meth:`OpenVLAAugmentation.sample`, the same draws in the same order, packed by
:meth:`AugmentationParams.as_array`) and :func:`augment_batch` applies them to the whole batch on the
model's device: Pillow's fixed-point bilinear crop reproduced exactly, then the same float32 colour
formulas (identical pixels on CPU; on other devices float32 rounding may move rare pixels by one level).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
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
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` with each channel's mean over H, W.

    The mean is accumulated in float64 and rounded to float32: numpy's float32 sum over the strided
    H, W axes is sequential (off by up to ~7e-5 at 224 px), and the batched torch path
    (:func:`augment_batch`) gets the same float32 mean this way, whatever its summation order.
    """
    mean = x.mean(axis=(-3, -2), keepdims=True, dtype=np.float64).astype(np.float32)
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

    def as_array(self) -> np.ndarray:
        """The parameters as float32 [8] in field order (integers and float32 draws are exact in float32)."""
        return np.array(dataclasses.astuple(self), dtype=np.float32)


PARAMS_SIZE = len(dataclasses.fields(AugmentationParams))


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


# ------------------------------------------------------------------------------------ batched torch
# The same ops on a batch already on the model's device, with parameters drawn in the workers.
_PIL_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images (32 - 8 - 2 bits)
# Images per pass on a CPU: each op's operands then stay in cache (measured 3.2-3.8 ms of CPU per
# 224 px image in passes of 4, 3.9-7.9 ms in one pass of 32); a GPU takes the whole batch at once.
_CPU_CHUNK = 4


def _pil_bilinear_taps(start: torch.Tensor, crop: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Pillow's bilinear taps for resizing the window ``start .. start + crop`` of an axis back to ``size``.

    Per sample and output index: the two source indices and their fixed-point weights, computed
    as Pillow does (float64 centres ``start + (i + 0.5) * crop / size``, taps clipped to the image
    and renormalised, weights rounded to ``2**22``), so the uint8 result is Pillow's exactly.
    """
    start, crop = start.to(torch.float64)[:, None], crop.to(torch.float64)[:, None]
    center = start + (torch.arange(size, device=start.device, dtype=torch.float64) + 0.5) * (crop / size)
    first = torch.clamp(torch.floor(center - 0.5), min=0)  # Pillow: (int)(center - support + 0.5), >= 0
    stop = torch.clamp(torch.floor(center + 1.5), max=size)  # exclusive; support 1 for upscaling
    weight0 = torch.clamp(1 - torch.abs(first + 0.5 - center), min=0)
    weight1 = torch.where(stop - first > 1, torch.clamp(1 - torch.abs(first + 1.5 - center), min=0), 0.0)
    total = weight0 + weight1
    scale = float(1 << _PIL_PRECISION_BITS)
    fixed0 = torch.floor(weight0 / total * scale + 0.5).to(torch.int32)
    fixed1 = torch.floor(weight1 / total * scale + 0.5).to(torch.int32)
    index0 = first.to(torch.int64)
    index1 = torch.clamp(index0 + 1, max=size - 1)
    return index0, index1, fixed0, fixed1


def _pil_resample_axis(x: torch.Tensor, taps: tuple[torch.Tensor, ...], dim: int) -> torch.Tensor:
    """One Pillow pass along ``dim`` (2: rows, 3: columns) of uint8 [N, C, H, W], rounded and clipped to uint8 as Pillow does."""
    index0, index1, fixed0, fixed1 = taps
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = index0.shape[1]
    expand = list(x.shape)
    expand[dim] = index0.shape[1]

    def gather(index: torch.Tensor) -> torch.Tensor:  # gathering uint8 moves a quarter of the bytes of int32
        return torch.gather(x, dim, index.view(shape).expand(expand)).to(torch.int32)

    acc = gather(index0) * fixed0.view(shape) + gather(index1) * fixed1.view(shape) + (1 << (_PIL_PRECISION_BITS - 1))
    return torch.clamp(acc >> _PIL_PRECISION_BITS, 0, 255).to(torch.uint8)


def crop_and_resize_batch(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, crop_h: torch.Tensor,
                          crop_w: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, H, W]: :func:`pil_crop_and_resize` per sample, exactly."""
    height, width = images.shape[-2:]
    x = _pil_resample_axis(images, _pil_bilinear_taps(left, crop_w, width), dim=3)  # Pillow: horizontal pass first
    return _pil_resample_axis(x, _pil_bilinear_taps(top, crop_h, height), dim=2)


def _rgb_to_hsv_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float [N, 3, H, W] -> hue, saturation, value [N, H, W]: :func:`rgb_to_hsv` op for op."""
    r, g, b = x.unbind(1)
    value = x.amax(1)
    delta = value - x.amin(1)
    safe_delta = torch.where(delta > 0, delta, 1)
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, 1), 0)
    hue = torch.where(value == r, (g - b) / safe_delta,
                      torch.where(value == g, 2 + (b - r) / safe_delta, 4 + (r - g) / safe_delta))
    hue = torch.where(delta > 0, torch.remainder(hue / 6, 1.0), 0)
    return hue, saturation, value


def augment_batch(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] + float32 [N, 8] (:meth:`AugmentationParams.as_array`) -> augmented uint8 [N, 3, H, W].

    :meth:`OpenVLAAugmentation.apply` for a whole batch on its device: the crop is Pillow's
    fixed-point bilinear resampling (bit-exact), the colour ops the same float32 formulas, so the
    result is the per-sample numpy path's: identical on CPU; another device's float32 rounding may
    move rare pixels by one level (the bound tests/test_device_augmentation.py allows).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {list(images.shape)}")
    if params.shape != (images.shape[0], PARAMS_SIZE):
        raise ValueError(f"expected augmentation parameters [{images.shape[0]}, {PARAMS_SIZE}], got {list(params.shape)}")
    params = params.to(images.device, torch.float32)
    if images.device.type == "cpu" and images.shape[0] > _CPU_CHUNK:
        return torch.cat([augment_batch(chunk, chunk_params)
                          for chunk, chunk_params in zip(images.split(_CPU_CHUNK), params.split(_CPU_CHUNK))])
    top, left, crop_h, crop_w, brightness, contrast, saturation, hue = (p.view(-1, 1, 1, 1) for p in params.unbind(1))
    x = crop_and_resize_batch(images, top.flatten(), left.flatten(), crop_h.flatten(), crop_w.flatten())
    x = x.to(torch.float32) / 255.0
    x = torch.clamp(x + brightness, 0, 1)
    mean = x.mean(dim=(-2, -1), keepdim=True, dtype=torch.float64).to(torch.float32)  # as adjust_contrast
    x = torch.clamp((x - mean) * contrast + mean, 0, 1)
    h, s, v = _rgb_to_hsv_batch(x)
    s = torch.clamp(s * saturation[:, 0], 0, 1)
    h = torch.remainder(h + hue[:, 0], 1.0)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + (h * 6)[:, None], 6)
    v, s = v[:, None], s[:, None]
    x = torch.clamp(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1), 0, 1)
    return torch.round(x * 255.0).to(torch.uint8)


AUGMENT_PARAMS_KEY = "image_aug_params"  # batch key of the drawn parameters: float32 [B, 8] or [B, V, 8]


def augment_pixel_values(pixel_values: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """:func:`augment_batch` on a batch's ``pixel_values``: [B, 3, H, W] with [B, 8], or [B, V, 3, H, W] with [B, V, 8]."""
    if pixel_values.shape[:-3] != params.shape[:-1]:
        raise ValueError(f"augmentation parameters {list(params.shape)} do not match pixel_values {list(pixel_values.shape)}")
    images = pixel_values.reshape(-1, *pixel_values.shape[-3:])
    return augment_batch(images, params.reshape(-1, params.shape[-1])).view(pixel_values.shape)
