"""Camera frames before the model: validation, JPEG codec and OpenVLA's pixel pipeline, exact (numpy, numba, PIL).

No torch and no TensorFlow here, so data_prep can use it; the backbone's own transform is
:mod:`vla.contract.image_transform`. OpenVLA's training frames are RLDS JPEGs decoded by TF's
default decoder and resized by dlimp (``tf.image.resize(lanczos3, antialias=True)``, rounded,
clipped, cast to uint8) to the backbone's S x S; its eval (``experiments/robot``) JPEG-encodes and
decodes every camera frame first, as its RLDS builder did, and may center-crop ``sqrt(0.9)`` of
each side with ``tf.image.crop_and_resize``. Every function here reproduces those ops bit for bit
(tests/test_eval_images.py and tests/test_openvla_pixels.py compare against TensorFlow itself):

* :func:`decode_jpeg`: simplejpeg (libjpeg-turbo) with the fast integer IDCT and fancy upsampling,
  TF's ``decode_jpeg`` defaults.
* :func:`encode_jpeg`: PIL at quality 95 with 4:2:0 chroma, the pixels of ``tf.image.encode_jpeg``.
* :func:`lanczos_resize`: TF's ``scale_and_translate`` kernel (Lanczos-3, half-pixel centres, the
  kernel widened by the scale when downsampling), its float32 weights, its rows-then-columns passes
  and its order of float32 additions; the weights come from :func:`lanczos3_spans`.
* :func:`center_crop`: ``tf.image.crop_and_resize`` (bilinear) in float32 with TF's dtype conversions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import simplejpeg
from PIL import Image

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default; also the quality of every JPEG this project writes
CENTER_CROP_AREA = 0.9  # OpenVLA's crop_scale for policies trained with random-crop augmentation
_RGB_JPEG_COLORSPACES = ("YCbCr", "RGB")  # what libjpeg's header reports for 3-channel colour JPEGs

# TF's LanczosKernelFunc: float32 constants and float32 arithmetic.
_LANCZOS_RADIUS = np.float32(3.0)
_KERNEL_PI = np.float32(3.14159265359)


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


# ------------------------------------------------------------------------------------------ JPEG
def decode_jpeg(data: bytes) -> np.ndarray:
    """Colour JPEG bytes -> HxWx3 uint8, the pixels ``tf.io.decode_jpeg`` gives (its default IDCT and upsampling).

    Like TF, damaged entropy-coded data that libjpeg only warns about ("Corrupt JPEG data: ...")
    still decodes, to TF's pixels, and a truncated file fails. Grayscale and CMYK JPEGs are refused
    (OpenVLA's pipeline would hand the model 1 or 4 channels). Every failure is a ``ValueError``.
    """
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in _RGB_JPEG_COLORSPACES:
            raise ValueError(f"{colorspace} JPEG ({width}x{height}): camera frames must be 3-channel colour JPEGs")
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError as err:  # strict mode raises libjpeg's warnings too; TF decodes through the corrupt-data ones
            if not str(err).startswith("Corrupt JPEG data"):
                raise
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False, strict=False)
    except Exception as err:  # simplejpeg raises ValueError; any other codec failure is bad data all the same
        raise ValueError(f"cannot decode image: {len(data)} bytes are not a readable colour JPEG ({err})") from err


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """HxWx3 uint8 -> JPEG bytes whose decoded pixels equal ``tf.image.encode_jpeg``'s (4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image)).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return buffer.getvalue()


def jpeg_roundtrip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode to JPEG and decode again, so eval frames carry the artefacts training frames had."""
    return decode_jpeg(encode_jpeg(image, quality))


# --------------------------------------------------------------------------------- Lanczos resize
def _libm_sinf() -> Callable[[float], float] | None:
    """The C library's single-precision ``sinf``, which TF's kernel calls; None where there is no libm."""
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    sinf = ctypes.CDLL(name).sinf
    sinf.restype, sinf.argtypes = ctypes.c_float, [ctypes.c_float]
    return sinf


_SINF = _libm_sinf()


def _sin_float32(x: np.ndarray) -> np.ndarray:
    """``sinf`` of each float32 value: libm's own results where it exists (numpy's float32 sin differs from it
    on ~14% of inputs in [0, 10), float64 sin rounded on ~1.4%, and either moves weights by an ulp);
    otherwise float64 sin rounded to float32."""
    if _SINF is None:
        return np.sin(x.astype(np.float64)).astype(np.float32)
    return np.fromiter((_SINF(float(v)) for v in x.ravel()), dtype=np.float32, count=x.size).reshape(x.shape)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TF's Lanczos-3 kernel on float32 distances ``x >= 0``."""
    pi_x = _KERNEL_PI * x
    with np.errstate(divide="ignore", invalid="ignore"):
        value = _LANCZOS_RADIUS * _sin_float32(pi_x) * _sin_float32(pi_x / _LANCZOS_RADIUS) / (_KERNEL_PI * _KERNEL_PI * x * x)
    value = np.where(x.astype(np.float64) <= 1e-3, np.float32(1.0), value)  # TF compares the float with a double
    return np.where(x > _LANCZOS_RADIUS, np.float32(0.0), value).astype(np.float32)


@functools.lru_cache(maxsize=64)
def lanczos3_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """TF's resampling spans for one axis: ``starts`` int64 [out] and float32 ``weights`` [out, span].

    Output ``i`` is ``sum_k weights[i, k] * x[starts[i] + k]`` over the k with ``starts[i] + k < in_size``
    (the others have weight 0). Same float32 arithmetic as TF's ``ComputeSpansCore``: scale
    ``out / in``, sample centre ``(i + 0.5) / scale``, kernel widened by ``in / out`` when
    downsampling (antialias), weights normalized to sum 1. Cached: one entry per (in, out) pair.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    scale = np.float32(out_size) / np.float32(in_size)
    inv_scale = np.float32(1.0 / float(scale))  # C++: ``1.0 / scale`` in double, stored as float
    kernel_scale = max(inv_scale, np.float32(1.0))
    support = np.float32(_LANCZOS_RADIUS * kernel_scale)
    span_size = min(2 * math.ceil(support) + 1, in_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    starts = np.clip(np.ceil(centres - support - np.float32(0.5)), 0, in_size - 1).astype(np.int64)
    ends = np.clip(np.floor(centres + support - np.float32(0.5)), 0, in_size - 1).astype(np.int64) + 1
    sources = starts[:, None] + np.arange(span_size)[None, :]
    distance = np.abs((sources.astype(np.float32) + np.float32(0.5) - centres[:, None]) * (np.float32(1.0) / kernel_scale))
    weights = np.where(sources < ends[:, None], _lanczos3(distance.astype(np.float32)), np.float32(0.0))
    total = np.zeros(out_size, dtype=np.float32)
    for k in range(span_size):  # TF sums the weights one after the other
        total += weights[:, k]
    weights = (weights * (np.float32(1.0) / total)[:, None]).astype(np.float32)
    weights.setflags(write=False)
    starts.setflags(write=False)
    return starts, weights


def lanczos3_weights(in_size: int, out_size: int) -> np.ndarray:
    """Dense float32 [out, in] resampling matrix of one axis: ``resized = Wh @ X @ Ww.T`` per channel.

    Same weights as TF. Summed in ascending source order (as :func:`lanczos_resize` does) the result
    is TF's bit for bit; a BLAS / GPU matmul sums in another order and differs from it in the last
    float32 bits, which moves about 1 in 10^5 pixels by one grey level after rounding.
    """
    starts, weights = lanczos3_spans(in_size, out_size)
    dense = np.zeros((out_size, in_size), dtype=np.float32)
    for k in range(weights.shape[1]):
        columns = starts + k
        inside = columns < in_size
        dense[np.flatnonzero(inside), columns[inside]] = weights[inside, k]
    return dense


class _Kernels(NamedTuple):
    """The numba-compiled loops of the resize (see :func:`_kernels`)."""

    span_pass: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    swap_rgb_axes: Callable[[np.ndarray, np.ndarray], None]
    span_pass_uint8: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


@functools.cache
def _kernels() -> _Kernels:
    """The resize's loops, compiled by numba on first use (cached on disk): 4-10x numpy's tap-by-tap loop.

    ``span_pass`` resamples axis 0 of ``x`` [in, N] -> float32 [out, N]. Each output value is still
    ``((0 + w0 x0) + w1 x1) + ...`` in float32 with separate multiplies and adds (numba's default
    strict float semantics: no FMA contraction, no reassociation), so the result is TF's bit for bit;
    tests/test_openvla_pixels.py checks it against TensorFlow. ``span_pass_uint8`` is the same pass
    that finishes each output row as dlimp does (round half to even, clip, uint8) and stores it
    transposed into a row-major RGB image: numpy's round / clip / cast on the transposed float result
    cost more than both passes (0.23 vs 0.15 ms for 64 -> 224). ``swap_rgb_axes`` is ``swapaxes(0, 1)`` of an RGB array, 5x numpy's copy
    (whose inner loop is only 3 values long); both spell the 3 channels out, which vectorizes.
    """
    import numba  # imported here: only resizing needs it, and it costs ~0.2 s to import

    @numba.njit(cache=True, nogil=True)
    def accumulate(x: np.ndarray, starts: np.ndarray, weights: np.ndarray, i: int, acc: np.ndarray) -> None:
        in_size, width = x.shape
        acc[:] = 0.0
        for k in range(weights.shape[1]):
            source = min(starts[i] + k, in_size - 1)  # past the image the weight is 0
            weight = weights[i, k]
            for c in range(width):  # long contiguous rows: vectorized
                acc[c] += weight * x[source, c]

    @numba.njit(cache=True, nogil=True)
    def span_pass(x: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        out = np.empty((weights.shape[0], x.shape[1]), dtype=np.float32)
        for i in range(weights.shape[0]):
            accumulate(x, starts, weights, i, out[i])
        return out

    @numba.njit(cache=True, nogil=True)
    def swap_rgb_axes(x: np.ndarray, out: np.ndarray) -> None:
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j, 0], out[i, j, 1], out[i, j, 2] = x[j, i, 0], x[j, i, 1], x[j, i, 2]

    @numba.njit(cache=True, nogil=True)
    def span_pass_uint8(x: np.ndarray, starts: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
        acc = np.empty(x.shape[1], dtype=np.float32)  # out [H, out_size, 3]: x's rows are [H * 3]
        finished = np.empty(x.shape[1], dtype=np.uint8)
        for i in range(weights.shape[0]):
            accumulate(x, starts, weights, i, acc)
            for c in range(acc.size):  # np.round (half to even), np.clip, astype(uint8)
                finished[c] = np.uint8(min(max(np.rint(acc[c]), np.float32(0.0)), np.float32(255.0)))
            for r in range(out.shape[0]):
                out[r, i, 0], out[r, i, 1], out[r, i, 2] = finished[3 * r], finished[3 * r + 1], finished[3 * r + 2]

    return _Kernels(span_pass, swap_rgb_axes, span_pass_uint8)


def _resample_rows(x: np.ndarray, out_size: int) -> np.ndarray:
    """One separable pass along axis 0 (float32), adding the span's terms in TF's order."""
    starts, weights = lanczos3_spans(x.shape[0], out_size)
    out = _kernels().span_pass(np.ascontiguousarray(x).reshape(x.shape[0], -1), starts, weights)
    return out.reshape((out_size,) + x.shape[1:])


def lanczos_resize_float(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``tf.image.resize(image, size, "lanczos3", antialias=True)``: float32 HxWxC, rows first then columns.

    The column pass runs on the transposed intermediate (long contiguous rows); each output value
    is still the same float32 sum in the same order. The result is a transposed view.
    """
    height, width = (size, size) if isinstance(size, int) else size
    rows = _resample_rows(np.asarray(image, dtype=np.float32), height)
    return _resample_rows(rows.swapaxes(0, 1), width).swapaxes(0, 1)


def lanczos_resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """dlimp's ``resize_image``: TF's antialiased Lanczos-3 resize, ``round`` (half to even), clip, uint8.

    ``size`` is S (S x S, aspect not kept, as OpenVLA resizes to the backbone's square) or (H, W).
    An image already of that size comes back unchanged, as TF's result rounds back to it (its
    same-size weights are 1 and terms of ~1e-8). The same passes as :func:`lanczos_resize_float`, the
    last one rounding, clipping and casting each row as it goes (:func:`_kernels`): the same uint8 values.
    """
    image = as_rgb_uint8(image)
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return image
    kernels = _kernels()
    rows = _resample_rows(image.astype(np.float32), height)
    columns = np.empty((rows.shape[1], height, 3), dtype=np.float32)  # the column pass's long rows
    kernels.swap_rgb_axes(rows, columns)
    starts, weights = lanczos3_spans(columns.shape[0], width)
    out = np.empty((height, width, 3), dtype=np.uint8)  # C order: PIL copies other layouts element by element
    kernels.span_pass_uint8(columns.reshape(columns.shape[0], -1), starts, weights, out)
    return out


def resize_like_openvla(image: np.ndarray, size: int = 224) -> np.ndarray:
    """OpenVLA's eval ``resize_image``: JPEG round trip, then dlimp's Lanczos resize to ``size``."""
    return lanczos_resize(jpeg_roundtrip(image), size)


# ----------------------------------------------------------------------------------- center crop
def center_crop(image: np.ndarray, area: float = CENTER_CROP_AREA) -> np.ndarray:
    """Crop the central ``area`` fraction and resize back to the input size, as OpenVLA's eval does.

    :func:`to_float`, :func:`crop_and_resize` with the box ``(1 - sqrt(area)) / 2 .. (1 + sqrt(area)) / 2``,
    clip to [0, 1] and :func:`to_uint8`, all in float32 like TF.
    """
    image = as_rgb_uint8(image)
    if not 0.0 < area <= 1.0:
        raise ValueError(f"center-crop area must be in (0, 1], got {area}")
    side = np.clip(np.sqrt(np.float32(area)), np.float32(0), np.float32(1))
    low = (np.float32(1) - side) / np.float32(2)
    high = low + side
    cropped = crop_and_resize(to_float(image), (low, low, high, high))
    return to_uint8(np.clip(cropped, np.float32(0), np.float32(1)))


UINT8_TO_FLOAT_SCALE = np.float32(1.0 / 255)  # convert_image_dtype uint8 -> float32
FLOAT_TO_UINT8_SCALE = np.float32(255.5)  # convert_image_dtype float32 -> uint8: clip to [0, 255], truncate


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], as ``tf.image.convert_image_dtype``."""
    return image.astype(np.float32) * UINT8_TO_FLOAT_SCALE


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] -> uint8, as ``tf.image.convert_image_dtype(saturate=True)``: ``x * 255.5`` clipped, truncated."""
    return np.clip(x * FLOAT_TO_UINT8_SCALE, 0, 255).astype(np.uint8)


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
    top_rows, bottom_rows = image.take(top, axis=0), image.take(bottom, axis=0)
    top_left, bottom_left = top_rows.take(left, axis=1), bottom_rows.take(left, axis=1)
    top_row = top_left + (top_rows.take(right, axis=1) - top_left) * dx
    bottom_row = bottom_left + (bottom_rows.take(right, axis=1) - bottom_left) * dx
    out = top_row + (bottom_row - top_row) * dy[:, None, None]
    return np.where((in_y[:, None] & in_x[None, :])[..., None], out, np.float32(extrapolation_value)).astype(np.float32)
