"""The backbone's image transform: what training and inference apply to every RGB frame.

Resize to the backbone's size on the CPU (uint8 stays compact in loaders), then per-view
normalization on the model's device.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vla.contract.images import as_rgb_uint8

RESIZE_STRATEGIES = ("resize-naive", "letterbox")


class ImageTransform:
    """uint8 RGB image -> resized uint8 tensor [3, S, S]; :meth:`normalize` then makes the model input.

    Data loaders ship the compact uint8 image (4x fewer bytes than one float view, 8x fewer than
    the fused backbone's two) and the backbone normalizes on its own device: each view with its
    own mean/std, concatenated along channels ([..., 3 * n_views, S, S], OpenVLA's layout).
    ``resize-naive`` squashes to S x S; ``letterbox`` first pads to a square filled with the
    (first view's) mean colour, as Prismatic does. Resizing is bicubic, matching timm's configs.
    """

    def __init__(self, image_size: int, means: list[tuple[float, ...]], stds: list[tuple[float, ...]], resize_strategy: str = "resize-naive"):
        if resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(f"Unknown resize strategy {resize_strategy!r}; choose one of {RESIZE_STRATEGIES}")
        self.image_size = int(image_size)
        self.resize_strategy = resize_strategy
        self.mean = torch.tensor([c for m in means for c in m], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor([c for s in stds for c in s], dtype=torch.float32).view(-1, 1, 1)
        self.n_views = len(means)
        self.fill = tuple(int(c * 255) for c in means[0])

    def resize(self, image: Image.Image | np.ndarray) -> Image.Image:
        """Validated, letterboxed (if configured) and resized PIL image."""
        pil = Image.fromarray(as_rgb_uint8(image))
        if self.resize_strategy == "letterbox":
            w, h = pil.size
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), self.fill)
            canvas.paste(pil, ((side - w) // 2, (side - h) // 2))
            pil = canvas
        if pil.size != (self.image_size, self.image_size):
            pil = pil.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return pil

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float32 [..., 3 * n_views, S, S], each view with its mean/std."""
        x = pixels.to(torch.float32) / 255.0
        x = torch.cat([x] * self.n_views, dim=-3)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        array = np.array(self.resize(image))
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
