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
from dataclasses import dataclass, field, replace
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


_ACTION_DIMS = {
    ActionEncoding.EEF_POS: 7,
    ActionEncoding.JOINT_POS: 8,
    ActionEncoding.JOINT_POS_BIMANUAL: 14,
    ActionEncoding.EEF_R6: 10,
}


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
    # OpenVLA's depth_obs_keys (view -> observation key), recorded for parity; the pipeline loads no depth
    depth_obs_keys: dict[str, str | None] = field(default_factory=dict)
    # OpenVLA's DROID ``zero_action_filter`` (oxe/utils/droid_utils.py): after normalization, drop every
    # transition whose normalized action equals the normalized zero (|diff| <= 1e-5) in all these
    # dims (the non-gripper ones); statistics still cover every transition. ``()`` = no filter.
    zero_action_dims: tuple[int, ...] = ()
    # OpenVLA's DROID ``rand_swap_exterior_images`` (droid_baseact_transform): these two views trade places
    # in a random half of the episodes; the DataModule draws the choice per episode (seeded). None: never.
    swapped_views: tuple[str, str] | None = None

    @property
    def action_dim(self) -> int:
        """Width of the standardized actions for this entry's action encoding."""
        return _ACTION_DIMS[self.action_encoding]

    @property
    def trainable(self) -> bool:
        """OpenVLA trains on EEF_POS / EEF_R6 actions only (materialize skips the rest with a warning)."""
        return self.action_mask is not None or self.action_encoding in (ActionEncoding.EEF_POS, ActionEncoding.EEF_R6)

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
    depth: dict[str, str] | None = None,
    action_encoding: ActionEncoding = ActionEncoding.EEF_POS,
) -> DatasetConfig:
    return DatasetConfig(
        image_obs_keys={"primary": primary, "secondary": secondary, "wrist": wrist},
        state_obs_keys=state_obs_keys,
        state_encoding=state_encoding,
        action_encoding=action_encoding,
        transform=transform,
        depth_obs_keys={view: (depth or {}).get(view) for view in IMAGE_VIEWS},
    )


_EEF_PAD_GRIPPER = ("EEF_state", None, "gripper_state")
_EEF_GRIPPER = ("eef_state", None, "gripper_state")  # lower-case keys of the *_converted_externally_to_rlds sets
_NO_STATE = (None,) * 8
_SE = StateEncoding
_BRIDGE_ORIG = _config("image_0", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.bridge_orig_transform, secondary="image_1")
_LIBERO = _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.libero_transform, wrist="wrist_image")
_GNM = _config(None, ("state", None, None), _SE.POS_EULER, T.gnm_transform, wrist="image")
_TDROID = _config(
    "static_image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.tdroid_transform, depth={"primary": "static_depth_image"}
)
_TDROID_TASKS = (
    "carrot_in_bowl", "pour_corn_in_pot", "flip_pot_upright", "move_object_onto_plate", "knock_object_over",
    "cover_object_with_towel",
)  # fmt: skip


def _external(name: str) -> str:
    return f"{name}_converted_externally_to_rlds"


# OpenVLA's OXE_DATASET_CONFIGS + OXE_STANDARDIZATION_TRANSFORMS (openvla/openvla @ c8f03f48), in its order.
DATASET_CONFIGS: dict[str, DatasetConfig] = {
    "fractal20220817_data": _config(
        "image", ("base_pose_tool_reached", "gripper_closed"), _SE.POS_QUAT, T.rt1_transform
    ),
    "kuka": _config(
        "image", ("clip_function_input/base_pose_tool_reached", "gripper_closed"), _SE.POS_QUAT, T.kuka_transform
    ),
    "bridge_oxe": _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.bridge_oxe_transform, secondary="image_1"),
    "bridge_orig": _BRIDGE_ORIG,
    "bridge_dataset": _BRIDGE_ORIG,
    "taco_play": _config(
        "rgb_static",
        ("state_eef", None, "state_gripper"),
        _SE.POS_EULER,
        T.taco_play_transform,
        wrist="rgb_gripper",
        depth={"primary": "depth_static", "wrist": "depth_gripper"},
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
    "roboturk": _config("front_rgb", _NO_STATE, _SE.NONE, T.roboturk_transform),
    "nyu_door_opening_surprising_effectiveness": _config(
        None, _NO_STATE, _SE.NONE, T.nyu_door_opening_transform, wrist="image"
    ),
    "viola": _config(
        "agentview_rgb", ("joint_states", "gripper_states"), _SE.JOINT, T.viola_transform, wrist="eye_in_hand_rgb"
    ),
    "berkeley_autolab_ur5": _config(
        "image",
        ("state",),
        _SE.POS_QUAT,
        T.berkeley_autolab_ur5_transform,
        wrist="hand_image",
        depth={"primary": "depth"},
    ),
    "toto": _config("image", ("state", None), _SE.JOINT, T.toto_transform),
    "language_table": _config(
        "rgb", ("effector_translation",) + (None,) * 6, _SE.POS_EULER, T.language_table_transform
    ),
    "columbia_cairlab_pusht_real": _config(
        "image", ("robot_state",) + (None,) * 6, _SE.POS_EULER, T.pusht_transform, wrist="wrist_image"
    ),
    _external("stanford_kuka_multimodal_dataset"): _config(
        "image",
        ("ee_position", "ee_orientation", None),
        _SE.POS_QUAT,
        T.stanford_kuka_multimodal_transform,
        depth={"primary": "depth_image"},
    ),
    _external("nyu_rot_dataset"): _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.nyu_rot_transform),
    _external("stanford_hydra_dataset"): _config(
        "image", _EEF_GRIPPER, _SE.POS_EULER, T.stanford_hydra_transform, wrist="wrist_image"
    ),
    _external("austin_buds_dataset"): _config(
        "image", ("state",), _SE.JOINT, T.austin_buds_transform, wrist="wrist_image"
    ),
    _external("nyu_franka_play_dataset"): _config(
        "image",
        ("eef_state", None, None),
        _SE.POS_EULER,
        T.nyu_franka_play_transform,
        secondary="image_additional_view",
        depth={"primary": "depth", "secondary": "depth_additional_view"},
    ),
    _external("maniskill_dataset"): _config(
        "image",
        ("tcp_pose", "gripper_state"),
        _SE.POS_QUAT,
        T.maniskill_transform,
        wrist="wrist_image",
        depth={"primary": "depth", "wrist": "wrist_depth"},
    ),
    _external("furniture_bench_dataset"): _config(
        "image", ("state",), _SE.POS_QUAT, T.furniture_bench_transform, wrist="wrist_image"
    ),
    _external("cmu_franka_exploration_dataset"): _config(
        "highres_image", _NO_STATE, _SE.NONE, T.drop_last_action_dim_transform
    ),
    _external("ucsd_kitchen_dataset"): _config("image", ("joint_state", None), _SE.JOINT, T.ucsd_kitchen_transform),
    _external("ucsd_pick_and_place_dataset"): _config(
        "image", _EEF_GRIPPER, _SE.POS_EULER, T.ucsd_pick_place_transform
    ),
    _external("austin_sailor_dataset"): _config(
        "image", ("state",), _SE.POS_QUAT, T.austin_sailor_transform, wrist="wrist_image"
    ),
    _external("austin_sirius_dataset"): _config(
        "image", ("state",), _SE.POS_QUAT, T.austin_sirius_transform, wrist="wrist_image"
    ),
    "bc_z": _config(
        "image",
        ("present/xyz", "present/axis_angle", None, "present/sensed_close"),
        _SE.POS_EULER,
        T.bc_z_transform,
    ),
    _external("utokyo_pr2_opening_fridge"): _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.tokyo_pr2_transform),
    _external("utokyo_pr2_tabletop_manipulation"): _config(
        "image", _EEF_GRIPPER, _SE.POS_EULER, T.tokyo_pr2_transform
    ),
    _external("utokyo_xarm_pick_and_place"): _config(
        "image",
        ("end_effector_pose", None, None),
        _SE.POS_EULER,
        T.identity_transform,
        secondary="image2",
        wrist="hand_image",
    ),
    _external("utokyo_xarm_bimanual"): _config(
        "image", ("pose_r", None, None), _SE.POS_EULER, T.utokyo_xarm_bimanual_transform
    ),
    "robo_net": _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.robo_net_transform, secondary="image1"),
    _external("berkeley_mvp"): _config(
        None, ("pose", "gripper"), _SE.POS_QUAT, T.identity_transform, wrist="hand_image",
        action_encoding=ActionEncoding.JOINT_POS,
    ),  # fmt: skip
    _external("berkeley_rpt"): _config(
        None, ("joint_pos", "gripper"), _SE.JOINT, T.identity_transform, wrist="hand_image",
        action_encoding=ActionEncoding.JOINT_POS,
    ),  # fmt: skip
    _external("kaist_nonprehensile"): _config(
        "image", ("state", None), _SE.POS_QUAT, T.kaist_nonprehensile_transform
    ),
    _external("stanford_mask_vit"): _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.stanford_mask_vit_transform),
    _external("tokyo_u_lsmo"): _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.tokyo_lsmo_transform),
    _external("dlr_sara_pour"): _config("image", ("state", None, None), _SE.POS_EULER, T.identity_transform),
    _external("dlr_sara_grid_clamp"): _config(
        "image", ("state", None, None), _SE.POS_EULER, T.dlr_sara_grid_clamp_transform
    ),
    _external("dlr_edan_shared_control"): _config(
        "image", ("state", None), _SE.POS_EULER, T.dlr_edan_shared_control_transform
    ),
    _external("asu_table_top"): _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.asu_table_top_transform),
    _external("stanford_robocook"): _config(
        "image_1",
        _EEF_GRIPPER,
        _SE.POS_EULER,
        T.robocook_transform,
        secondary="image_2",
        depth={"primary": "depth_1", "secondary": "depth_2"},
    ),
    "imperialcollege_sawyer_wrist_cam": _config(
        "image", (None,) * 7 + ("state",), _SE.NONE, T.drop_last_action_dim_transform, wrist="wrist_image"
    ),
    _external("iamlab_cmu_pickup_insert"): _config(
        "image", ("joint_state", "gripper_state"), _SE.JOINT, T.iamlab_pick_insert_transform, wrist="wrist_image"
    ),
    "uiuc_d3field": _config(
        "image_1",
        _NO_STATE,
        _SE.NONE,
        T.uiuc_d3field_transform,
        secondary="image_2",
        depth={"primary": "depth_1", "secondary": "depth_2"},
    ),
    "utaustin_mutex": _config("image", ("state",), _SE.JOINT, T.utaustin_mutex_transform, wrist="wrist_image"),
    "berkeley_fanuc_manipulation": _config(
        "image", ("joint_state", None, "gripper_state"), _SE.JOINT, T.berkeley_fanuc_transform, wrist="wrist_image"
    ),
    "cmu_playing_with_food": _config(
        "image", ("state", None, None), _SE.POS_EULER, T.cmu_playing_with_food_transform, wrist="finger_vision_1"
    ),
    "cmu_play_fusion": _config("image", ("state",), _SE.JOINT, T.playfusion_transform),
    "cmu_stretch": _config("image", _EEF_GRIPPER, _SE.POS_EULER, T.cmu_stretch_transform),
    "berkeley_gnm_recon": _GNM,
    "berkeley_gnm_cory_hall": _GNM,
    "berkeley_gnm_sac_son": _GNM,
    "droid": replace(
        _config(
            "exterior_image_1_left",
            ("proprio",),
            _SE.POS_QUAT,
            T.droid_transform,
            secondary="exterior_image_2_left",
            wrist="wrist_image_left",
        ),
        zero_action_dims=(0, 1, 2, 3, 4, 5),  # OpenVLA: aux_kwargs chunk_filter_fn=zero_action_filter, action[:, :6]
        swapped_views=("primary", "secondary"),  # exterior_image_1_left <-> exterior_image_2_left (not droid_wipe)
    ),
    "fmb_dataset": _config(
        "image_side_1",
        ("proprio",),
        _SE.POS_EULER,
        T.fmb_transform,
        secondary="image_side_2",
        wrist="image_wrist_1",
        depth={"primary": "image_side_1_depth", "secondary": "image_side_2_depth", "wrist": "image_wrist_1_depth"},
    ),
    "dobbe": _config("wrist_image", ("proprio",), _SE.POS_EULER, T.dobbe_transform),
    "roboset": _config(
        "image_left",
        ("proprio",),
        _SE.JOINT,
        T.roboset_transform,
        secondary="image_right",
        wrist="image_wrist",
        action_encoding=ActionEncoding.JOINT_POS,
    ),
    "rh20t": _config(
        "image_front", ("proprio",), _SE.POS_EULER, T.rh20t_transform, secondary="image_side_right", wrist="image_wrist"
    ),
    **{f"tdroid_{task}": _TDROID for task in _TDROID_TASKS},
    "droid_wipe": _config(
        "exterior_image_2_left", ("proprio",), _SE.POS_EULER, T.droid_finetuning_transform, wrist="wrist_image_left"
    ),
    "libero_spatial_no_noops": _LIBERO,
    "libero_object_no_noops": _LIBERO,
    "libero_goal_no_noops": _LIBERO,
    "libero_10_no_noops": _LIBERO,
    # The project's own sim demos (not an OpenVLA dataset)
    "vla_sim": _config("image", _EEF_PAD_GRIPPER, _SE.POS_EULER, T.vla_sim_transform, wrist="wrist_image"),
}

# OpenVLA's registry also maps "ppgm", "ppgm_static" and "ppgm_wrist" to a transform (T.ppgm_transform) but
# gives them no dataset config (no image or state keys), so OpenVLA cannot load them; they are not registered.


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
