"""The backbone's image transform: what training and inference apply to every RGB frame.

Resize to the backbone's size on the CPU (uint8 stays compact in loaders), then per-view
normalization on the model's device. Training and OpenVLA-style eval frames arrive here already
S x S from dlimp's exact Lanczos resize (:mod:`vla.contract.images`), as in OpenVLA, where
Prismatic's transform runs last; ``resize-naive`` and ``letterbox`` then leave them untouched.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from vla.contract.images import as_rgb_uint8

RESIZE_STRATEGIES = ("resize-naive", "letterbox", "resize-crop")
INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageTransform:
    """uint8 RGB image -> resized uint8 tensor [3, S, S]; :meth:`normalize` then makes the model input.

    Data loaders ship the compact uint8 image (4x fewer bytes than one float view, 8x fewer than
    the fused backbone's two) and the backbone normalizes on its own device: each view with its
    own mean/std, concatenated along channels ([..., 3 * n_views, S, S], OpenVLA's layout).
    ``resize-naive`` squashes to S x S; ``resize-crop`` is timm's eval transform that Prismatic
    uses: resize the short side to ``floor(S / crop_pct)`` (aspect kept, torchvision's rounding)
    and center-crop S x S; ``letterbox`` first pads to a square filled with the (first view's) mean
    colour, then applies the same resize-crop, as Prismatic does (with ``crop_pct`` 1 that is a
    plain resize to S x S). Resampling is the backbone's timm ``interpolation`` (bicubic for all of
    Prismatic's).
    """

    def __init__(self, image_size: int, means: list[tuple[float, ...]], stds: list[tuple[float, ...]],
                 resize_strategy: str = "resize-naive", interpolation: str = "bicubic", crop_pct: float = 1.0):
        if resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(f"Unknown resize strategy {resize_strategy!r}; choose one of {RESIZE_STRATEGIES}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation {interpolation!r}; choose one of {sorted(INTERPOLATIONS)}")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.image_size = int(image_size)
        self.resize_strategy = resize_strategy
        self.interpolation = interpolation
        self.crop_pct = float(crop_pct)
        # timm's eval transform: short side -> floor(S / crop_pct), then center crop S
        self.scale_size = math.floor(self.image_size / self.crop_pct)
        self.mean = torch.tensor([c for m in means for c in m], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor([c for s in stds for c in s], dtype=torch.float32).view(-1, 1, 1)
        self.n_views = len(means)
        self.fill = tuple(int(c * 255) for c in means[0])

    def resize(self, image: Image.Image | np.ndarray) -> Image.Image:
        """Validated, letterboxed / resized / center-cropped (as configured) PIL image of S x S."""
        pil = Image.fromarray(as_rgb_uint8(image))
        resample = INTERPOLATIONS[self.interpolation]
        if self.resize_strategy == "resize-naive":
            if pil.size != (self.image_size, self.image_size):
                pil = pil.resize((self.image_size, self.image_size), resample)
            return pil
        if self.resize_strategy == "letterbox":
            w, h = pil.size
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), self.fill)
            canvas.paste(pil, ((side - w) // 2, (side - h) // 2))
            pil = canvas
        return self._resize_short_side_and_center_crop(pil, resample)

    def resize_array(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """:meth:`resize` as a uint8 HxWx3 array; an array it would leave unchanged comes back as is.

        Training frames arrive S x S from the exact Lanczos resize, where every strategy is the
        identity (with ``crop_pct`` 1 for letterbox / resize-crop); skipping PIL there saves two
        copies of the frame per call.
        """
        if isinstance(image, np.ndarray):
            array = as_rgb_uint8(image)
            size = (self.image_size, self.image_size)
            if array.shape[:2] == size and (self.resize_strategy == "resize-naive" or self.scale_size == self.image_size):
                return array
        return np.asarray(self.resize(image))

    def _resize_short_side_and_center_crop(self, pil: Image.Image, resample: Image.Resampling) -> Image.Image:
        """torchvision ``Resize(scale_size)`` (short side, long side truncated) + ``CenterCrop(S)``."""
        w, h = pil.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.scale_size, int(self.scale_size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), resample)
        s = self.image_size
        if (new_w, new_h) != (s, s):
            top, left = int(round((new_h - s) / 2.0)), int(round((new_w - s) / 2.0))
            pil = pil.crop((left, top, left + s, top + s))
        return pil

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float32 [..., 3 * n_views, S, S], each view with its mean/std."""
        x = pixels.to(torch.float32) / 255.0
        x = torch.cat([x] * self.n_views, dim=-3)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """A new uint8 [3, S, S] tensor (numpy's HWC -> CHW copy is about twice as fast as torch's ``contiguous``)."""
        return torch.from_numpy(np.array(self.resize_array(image).transpose(2, 0, 1), order="C"))
