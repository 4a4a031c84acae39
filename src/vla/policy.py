"""The policy: a VLA plus everything between raw observations and robot actions.

model + processor (image transform, prompt, action tokens) + un-normalization with the dataset
statistics the checkpoint carries + the environment's preprocessing. Eval, serve and the study
runner all act through this one class; :func:`load_policy` builds it from any checkpoint form.

Preprocessing is named for what it does: ``"none"`` is what OpenVLA's ``deploy.py`` server applies
(the frame goes straight to the model's transform); ``"openvla-eval"`` is OpenVLA's eval scripts'
JPEG round trip + Lanczos resize to 224, optionally followed by the center crop used for models
trained with random-crop augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vla.contract.images import as_rgb_uint8, center_crop, resize_like_openvla
from vla.contract.normalization import normalization_kind, unnormalize
from vla.models import VLA, load_checkpoint
from vla.models.factory import float_dtype
from vla.models.quantization import QUANTIZE_MODES, quantize_llm

PREPROCESSING = ("none", "openvla-eval")
NO_NOOPS_SUFFIX = "_no_noops"  # OpenVLA's LIBERO datasets with no-op steps filtered out


class Policy:
    """``act(image, instruction) -> action``: one un-normalized float64 action of ``action_dim``.

    ``unnorm_key`` picks the dataset statistics used to un-normalize (None: the only dataset the
    model has). Calling the policy is :meth:`act` with the default key, so it plugs into rollouts.
    """

    def __init__(self, model: VLA, unnorm_key: str | None = None, preprocessing: str = "none",
                 center_crop: bool = False, image_size: int = 224):
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"Unknown preprocessing {preprocessing!r}; choose one of {PREPROCESSING}")
        if center_crop and preprocessing != "openvla-eval":
            raise ValueError("center_crop is part of OpenVLA's eval preprocessing: set preprocessing='openvla-eval'")
        self.model = model
        self.processor = model.processor
        self.preprocessing = preprocessing
        self.center_crop = center_crop
        self.image_size = image_size
        self.unnorm_key: str | None = None  # the default key: resolved below when one is given or only one exists
        if unnorm_key is not None or len(model.norm_stats) == 1:
            self.unnorm_key = self.resolve_unnorm_key(unnorm_key)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.model.norm_stats

    def resolve_unnorm_key(self, unnorm_key: str | None) -> str:
        """The statistics key to use: ``unnorm_key``, else the policy's default, else the only one."""
        stats = self.model.norm_stats
        if not stats:
            raise ValueError("This model has no dataset statistics (norm_stats); cannot un-normalize actions")
        unnorm_key = unnorm_key if unnorm_key is not None else self.unnorm_key
        if unnorm_key is None:
            if len(stats) != 1:
                raise ValueError(f"Model has statistics for several datasets; pass unnorm_key, one of {sorted(stats)}")
            return next(iter(stats))
        if unnorm_key not in stats:
            raise ValueError(f"Unknown unnorm_key {unnorm_key!r}; this model has statistics for {sorted(stats)}")
        return unnorm_key

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return len(self.model.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"]["q01"])

    def preprocess(self, image: Image.Image | np.ndarray) -> np.ndarray | Image.Image:
        """The environment-side image preprocessing this policy was configured with."""
        if self.preprocessing == "none":
            return image
        image = resize_like_openvla(as_rgb_uint8(image), self.image_size)
        return center_crop(image) if self.center_crop else image

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[Image.Image | np.ndarray], instructions: Sequence[str],
                      unnorm_key: str | None = None) -> np.ndarray:
        """[B, action_dim] un-normalized actions for B (image, instruction) pairs, in one model call.

        The inverse is the one of the kind the statistics record (:meth:`normalization`): statistics
        without a kind (OpenVLA's checkpoints) get BOUNDS_Q99, as OpenVLA's ``predict_action``.
        """
        key = self.resolve_unnorm_key(unnorm_key)
        stats = self.model.norm_stats[key]["action"]
        inputs = self.processor.inference_batch([self.preprocess(image) for image in images], instructions)
        tokens = self.model.generate_action_tokens(**inputs, action_dim=len(stats["q01"]))
        return unnormalize(self.processor.decode_actions(tokens), stats, kind=normalization_kind(stats))

    def normalization(self, unnorm_key: str | None = None) -> str:
        """The normalization kind actions are un-normalized with: the statistics' own, else ``bounds_q99``."""
        return normalization_kind(self.model.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"])

    def act(self, image: Image.Image | np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """One un-normalized action [action_dim] for one RGB image and instruction."""
        return self.predict_batch([image], [instruction], unnorm_key)[0]

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return self.act(image, instruction)

    def info(self) -> dict[str, Any]:
        keys = sorted(self.model.norm_stats)
        return {"model": self.model_id, "unnorm_keys": keys, "action_dims": {key: self.action_dim(key) for key in keys},
                "normalization": {key: self.normalization(key) for key in keys}}


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                quantize: str | None = None, **policy_options: Any) -> Policy:
    """A :class:`Policy` over any checkpoint form (:func:`vla.models.load_checkpoint`), eval mode, no grads.

    ``quantize`` (``8bit`` / ``4bit``) swaps the LLM's decoder linears for bitsandbytes layers;
    ``policy_options`` go to :class:`Policy` (``unnorm_key``, ``preprocessing``, ``center_crop``).
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be null or one of {QUANTIZE_MODES}, got {quantize!r}")
    model = load_checkpoint(checkpoint, device=device, dtype=float_dtype(dtype))
    if quantize is not None:
        quantize_llm(model, quantize, compute_dtype=float_dtype(dtype))
    return Policy(model.eval().requires_grad_(False), **policy_options)


def resolve_suite_unnorm_key(norm_stats: Mapping[str, Any], suite_name: str) -> str:
    """OpenVLA's LIBERO rule: the suite's own statistics, else those of its ``_no_noops`` dataset."""
    for key in (suite_name, suite_name + NO_NOOPS_SUFFIX):
        if key in norm_stats:
            return key
    raise ValueError(
        f"The checkpoint has no action statistics for suite {suite_name!r} (looked for {suite_name!r} and "
        f"{suite_name + NO_NOOPS_SUFFIX!r}); it has {sorted(norm_stats)}. Pass unnorm_key=<one of those> to override."
    )
