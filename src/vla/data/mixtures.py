"""Named dataset mixtures (OpenVLA's ``OXE_NAMED_MIXTURES`` names and weights) and their resolution.

A mixture is a list of ``(dataset_name, sampling_weight)``. Weights are relative: OpenVLA
optionally multiplies them by each dataset's size (``balance_weights``) and then normalizes them
to sum to 1; :func:`resolve_mixture` does the same.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

Mixture = list[tuple[str, float]]

_MAGIC_SOUP_SHARED: Mixture = [
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
]
_MAGIC_SOUP_TAIL: Mixture = [
    ("stanford_hydra_dataset_converted_externally_to_rlds", 2.0),
    ("austin_buds_dataset_converted_externally_to_rlds", 1.0),
    ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("ucsd_kitchen_dataset_converted_externally_to_rlds", 2.0),
    ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
    ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
    ("dlr_edan_shared_control_converted_externally_to_rlds", 1.0),
    ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
]
_RT1_WEIGHT = 0.54087122203  # OpenVLA's down-weighting of fractal20220817_data (RT-1)
_KUKA_WEIGHT = 0.8341046294
_LIBERO_SUITES = ("spatial", "object", "goal", "10")

MIXTURES: dict[str, Mixture] = {
    "bridge": [("bridge_orig", 1.0)],
    "oxe_magic_soup": [
        ("fractal20220817_data", _RT1_WEIGHT), ("kuka", _KUKA_WEIGHT), ("bridge_orig", 1.0), ("taco_play", 2.0),
        *_MAGIC_SOUP_SHARED, ("language_table", 0.1), *_MAGIC_SOUP_TAIL,
    ],
    "oxe_magic_soup_plus": [
        ("fractal20220817_data", _RT1_WEIGHT), ("kuka", _KUKA_WEIGHT), ("bridge_orig", 1.0), ("taco_play", 2.0),
        *_MAGIC_SOUP_SHARED, ("language_table", 0.1), *_MAGIC_SOUP_TAIL,
        ("bc_z", 0.2), ("fmb_dataset", 1.0), ("dobbe", 0.2), ("droid", 0.06),
    ],
    # The mixture OpenVLA-7B was trained on: RT-1 at full weight, no language_table, no droid.
    "oxe_magic_soup_plus_minus": [
        ("fractal20220817_data", 1.0), ("kuka", _KUKA_WEIGHT), ("bridge_orig", 1.0), ("taco_play", 2.0),
        *_MAGIC_SOUP_SHARED, *_MAGIC_SOUP_TAIL,
        ("bc_z", 0.2), ("fmb_dataset", 1.0), ("dobbe", 0.2),
    ],
    **{f"libero_{suite}_no_noops": [(f"libero_{suite}_no_noops", 1.0)] for suite in _LIBERO_SUITES},
    **{f"libero_{suite}": [(f"libero_{suite}_no_noops", 1.0)] for suite in _LIBERO_SUITES},
    "libero_mix": [(f"libero_{suite}_no_noops", 1.0) for suite in _LIBERO_SUITES],
    "vla_sim": [("vla_sim", 1.0)],
}


def _known_dataset_names() -> Collection[str]:
    from vla.data.registry import DATASET_CONFIGS  # imported late: the registry pulls in transforms

    return DATASET_CONFIGS.keys()


def _as_mixture(name_or_weights: str | Mapping[str, float] | Sequence[tuple[str, float]]) -> Mixture:
    if isinstance(name_or_weights, str):
        if name_or_weights not in MIXTURES:
            raise ValueError(f"Unknown mixture {name_or_weights!r}; named mixtures: {sorted(MIXTURES)}")
        return list(MIXTURES[name_or_weights])
    if isinstance(name_or_weights, Mapping):
        return [(str(name), float(weight)) for name, weight in name_or_weights.items()]
    return [(str(name), float(weight)) for name, weight in name_or_weights]


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
    mixture = _as_mixture(name_or_weights)
    if not mixture:
        raise ValueError("mixture is empty")
    names = [name for name, _ in mixture]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"mixture lists datasets more than once: {duplicates}")
    known = set(_known_dataset_names() if known_datasets is None else known_datasets)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"mixture contains unknown datasets (not in the dataset registry): {unknown}")
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
