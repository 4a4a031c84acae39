"""Named dataset mixtures (OpenVLA's ``OXE_NAMED_MIXTURES`` names and weights) and their resolution.

A mixture is a list of ``(dataset_name, sampling_weight)``. Weights are relative: OpenVLA
optionally multiplies them by each dataset's size (``balance_weights``) and then normalizes them
to sum to 1; :func:`resolve_mixture` does the same. As OpenVLA's ``materialize``, a dataset listed
twice keeps its first entry (the repeat is dropped with a warning), a registered dataset whose actions
OpenVLA cannot train on (JOINT_POS) is skipped with a warning, and a registered dataset name given in
place of a mixture name is the one-dataset mixture ``[(name, 1.0)]``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

Mixture = list[tuple[str, float]]

_RT1_WEIGHT = 0.54087122203  # OpenVLA's down-weighting of fractal20220817_data (RT-1)
_KUKA_WEIGHT = 0.8341046294
_LIBERO_SUITES = ("spatial", "object", "goal", "10")
_TDROID_TASKS = (
    "carrot_in_bowl", "pour_corn_in_pot", "flip_pot_upright", "move_object_onto_plate", "knock_object_over",
    "cover_object_with_towel",
)  # fmt: skip


def _ext(name: str, weight: float) -> tuple[str, float]:
    return (f"{name}_converted_externally_to_rlds", weight)


_RTX: Mixture = [
    ("fractal20220817_data", _RT1_WEIGHT), ("kuka", _KUKA_WEIGHT), ("bridge_orig", 1.0), ("taco_play", 2.0),
    ("jaco_play", 2.0), ("berkeley_cable_routing", 3.0), ("roboturk", 1.0), ("viola", 2.0),
    ("berkeley_autolab_ur5", 1.0), ("toto", 1.0),
]  # fmt: skip
_MAGIC_SOUP_HEAD: Mixture = [
    ("kuka", _KUKA_WEIGHT), ("bridge_orig", 1.0), ("taco_play", 2.0), ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0), ("roboturk", 2.0), ("viola", 2.0), ("berkeley_autolab_ur5", 2.0), ("toto", 1.0),
]  # fmt: skip
_MAGIC_SOUP_TAIL: Mixture = [
    _ext("stanford_hydra_dataset", 2.0), _ext("austin_buds_dataset", 1.0), _ext("nyu_franka_play_dataset", 3.0),
    _ext("furniture_bench_dataset", 0.1), _ext("ucsd_kitchen_dataset", 2.0), _ext("austin_sailor_dataset", 1.0),
    _ext("austin_sirius_dataset", 1.0), _ext("dlr_edan_shared_control", 1.0), _ext("iamlab_cmu_pickup_insert", 1.0),
    ("utaustin_mutex", 1.0), ("berkeley_fanuc_manipulation", 2.0), ("cmu_stretch", 1.0),
]  # fmt: skip
_MAGIC_SOUP_PLUS_NEW: Mixture = [("bc_z", 0.2), ("fmb_dataset", 1.0), ("dobbe", 0.2)]

# OpenVLA's OXE_NAMED_MIXTURES (openvla/openvla @ c8f03f48), then this project's aliases and own mixtures.
MIXTURES: dict[str, Mixture] = {
    "bridge": [("bridge_orig", 1.0)],
    "bridge_rt_1": [("bridge_orig", 1.0), ("fractal20220817_data", 1.0)],
    "rtx": list(_RTX),
    # Lists taco_play, berkeley_cable_routing, viola and toto twice (the repeats are dropped, with a warning)
    # and berkeley_rpt, whose JOINT_POS actions OpenVLA cannot train on (skipped, with a warning).
    "rtx_franka": [
        *_RTX,
        ("taco_play", 1.0), ("berkeley_cable_routing", 1.0), ("viola", 1.0), ("toto", 1.0),
        _ext("stanford_hydra_dataset", 1.0), _ext("austin_buds_dataset", 3.0), _ext("nyu_franka_play_dataset", 3.0),
        _ext("maniskill_dataset", 0.1), _ext("furniture_bench_dataset", 0.1),
        _ext("cmu_franka_exploration_dataset", 5.0), _ext("austin_sailor_dataset", 1.0),
        _ext("austin_sirius_dataset", 1.0), _ext("berkeley_rpt", 1.0), _ext("kaist_nonprehensile", 3.0),
        _ext("stanford_robocook", 1.0), _ext("iamlab_cmu_pickup_insert", 1.0), ("utaustin_mutex", 1.0),
        ("cmu_play_fusion", 1.0),
    ],  # fmt: skip
    "oxe_magic_soup": [
        ("fractal20220817_data", _RT1_WEIGHT), *_MAGIC_SOUP_HEAD, ("language_table", 0.1), *_MAGIC_SOUP_TAIL,
    ],
    "oxe_magic_soup_plus": [
        ("fractal20220817_data", _RT1_WEIGHT), *_MAGIC_SOUP_HEAD, ("language_table", 0.1), *_MAGIC_SOUP_TAIL,
        *_MAGIC_SOUP_PLUS_NEW, ("droid", 0.06),
    ],
    # The mixture OpenVLA-7B was trained on: RT-1 at full weight, no language_table, no droid.
    "oxe_magic_soup_plus_minus": [
        ("fractal20220817_data", 1.0), *_MAGIC_SOUP_HEAD, *_MAGIC_SOUP_TAIL, *_MAGIC_SOUP_PLUS_NEW,
    ],
    **{f"tdroid_{task}": [(f"tdroid_{task}", 1.0)] for task in _TDROID_TASKS},
    "droid_wipe": [("droid_wipe", 1.0)],
    **{f"libero_{suite}_no_noops": [(f"libero_{suite}_no_noops", 1.0)] for suite in _LIBERO_SUITES},
    # --- this project's additions ---
    **{f"libero_{suite}": [(f"libero_{suite}_no_noops", 1.0)] for suite in _LIBERO_SUITES},
    "libero_mix": [(f"libero_{suite}_no_noops", 1.0) for suite in _LIBERO_SUITES],
    "vla_sim": [("vla_sim", 1.0)],
}

# The 18 names of OpenVLA's OXE_NAMED_MIXTURES
OPENVLA_MIXTURES: tuple[str, ...] = (
    "bridge", "bridge_rt_1", "rtx", "rtx_franka", "oxe_magic_soup", "oxe_magic_soup_plus",
    "oxe_magic_soup_plus_minus", *(f"tdroid_{task}" for task in _TDROID_TASKS), "droid_wipe",
    *(f"libero_{suite}_no_noops" for suite in _LIBERO_SUITES),
)  # fmt: skip


def _known_dataset_names() -> Collection[str]:
    from vla.data.registry import DATASET_CONFIGS  # imported late: the registry pulls in transforms

    return DATASET_CONFIGS.keys()


def _as_mixture(
    name_or_weights: str | Mapping[str, float] | Sequence[tuple[str, float]], known: Collection[str]
) -> Mixture:
    if isinstance(name_or_weights, str):
        if name_or_weights in MIXTURES:
            return list(MIXTURES[name_or_weights])
        if name_or_weights in known:  # a single dataset, as OpenVLA's `data_mix` accepts
            return [(name_or_weights, 1.0)]
        raise ValueError(
            f"Unknown mixture {name_or_weights!r}: neither a named mixture ({sorted(MIXTURES)}) "
            "nor a registered dataset"
        )
    if isinstance(name_or_weights, Mapping):
        return [(str(name), float(weight)) for name, weight in name_or_weights.items()]
    return [(str(name), float(weight)) for name, weight in name_or_weights]


def _drop_duplicates(mixture: Mixture) -> Mixture:
    """Keep each dataset's first entry; warn about every repeat (OpenVLA's ``materialize``)."""
    seen: set[str] = set()
    kept: Mixture = []
    for name, weight in mixture:
        if name in seen:
            log.warning("Skipping duplicate dataset in mixture: %r (weight %s)", name, weight)
            continue
        seen.add(name)
        kept.append((name, weight))
    return kept


def _drop_untrainable(mixture: Mixture) -> Mixture:
    """Skip registered datasets whose action encoding OpenVLA cannot train on, with a warning."""
    from vla.data.registry import DATASET_CONFIGS

    kept: Mixture = []
    for name, weight in mixture:
        config = DATASET_CONFIGS[name]
        if not config.trainable:
            log.warning(
                "Skipping %r: only EEF_POS and EEF_R6 actions are supported (has %s)",
                name,
                config.action_encoding.name,
            )
            continue
        kept.append((name, weight))
    if not kept:
        raise ValueError(f"no dataset of the mixture has trainable (EEF_POS / EEF_R6) actions: {mixture}")
    return kept


def resolve_mixture(
    name_or_weights: str | Mapping[str, float] | Sequence[tuple[str, float]],
    dataset_sizes: Mapping[str, int] | None = None,
    balance_weights: bool = False,
    known_datasets: Collection[str] | None = None,
) -> Mixture:
    """Named mixture or explicit weights -> ``[(dataset, normalized_weight)]`` (weights sum to 1).

    With ``balance_weights`` each weight is multiplied by ``dataset_sizes[dataset]`` (number of
    transitions) before normalizing, as OpenVLA does. Datasets missing from ``known_datasets``
    (default: the dataset registry) are reported by name.
    """
    known = set(_known_dataset_names() if known_datasets is None else known_datasets)
    mixture = _drop_duplicates(_as_mixture(name_or_weights, known))
    if not mixture:
        raise ValueError("mixture is empty")
    unknown = [name for name, _ in mixture if name not in known]
    if unknown:
        raise ValueError(f"mixture contains unknown datasets (not in the dataset registry): {unknown}")
    if known_datasets is None:
        mixture = _drop_untrainable(mixture)
    names = [name for name, _ in mixture]
    weights = np.array([weight for _, weight in mixture], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"mixture weights must be finite and non-negative, got {dict(mixture)}")
    if balance_weights:
        if dataset_sizes is None:
            raise ValueError("balance_weights needs dataset_sizes")
        missing = [name for name in names if name not in dataset_sizes]
        if missing:
            raise ValueError(f"no dataset size for {missing}; cannot balance weights")
        weights = weights * np.array([dataset_sizes[name] for name in names], dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError(f"mixture weights sum to zero: {dict(mixture)}")
    weights = weights / weights.sum()
    return [(name, float(weight)) for name, weight in zip(names, weights)]
