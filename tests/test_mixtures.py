"""Mixture registry: OpenVLA's names and weights, normalization, balancing, unknown datasets."""

from __future__ import annotations

import pytest

from vla.data.mixtures import MIXTURES, resolve_mixture


def _all_names(mixture_name: str) -> set[str]:
    return {name for name, _ in MIXTURES[mixture_name]}


def test_openvla_mixture_facts():
    assert MIXTURES["bridge"] == [("bridge_orig", 1.0)]
    soup, plus, plus_minus = (dict(MIXTURES[n]) for n in ("oxe_magic_soup", "oxe_magic_soup_plus", "oxe_magic_soup_plus_minus"))
    assert soup["fractal20220817_data"] == plus["fractal20220817_data"] == 0.54087122203
    assert plus_minus["fractal20220817_data"] == 1.0 and plus_minus["kuka"] == 0.8341046294
    assert soup["language_table"] == 0.1 and "language_table" not in plus_minus
    assert plus["droid"] == 0.06 and "droid" not in plus_minus and "droid" not in soup
    assert plus_minus["nyu_franka_play_dataset_converted_externally_to_rlds"] == 3.0
    assert (len(soup), len(plus), len(plus_minus)) == (23, 27, 25)
    assert _all_names("oxe_magic_soup_plus") - _all_names("oxe_magic_soup") == {"bc_z", "fmb_dataset", "dobbe", "droid"}
    for suite in ("spatial", "object", "goal", "10"):
        assert MIXTURES[f"libero_{suite}"] == MIXTURES[f"libero_{suite}_no_noops"] == [(f"libero_{suite}_no_noops", 1.0)]
    assert MIXTURES["vla_sim"] == [("vla_sim", 1.0)]
    assert MIXTURES["bridge_rt_1"] == [("bridge_orig", 1.0), ("fractal20220817_data", 1.0)]
    assert dict(MIXTURES["rtx"])["berkeley_cable_routing"] == 3.0 and len(MIXTURES["rtx_franka"]) == 28


def test_duplicates_keep_the_first_entry():
    resolved = dict(resolve_mixture([("a", 3.0), ("b", 1.0), ("a", 1.0)], known_datasets={"a", "b"}))
    assert resolved == {"a": pytest.approx(0.75), "b": pytest.approx(0.25)}


def test_weights_are_normalized():
    names = _all_names("oxe_magic_soup_plus_minus")
    resolved = dict(resolve_mixture("oxe_magic_soup_plus_minus", known_datasets=names))
    assert sum(resolved.values()) == pytest.approx(1.0)
    assert resolved["taco_play"] / resolved["bridge_orig"] == pytest.approx(2.0)


def test_balance_multiplies_by_dataset_size_then_normalizes():
    resolved = resolve_mixture({"a": 2.0, "b": 1.0}, {"a": 100, "b": 600}, balance_weights=True, known_datasets={"a", "b"})
    assert resolved == [("a", pytest.approx(0.25)), ("b", pytest.approx(0.75))]
    with pytest.raises(ValueError, match=r"\['b'\]"):
        resolve_mixture({"a": 1.0, "b": 1.0}, {"a": 5}, balance_weights=True, known_datasets={"a", "b"})


def test_unknown_datasets_and_mixtures_are_named():
    with pytest.raises(ValueError, match="no_such_set"):
        resolve_mixture([("bridge_orig", 1.0), ("no_such_set", 1.0)], known_datasets={"bridge_orig"})
    with pytest.raises(ValueError, match="oxe_magic_stew"):
        resolve_mixture("oxe_magic_stew", known_datasets=set())


def test_default_check_uses_the_dataset_registry():
    assert resolve_mixture("bridge") == [("bridge_orig", 1.0)]
    assert resolve_mixture("vla_sim") == [("vla_sim", 1.0)]
    with pytest.raises(ValueError, match="not_registered_anywhere"):
        resolve_mixture({"not_registered_anywhere": 1.0})


@pytest.mark.parametrize("bad", [{}, {"a": -1.0}, {"a": 0.0}, {"a": float("nan")}])
def test_bad_weights_are_rejected(bad):
    with pytest.raises(ValueError):
        resolve_mixture(bad, known_datasets={"a"})
