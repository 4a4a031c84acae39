"""Dataset registry: OpenVLA's per-dataset config (``oxe/configs.py``) plus its transform.

Adding a dataset = one :data:`DATASET_CONFIGS` entry + one function in :mod:`vla.data.transforms`
(a LeRobot dataset: one :func:`lerobot_config` entry, see the end of this module).
:meth:`DatasetConfig.standardize` turns one raw episode (RLDS, or LeRobot read into the same
step-batched form) into a :class:`StandardEpisode` (actions, proprio, images per view,
instructions) and rejects bad episodes with an :class:`EpisodeError` that names the episode.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vla.data import transforms as T

IMAGE_VIEWS = ("primary", "secondary", "wrist")


class StateEncoding(IntEnum):
    """Proprio layouts (always 8-D in OpenVLA's configs, LIBERO's 2-D gripper state aside)."""

    NONE = -1  # no proprio
    POS_EULER = 1  # EEF XYZ (3) + roll-pitch-yaw (3) + <PAD> (1) + gripper (1)
    POS_QUAT = 2  # EEF XYZ (3) + quaternion (4) + gripper (1)
    JOINT = 3  # joint angles (7, padded) + gripper (1)
    JOINT_BIMANUAL = 4  # 2 x [joint angles (6) + gripper (1)]


class ActionEncoding(IntEnum):
    EEF_POS = 1  # EEF delta XYZ (3) + roll-pitch-yaw (3) + gripper open/close (1)
    JOINT_POS = 2  # joint delta position (7) + gripper (1)
    JOINT_POS_BIMANUAL = 3  # 2 x [joint delta position (6) + gripper (1)]
    EEF_R6 = 4  # EEF delta XYZ (3) + R6 rotation (6) + gripper (1)


class EpisodeError(ValueError):
    """A source episode that cannot be converted (message names the episode and the problem)."""


@dataclass
class StandardEpisode:
    """One episode after standardization: ``T`` transitions, images per view (encoded or raw)."""

    actions: np.ndarray  # float32 [T, A]
    proprio: np.ndarray  # float32 [T, P]
    images: dict[str, np.ndarray]  # view -> object array [T] of bytes or uint8 HxWx3 arrays
    instructions: list[str]

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class DatasetConfig:
    image_obs_keys: dict[str, str | None]
    state_obs_keys: tuple[str | None, ...]
    state_encoding: StateEncoding
    action_encoding: ActionEncoding
    transform: T.Transform
    language_key: str = "language_instruction"
    source_format: str = "rlds"  # "rlds" (tfds builder dirs) or "lerobot" (LeRobotDataset dirs)
    # Picks image_obs_keys from the source's camera names (LeRobot entries without a fixed mapping)
    camera_views: Callable[[Sequence[str]], dict[str, str | None]] | None = None
    action_mask: tuple[bool, ...] | None = None  # overrides the encoding's mask (LeRobot entries)

    @property
    def image_views(self) -> tuple[str, ...]:
        """Views this dataset provides, in the fixed order primary, secondary, wrist."""
        return tuple(v for v in IMAGE_VIEWS if self.image_obs_keys.get(v) is not None)

    def for_cameras(self, cameras: Sequence[str]) -> DatasetConfig:
        """This entry with its views resolved for a source with these cameras (unchanged if fixed)."""
        if self.camera_views is None:
            return self
        return replace(self, image_obs_keys=dict(self.camera_views(list(cameras))))

    @property
    def action_normalization_mask(self) -> list[bool]:
        """OpenVLA normalizes every action dimension except the absolute gripper."""
        if self.action_mask is not None:
            return [bool(m) for m in self.action_mask]
        if self.action_encoding is ActionEncoding.EEF_POS:
            return [True] * 6 + [False]
        if self.action_encoding is ActionEncoding.EEF_R6:
            return [True] * 9 + [False]
        raise ValueError(
            f"Only EEF_POS and EEF_R6 actions are supported (as in OpenVLA), got {self.action_encoding.name}"
        )

    def standardize(
        self, episode: T.Episode, where: str, image_shapes: dict[str, tuple] | None = None
    ) -> StandardEpisode:
        """Apply the transform and OpenVLA's restructuring; validate actions, proprio and images.

        ``where`` names the episode in errors; ``image_shapes`` maps observation keys to the shape the
        source declares (``None`` dims are free), checked against every image's header.
        """
        try:
            episode = self.transform(episode)
            obs = episode["observation"]
            actions = np.asarray(episode["action"], dtype=np.float32)
            instructions = [_text(s) for s in episode[self.language_key]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EpisodeError(f"{where}: standardization failed ({type(exc).__name__}: {exc})") from exc
        if actions.ndim != 2 or len(actions) == 0:
            raise EpisodeError(f"{where}: empty episode (actions of shape {actions.shape} after standardization)")
        _check_finite(actions, "action", where)
        proprio = self._proprio(obs, actions, where)
        _check_finite(proprio, "proprio", where)
        images = {}
        for view in self.image_views:
            key = self.image_obs_keys[view]
            if key not in obs:
                raise EpisodeError(f"{where}: missing image key {key!r} for view {view!r} (have {sorted(obs)})")
            expected = (image_shapes or {}).get(key)
            for t, image in enumerate(obs[key]):
                check_image(image, expected, f"{where} step {t} image {key!r}")
            images[view] = obs[key]
        return StandardEpisode(actions, proprio, images, instructions)

    def _proprio(self, obs: dict[str, np.ndarray], actions: np.ndarray, where: str) -> np.ndarray:
        """Concatenate the state keys (one zero column per ``None``); zeros like the actions without any."""
        if not self.state_obs_keys:
            return np.zeros_like(actions)
        length, parts = len(actions), []
        for key in self.state_obs_keys:
            if key is None:
                parts.append(np.zeros((length, 1), dtype=np.float32))
            elif key not in obs:
                raise EpisodeError(f"{where}: missing state key {key!r} (have {sorted(obs)})")
            else:
                parts.append(np.asarray(obs[key], dtype=np.float32).reshape(length, -1))
        return np.concatenate(parts, axis=1)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_finite(values: np.ndarray, name: str, where: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        step, dim = np.argwhere(bad)[0]
        raise EpisodeError(f"{where}: non-finite {name} {values[step, dim]} at step {step}, dim {dim}")


def check_image(image: Any, expected_shape: tuple | None, where: str) -> None:
    """Encoded bytes must be a readable RGB image, raw arrays uint8 HxWx3; sizes must match the source."""
    if isinstance(image, bytes | np.bytes_):
        if not image:
            raise EpisodeError(f"{where}: empty image bytes")
        try:
            with Image.open(io.BytesIO(image)) as decoded:
                shape = (decoded.height, decoded.width, len(decoded.getbands()))
        except (UnidentifiedImageError, OSError) as exc:
            raise EpisodeError(f"{where}: unreadable image ({exc})") from exc
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise EpisodeError(f"{where}: raw image must be uint8, got {array.dtype}")
        shape = array.shape
    wanted = tuple(expected_shape) if expected_shape is not None else (None, None, 3)
    if len(shape) != 3 or len(wanted) != 3 or any(w is not None and w != s for w, s in zip(wanted, shape, strict=True)):
        raise EpisodeError(f"{where}: image shape {shape} does not match the expected {wanted}")


def _config(
    primary: str | None,
    state_obs_keys: tuple[str | None, ...],
    state_encoding: StateEncoding,
    transform: T.Transform,
    secondary: str | None = None,
    wrist: str | None = None,
) -> DatasetConfig:
    return DatasetConfig(
        image_obs_keys={"primary": primary, "secondary": secondary, "wrist": wrist},
        state_obs_keys=state_obs_keys,
        state_encoding=state_encoding,
        action_encoding=ActionEncoding.EEF_POS,
        transform=transform,
    )


_EEF_PAD_GRIPPER = ("EEF_state", None, "gripper_state")
_SE = StateEncoding
_BRIDGE_ORIG = _config("image_0", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.bridge_orig_transform, secondary="image_1")
_LIBERO = _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.libero_transform, wrist="wrist_image")

DATASET_CONFIGS: dict[str, DatasetConfig] = {
    "bridge_orig": _BRIDGE_ORIG,
    "bridge_dataset": _BRIDGE_ORIG,
    "bridge_oxe": _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.bridge_oxe_transform, secondary="image_1"),
    "libero_spatial_no_noops": _LIBERO,
    "libero_object_no_noops": _LIBERO,
    "libero_goal_no_noops": _LIBERO,
    "libero_10_no_noops": _LIBERO,
    "fractal20220817_data": _config(
        "image", ("base_pose_tool_reached", "gripper_closed"), _SE.POS_QUAT, T.rt1_transform
    ),
    "kuka": _config(
        "image", ("clip_function_input/base_pose_tool_reached", "gripper_closed"), _SE.POS_QUAT, T.kuka_transform
    ),
    "taco_play": _config(
        "rgb_static", ("state_eef", None, "state_gripper"), _SE.POS_EULER, T.taco_play_transform, wrist="rgb_gripper"
    ),
    "jaco_play": _config(
        "image", ("state_eef", None, "state_gripper"), _SE.POS_EULER, T.jaco_play_transform, wrist="image_wrist"
    ),
    "berkeley_cable_routing": _config(
        "image",
        ("robot_state", None),
        _SE.JOINT,
        T.berkeley_cable_routing_transform,
        secondary="top_image",
        wrist="wrist45_image",
    ),
    "roboturk": _config("front_rgb", (None,) * 8, _SE.NONE, T.roboturk_transform),
    "viola": _config(
        "agentview_rgb", ("joint_states", "gripper_states"), _SE.JOINT, T.viola_transform, wrist="eye_in_hand_rgb"
    ),
    "toto": _config("image", ("state", None), _SE.JOINT, T.toto_transform),
    "language_table": _config(
        "rgb", ("effector_translation",) + (None,) * 6, _SE.POS_EULER, T.language_table_transform
    ),
    "droid": _config(
        "exterior_image_1_left",
        ("proprio",),
        _SE.POS_QUAT,
        T.droid_transform,
        secondary="exterior_image_2_left",
        wrist="wrist_image_left",
    ),
    "vla_sim": _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.vla_sim_transform, wrist="wrist_image"),
}


# === LeRobot datasets (LeRobotDataset v3.0 / v2.x directories, read by data_prep/lerobot_reader.py) ===
#
# The reader hands ``standardize`` the same step-batched episode as RLDS: every feature whose name starts
# with ``observation.`` under ``episode["observation"]`` by its full LeRobot name (cameras as encoded image
# bytes per frame: video frames decoded and JPEG-encoded, image features as stored), the other features
# (``action``, ...) at the top level, and the per-frame task strings as ``episode["task"]``.


def lerobot_default_views(cameras: Sequence[str]) -> dict[str, str | None]:
    """The common single-arm layout (``observation.images.<cam>``), cameras in ``meta/info.json`` order.

    ``wrist`` = the first camera whose last name part contains ``wrist`` or ``hand``; ``primary`` and
    ``secondary`` = the first two other cameras (further cameras are not used). A dataset whose only
    camera is a wrist camera uses it as ``primary``.
    """
    wrist = next((c for c in cameras if any(w in c.rsplit(".", 1)[-1].lower() for w in ("wrist", "hand"))), None)
    others = [c for c in cameras if c != wrist]
    if not others:
        return {"primary": wrist, "secondary": None, "wrist": None}
    return {"primary": others[0], "secondary": others[1] if len(others) > 1 else None, "wrist": wrist}


def _lerobot_action(action_keys: tuple[str, ...]) -> T.Transform:
    """Actions = the named features concatenated (float32), unchanged otherwise."""

    def transform(episode: T.Episode) -> T.Episode:
        length = len(episode[action_keys[0]])
        episode["action"] = np.concatenate(
            [np.asarray(episode[key], dtype=np.float32).reshape(length, -1) for key in action_keys], axis=1
        )
        return episode

    transform.action_keys = action_keys  # type: ignore[attr-defined]  # the reader checks their size
    return transform


def lerobot_config(
    views: dict[str, str] | None = None,
    state_keys: tuple[str, ...] = ("observation.state",),
    action_keys: tuple[str, ...] = ("action",),
    action_mask: Sequence[bool] | None = None,
) -> DatasetConfig:
    """A LeRobot entry: ``views`` maps ``primary`` / ``secondary`` / ``wrist`` to camera features (None:
    :func:`lerobot_default_views`); proprio = ``state_keys`` concatenated (none: zeros like the actions);
    actions = ``action_keys`` concatenated, unchanged. ``action_mask`` defaults to EEF_POS (7-D, absolute
    gripper last: ``[True] * 6 + [False]``); give one for any other action layout.
    """
    return DatasetConfig(
        image_obs_keys={view: (views or {}).get(view) for view in IMAGE_VIEWS},
        state_obs_keys=tuple(state_keys),
        state_encoding=StateEncoding.NONE if not state_keys else StateEncoding.JOINT,
        action_encoding=ActionEncoding.EEF_POS,
        transform=_lerobot_action(tuple(action_keys)),
        language_key="task",
        source_format="lerobot",
        camera_views=lerobot_default_views if views is None else None,
        action_mask=None if action_mask is None else tuple(bool(m) for m in action_mask),
    )


DATASET_CONFIGS.update(
    {
        # Any single-arm LeRobot dataset: cameras detected, `action` (7-D EEF_POS-like) and `observation.state`.
        "lerobot": lerobot_config(),
    }
)


def get_dataset_config(name: str) -> DatasetConfig:
    if name not in DATASET_CONFIGS:
        raise ValueError(f"Unknown dataset {name!r}; registered: {sorted(DATASET_CONFIGS)}")
    return DATASET_CONFIGS[name]
