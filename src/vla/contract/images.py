"""Camera frames before the model: validation, JPEG settings and OpenVLA's eval-time preprocessing (numpy + PIL).

No torch here, so data_prep can use it; the backbone's own transform is :mod:`vla.contract.image_transform`.
The functions below reproduce OpenVLA's eval-time preprocessing without TensorFlow. OpenVLA (``experiments/robot``) JPEG-encodes and decodes every camera frame, as its RLDS builder
did for the training images, resizes it to 224 with ``tf.image.resize(lanczos3, antialias)``, and
optionally center-crops ``sqrt(0.9)`` of each side (0.9 of the area) with
``tf.image.crop_and_resize``. Here: PIL JPEG at TF's default quality 95 with 4:2:0 chroma, a float
Lanczos resize rounded half-to-even like ``tf.round``, and an exact NumPy port of the bilinear
``crop_and_resize`` sampling. The JPEG codecs and Lanczos kernels are not bit-identical to TF's;
tests/test_eval_images.py measures the gap (a few grey levels at most).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default; also the quality of every JPEG this project writes
CENTER_CROP_AREA = 0.9  # OpenVLA's crop_scale for policies trained with random-crop augmentation


def as_rgb_uint8(image: Image.Image | np.ndarray) -> np.ndarray:
    """Validate an RGB image (PIL or HxWx3 uint8 array) and return it as a uint8 array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.shape[-1] != 3:
        raise ValueError(f"image must have 3 (RGB) channels in the last axis, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be non-empty, got shape {image.shape}")
    return image


def jpeg_roundtrip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode to JPEG and decode again, so eval frames carry the artefacts training frames had."""
    buffer = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image)).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return np.asarray(Image.open(buffer).convert("RGB"))


def lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased Lanczos-3 resize to ``size x size`` in float, then round + clip to uint8 (as TF)."""
    image = as_rgb_uint8(image)
    if image.shape[:2] == (size, size):
        return image
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((size, size), Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.clip(np.round(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def resize_like_openvla(image: np.ndarray, size: int = 224) -> np.ndarray:
    """OpenVLA's ``resize_image``: JPEG round trip, then Lanczos resize to ``size``."""
    return lanczos_resize(jpeg_roundtrip(image), size)


def center_crop(image: np.ndarray, area: float = CENTER_CROP_AREA) -> np.ndarray:
    """Crop the central ``area`` fraction and resize back to the input size.

    Ports ``tf.image.crop_and_resize`` (bilinear, box corners at pixel centres 0 and H-1) and
    ``convert_image_dtype``'s float -> uint8 step (``x * 255.5`` truncated, saturating).
    """
    image = as_rgb_uint8(image)
    if not 0.0 < area <= 1.0:
        raise ValueError(f"center-crop area must be in (0, 1], got {area}")
    height, width = image.shape[:2]
    side = float(np.sqrt(area))
    low, high = (1.0 - side) / 2.0, (1.0 + side) / 2.0
    ys = np.linspace(low * (height - 1), high * (height - 1), height)
    xs = np.linspace(low * (width - 1), high * (width - 1), width)
    pixels = image.astype(np.float32) / 255.0
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy = (ys - y0).astype(np.float32)[:, None, None]
    wx = (xs - x0).astype(np.float32)[None, :, None]
    top = pixels[y0][:, x0] + (pixels[y0][:, x1] - pixels[y0][:, x0]) * wx
    bottom = pixels[y1][:, x0] + (pixels[y1][:, x1] - pixels[y1][:, x0]) * wx
    cropped = np.clip(top + (bottom - top) * wy, 0.0, 1.0)
    return np.clip(cropped * 255.5, 0, 255).astype(np.uint8)

