"""Policies the rollout loop can drive: anything ``(image, instruction) -> action``.

``VLAPolicy`` wraps a trained VLA with OpenVLA's eval-time image preprocessing; tests and smoke
runs pass scripted callables instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vla.eval.images import center_crop, resize_like_openvla
from vla.models import VLA

NO_NOOPS_SUFFIX = "_no_noops"  # OpenVLA's LIBERO datasets with no-op steps filtered out


@runtime_checkable
class Policy(Protocol):
    """Maps the primary camera image (uint8 HxWx3) and the task instruction to a 7-D action."""

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray: ...


class VLAPolicy:
    """A VLA behind OpenVLA's eval preprocessing: JPEG round trip + 224 resize, optional center crop."""

    def __init__(self, vla: VLA, unnorm_key: str | None = None, center_crop: bool = False, image_size: int = 224):
        self.vla = vla
        self.unnorm_key = vla.resolve_unnorm_key(unnorm_key)
        self.center_crop = center_crop
        self.image_size = image_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        image = resize_like_openvla(image, self.image_size)
        return center_crop(image) if self.center_crop else image

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return self.vla.predict_action(self.preprocess(image), instruction, unnorm_key=self.unnorm_key)


def resolve_suite_unnorm_key(norm_stats: Mapping[str, Any], suite_name: str) -> str:
    """OpenVLA's rule: the suite's own statistics, else those of its ``_no_noops`` dataset."""
    for key in (suite_name, suite_name + NO_NOOPS_SUFFIX):
        if key in norm_stats:
            return key
    raise ValueError(
        f"The checkpoint has no action statistics for suite {suite_name!r} (looked for {suite_name!r} and "
        f"{suite_name + NO_NOOPS_SUFFIX!r}); it has {sorted(norm_stats)}. Pass unnorm_key=<one of those> to override."
    )
