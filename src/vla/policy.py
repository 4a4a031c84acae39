"""The policy: a VLA plus everything between raw observations and robot actions.

model + processor (image transform, prompt, action tokens or chunk placeholders) + proprio
normalization and action un-normalization with the dataset statistics the checkpoint carries + the
environment's preprocessing. Eval, serve and the study runner all act through this one class;
:func:`load_policy` builds it from any checkpoint form. Token models (OpenVLA) answer one action
[D] per observation, chunk models (OpenVLA-OFT, ``action_head="l1"``) a chunk [K, D]
(docs/action-chunks.md).

Preprocessing is named for what it does: ``"none"`` is what OpenVLA's ``deploy.py`` server applies
(the frame goes straight to the model's transform); ``"openvla-eval"`` is OpenVLA's eval scripts'
JPEG round trip + Lanczos resize to 224, optionally followed by the center crop used for models
trained with random-crop augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vla.contract.images import as_rgb_uint8, center_crop, resize_like_openvla
from vla.contract.normalization import normalization_kind, normalize, unnormalize
from vla.models import VLA, load_checkpoint
from vla.models.decoding import StaticCacheDecoder
from vla.models.factory import float_dtype
from vla.models.quantization import QUANTIZE_MODES, quantize_llm

PREPROCESSING = ("none", "openvla-eval")
NO_NOOPS_SUFFIX = "_no_noops"  # OpenVLA's LIBERO datasets with no-op steps filtered out
# Env / robot observation key of each camera view (docs/contracts.md, "Environments").
OBSERVATION_VIEW_KEYS = {"primary": "image", "wrist": "wrist_image"}
STATE_KEY = "state"

ImageLike = Image.Image | np.ndarray
Views = ImageLike | Mapping[str, ImageLike]


class Policy:
    """``act(observation_or_image, instruction)``: un-normalized float64 action [D] (token models) or
    chunk [K, D] (chunk models).

    ``unnorm_key`` picks the dataset statistics used to un-normalize actions and normalize proprio
    (None: the only dataset the model has). Calling the policy is :meth:`act` with the default key,
    so it plugs into rollouts, which pass the env's whole observation.
    """

    def __init__(self, model: VLA, unnorm_key: str | None = None, preprocessing: str = "none",
                 center_crop: bool = False, image_size: int = 224,
                 proprio_from_state: Sequence[int | None] | None = None, compile_decoding: bool = False,
                 vision_dtype: str | None = None):
        """``proprio_from_state`` rearranges an observation's ``state`` into the training data's proprio
        layout: proprio[j] = state[i] for each index i (None: a zero pad), e.g. the sim's 7-D state into
        the 8-D ``vla_sim`` proprio ``[0, 1, 2, 3, 4, 5, None, 6]``; None: the state as it is.
        ``compile_decoding``: token models decode with a static KV cache and a compiled decode step
        (CUDA graphs on a GPU: 2.4x faster decoding at 7B on an H200; the first call per batch size
        compiles), see :mod:`vla.models.decoding`.
        ``vision_dtype`` (``"bfloat16"``): cast the model's vision towers to that dtype, in place; the
        projector and LLM keep theirs. On a CPU with AVX512-BF16 the towers, most of a call's time, run
        ~2x faster; their features move by ~1% (relative), so tokens near a bin edge can change
        (docs/benchmarks.md, "predict_action vs OpenVLA's HF code"). None: as loaded."""
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"Unknown preprocessing {preprocessing!r}; choose one of {PREPROCESSING}")
        if center_crop and preprocessing != "openvla-eval":
            raise ValueError("center_crop is part of OpenVLA's eval preprocessing: set preprocessing='openvla-eval'")
        self.model = model
        self.processor = model.processor
        self.preprocessing = preprocessing
        self.center_crop = center_crop
        self.image_size = image_size
        self.proprio_from_state = None if proprio_from_state is None else list(proprio_from_state)
        if compile_decoding and model.config.action_head != "tokens":
            raise ValueError("compile_decoding speeds up token decoding; this model's chunk head decodes in one pass")
        if vision_dtype is not None:
            model.vision_backbone.to(float_dtype(vision_dtype, "vision_dtype"))
        self.decoder = None
        if compile_decoding:  # CUDA graphs on a GPU; inductor's default mode elsewhere
            mode = "reduce-overhead" if next(model.parameters()).is_cuda else "default"
            self.decoder = StaticCacheDecoder(model, compile_mode=mode)
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

    @property
    def action_head(self) -> str:
        return self.model.config.action_head

    @property
    def is_chunked(self) -> bool:
        """Whether answers are chunks [K, D] (``l1`` head) rather than single actions [D] (``tokens``)."""
        return self.action_head != "tokens"

    @property
    def chunk_size(self) -> int:
        return self.model.config.chunk_size

    @property
    def image_views(self) -> tuple[str, ...]:
        return tuple(self.model.config.image_views)

    @property
    def proprio_dim(self) -> int:
        return self.model.config.proprio_dim

    def open_loop_steps(self, requested: int | None) -> int:
        """Actions to execute from each answer before asking again: ``requested``, or the whole chunk (K).

        A token model answers one action, so it can only run one; more than K is impossible.
        """
        if requested is None:
            return self.chunk_size if self.is_chunked else 1
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"num_open_loop_steps must be null or an integer >= 1, got {requested!r}")
        if not self.is_chunked and requested != 1:
            raise ValueError(f"num_open_loop_steps={requested}, but this is a token model (action_head 'tokens'): it "
                             "answers one action per query; use null or 1, or a chunk model (action_head 'l1')")
        if requested > self.chunk_size:
            raise ValueError(f"num_open_loop_steps={requested} is more than the model's chunk of {self.chunk_size} actions")
        return requested

    def observation_inputs(self, observation: Views | Mapping[str, Any]) -> tuple[Views, np.ndarray | None]:
        """(images, proprio) this model takes from an env/robot observation, or from a bare image.

        An observation dict (``image``, ``wrist_image``?, ``state``?) gives the model's views and, for
        models with proprio, ``state`` as the raw proprio; what the model does not use is left out,
        so one env serves every model. A bare image is the primary view, without proprio.
        """
        if not isinstance(observation, Mapping):
            return observation, None
        if OBSERVATION_VIEW_KEYS["primary"] not in observation:
            raise ValueError(f"An observation dict needs an {OBSERVATION_VIEW_KEYS['primary']!r} entry (the primary "
                             f"camera), got keys {sorted(observation)}")
        views = {}
        for view in self.image_views:
            key = OBSERVATION_VIEW_KEYS.get(view)
            if key is None or key not in observation:
                raise ValueError(f"This model takes views {list(self.image_views)}, but the observation has no image for "
                                 f"view {view!r} (expected key {key!r}; got keys {sorted(observation)})")
            views[view] = observation[key]
        if not self.proprio_dim:
            return views, None
        if STATE_KEY not in observation:
            raise ValueError(f"This model takes a {self.proprio_dim}-D proprio state, but the observation has no "
                             f"{STATE_KEY!r} (got keys {sorted(observation)})")
        return views, self._state_to_proprio(np.asarray(observation[STATE_KEY], dtype=np.float64))

    def _state_to_proprio(self, state: np.ndarray) -> np.ndarray:
        if self.proprio_from_state is None:
            return state
        if state.ndim != 1 or any(i is not None and not -len(state) <= i < len(state) for i in self.proprio_from_state):
            raise ValueError(f"proprio_from_state {self.proprio_from_state} does not fit the observation's state of "
                             f"shape {list(state.shape)}")
        return np.array([0.0 if i is None else state[i] for i in self.proprio_from_state])

    def check_inputs(self, views: Collection[str], proprio: np.ndarray | None, unnorm_key: str | None = None) -> None:
        """Raise ``ValueError`` unless the given views and proprio are exactly what this model takes.

        The server calls it per request before micro-batching, so a bad request fails alone.
        """
        if set(views) != set(self.image_views):
            missing, extra = sorted(set(self.image_views) - set(views)), sorted(set(views) - set(self.image_views))
            raise ValueError(f"This model takes camera views {list(self.image_views)}; "
                             + (f"missing {missing}" if missing else f"it does not take {extra}"))
        if proprio is None:
            self._require_no_proprio()
        else:
            self._normalized_proprio([proprio], unnorm_key)

    def preprocess(self, image: Image.Image | np.ndarray) -> np.ndarray | Image.Image:
        """The environment-side image preprocessing this policy was configured with."""
        if self.preprocessing == "none":
            return image
        image = resize_like_openvla(as_rgb_uint8(image), self.image_size)
        return center_crop(image) if self.center_crop else image

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[Views], instructions: Sequence[str], unnorm_key: str | None = None,
                      proprio: Sequence[np.ndarray] | np.ndarray | None = None) -> np.ndarray:
        """Un-normalized actions for B observations in one model call: [B, D] (tokens) or [B, K, D] (l1).

        ``images[i]`` is one image (single-view models) or a mapping view -> image holding exactly the
        model's ``image_views``; ``proprio[i]`` is the raw state, normalized here with the dataset's
        proprio statistics as data prep normalized it. The action inverse is the one of the kind the
        statistics record (:meth:`normalization`): statistics without a kind (OpenVLA's checkpoints)
        get BOUNDS_Q99, as OpenVLA's ``predict_action``.
        """
        key = self.resolve_unnorm_key(unnorm_key)
        stats = self.model.norm_stats[key]["action"]
        if len(images) != len(instructions):
            raise ValueError(f"Got {len(images)} images but {len(instructions)} instructions")
        views = [self._view_images(image) for image in images]
        if proprio is None:
            self._require_no_proprio()
            inputs = self.processor.inference_batch(views, instructions)
        else:
            if len(proprio) != len(images):
                raise ValueError(f"Got {len(proprio)} proprio states for {len(images)} images")
            inputs = self.processor.inference_batch(views, instructions, proprio=self._normalized_proprio(proprio, key))
        if self.is_chunked:
            normalized = self.model.predict_action_chunk(**inputs).float().cpu().numpy()
        else:
            generate = self.model.generate_action_tokens if self.decoder is None else self.decoder.generate
            normalized = self.processor.decode_actions(generate(**inputs, action_dim=len(stats["q01"])))
        return unnormalize(normalized, stats, kind=normalization_kind(stats))

    def _view_images(self, images: Views) -> ImageLike | list[ImageLike]:
        """The preprocessed image(s) of one observation: one image for a single-view model (the layout
        OpenVLA's processor takes), else the views in ``image_views`` order."""
        views = self.image_views
        if not isinstance(images, Mapping):
            if len(views) != 1:
                raise ValueError(f"This model takes camera views {list(views)}: pass a mapping view -> image, not one image")
            return self.preprocess(images)
        missing = [view for view in views if view not in images]
        if missing:
            raise ValueError(f"No image for view(s) {missing}; this model takes views {list(views)}, got {sorted(images)}")
        extra = sorted(set(images) - set(views))
        if extra:
            raise ValueError(f"Images for view(s) {extra} that this model does not take; its views are {list(views)}")
        ordered = [self.preprocess(images[view]) for view in views]
        return ordered[0] if len(ordered) == 1 else ordered

    def _require_no_proprio(self) -> None:
        if self.proprio_dim:
            raise ValueError(f"This model takes a {self.proprio_dim}-D proprio state (proprio_dim {self.proprio_dim}); "
                             "pass proprio (an observation dict's 'state')")

    def _normalized_proprio(self, proprio: Sequence[np.ndarray] | np.ndarray, unnorm_key: str | None) -> np.ndarray:
        """float32 [B, P]: raw states normalized with the proprio statistics' own kind, as data prep does."""
        if not self.proprio_dim:
            raise ValueError("This model takes no proprio (proprio_dim 0); send no proprio/state")
        key = self.resolve_unnorm_key(unnorm_key)
        stats = self.model.norm_stats[key].get("proprio")
        if stats is None:
            raise ValueError(f"This model takes proprio, but its statistics for {key!r} have no 'proprio' entry")
        rows = [np.asarray(p, dtype=np.float64) for p in proprio]
        expected = (len(stats["q01"]),)
        for row in rows:
            if row.shape != expected:
                raise ValueError(f"proprio must have shape {list(expected)} (this model's dataset state), got {list(row.shape)}")
            if not np.all(np.isfinite(row)):
                raise ValueError(f"proprio contains NaN/inf: {row.tolist()}")
        return normalize(np.stack(rows), stats)

    def normalization(self, unnorm_key: str | None = None) -> str:
        """The normalization kind actions are un-normalized with: the statistics' own, else ``bounds_q99``."""
        return normalization_kind(self.model.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"])

    def act(self, observation_or_image: Views | Mapping[str, Any], instruction: str,
            unnorm_key: str | None = None) -> np.ndarray:
        """One un-normalized action [D] (tokens) or chunk [K, D] (l1) for one RGB image or an env/robot
        observation dict (:meth:`observation_inputs`) and an instruction."""
        images, proprio = self.observation_inputs(observation_or_image)
        return self.predict_batch([images], [instruction], unnorm_key, None if proprio is None else [proprio])[0]

    def __call__(self, observation: Views | Mapping[str, Any], instruction: str) -> np.ndarray:
        return self.act(observation, instruction)

    def info(self) -> dict[str, Any]:
        keys = sorted(self.model.norm_stats)
        return {"model": self.model_id, "unnorm_keys": keys, "action_dims": {key: self.action_dim(key) for key in keys},
                "normalization": {key: self.normalization(key) for key in keys}, "action_head": self.action_head,
                "chunk_size": self.chunk_size, "image_views": list(self.image_views), "proprio_dim": self.proprio_dim}


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                quantize: str | None = None, **policy_options: Any) -> Policy:
    """A :class:`Policy` over any checkpoint form (:func:`vla.models.load_checkpoint`), eval mode, no grads.

    ``quantize`` (``8bit`` / ``4bit``) swaps the LLM's decoder linears for bitsandbytes layers;
    ``policy_options`` go to :class:`Policy` (``unnorm_key``, ``preprocessing``, ``center_crop``,
    ``compile_decoding``, ``vision_dtype``, ...).
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
