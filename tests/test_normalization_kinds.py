"""The normalization kind travels with the statistics: data_prep -> DataModule -> model -> Policy / export.

Prepared with ``normalization=bounds`` / ``normal``, the statistics a model carries record that kind
and the policy un-normalizes with it; statistics without the key (OpenVLA's checkpoints) are
BOUNDS_Q99, as OpenVLA.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

from vla.contract.normalization import normalization_kind, unnormalize, with_normalization_kind
from vla.data.datamodule import VLADataModule
from vla.policy import Policy

KINDS = ("bounds", "normal")
INSTRUCTION = "move to the red block"


@pytest.fixture(scope="module")
def kind_roots(tmp_path_factory):
    """``{kind: data_root}`` with ``vla_sim`` prepared from one small sim RLDS under each kind."""
    from data_prep import prepare
    from data_prep.sim_rlds import generate_rlds

    base = tmp_path_factory.mktemp("kinds")
    rlds = generate_rlds(base / "rlds", episodes=6, seed=1, image_size=64, progress=False)
    roots = {}
    for kind in KINDS:
        prepare(dataset="vla_sim", source=rlds, out=base / kind / "vla_sim", normalization=kind)
        roots[kind] = base / kind
    return roots


def _statistics(root) -> dict:
    return VLADataModule(root, mixture="vla_sim", num_workers=0).dataset_statistics


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]


def _predict_with_decoded(policy: Policy, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(the policy's actions, the decoded normalized actions they came from)."""
    tokens = []
    generate = policy.model.generate_action_tokens

    def recording(*args, **kwargs):
        tokens.append(generate(*args, **kwargs))
        return tokens[-1]

    policy.model.generate_action_tokens = recording
    try:
        actions = policy.predict_batch(images, [INSTRUCTION] * len(images))
    finally:
        del policy.model.generate_action_tokens
    return actions, policy.processor.decode_actions(tokens[0])


@pytest.mark.parametrize("kind", KINDS)
def test_datamodule_statistics_record_the_manifest_kind(kind_roots, kind):
    root = kind_roots[kind]
    stats = _statistics(root)["vla_sim"]
    assert stats["action"]["normalization"] == kind and stats["proprio"]["normalization"] == kind
    # The prepared file keeps OpenVLA's layout, untouched (the manifest pins its bytes).
    on_disk = json.loads((root / "vla_sim" / "dataset_statistics.json").read_text())["vla_sim"]
    assert "normalization" not in on_disk["action"]
    assert {k: v for k, v in stats["action"].items() if k != "normalization"} == on_disk["action"]


@pytest.mark.parametrize("kind", KINDS)
def test_policy_unnormalizes_with_the_statistics_kind(kind_roots, tiny_vla, monkeypatch, kind):
    norm_stats = _statistics(kind_roots[kind])
    monkeypatch.setattr(tiny_vla, "norm_stats", norm_stats)
    policy = Policy(tiny_vla)
    assert policy.normalization() == kind and policy.info()["normalization"] == {"vla_sim": kind}
    actions, decoded = _predict_with_decoded(policy, _images())
    stats = norm_stats["vla_sim"]["action"]
    np.testing.assert_array_equal(actions, unnormalize(decoded, stats, kind=kind))
    np.testing.assert_array_equal(actions, unnormalize(decoded, stats))  # kind=None: the statistics' own
    q99_answer = unnormalize(decoded, stats, kind="bounds_q99")
    mask = np.asarray(stats["mask"])
    assert not np.allclose(actions[:, mask], q99_answer[:, mask])
    np.testing.assert_array_equal(actions[:, ~mask], decoded[:, ~mask])  # the gripper passes through


def test_statistics_without_the_kind_are_bounds_q99(kind_roots, tiny_vla, monkeypatch):
    norm_stats = copy.deepcopy(_statistics(kind_roots["normal"]))
    del norm_stats["vla_sim"]["action"]["normalization"], norm_stats["vla_sim"]["proprio"]["normalization"]
    monkeypatch.setattr(tiny_vla, "norm_stats", norm_stats)
    policy = Policy(tiny_vla)
    assert policy.normalization() == "bounds_q99"
    actions, decoded = _predict_with_decoded(policy, _images())
    np.testing.assert_array_equal(actions, unnormalize(decoded, norm_stats["vla_sim"]["action"], kind="bounds_q99"))
    assert normalization_kind({"q01": [0.0], "q99": [1.0]}) == "bounds_q99"


def test_export_round_trip_keeps_the_kind(kind_roots, tiny_vla, monkeypatch, tmp_path):
    from vla.models import load_checkpoint, save_vla
    from vla.models.openvla_format import export_openvla_hf

    monkeypatch.setattr(tiny_vla, "norm_stats", _statistics(kind_roots["normal"]))
    images = _images(2)
    expected = Policy(tiny_vla).predict_batch(images, [INSTRUCTION] * 2)
    for path in (save_vla(tiny_vla, tmp_path / "export"), export_openvla_hf(tiny_vla, tmp_path / "openvla_hf")):
        written = json.loads((path / "dataset_statistics.json").read_text())
        assert written["vla_sim"]["action"]["normalization"] == "normal"
        loaded = load_checkpoint(path)
        assert loaded.norm_stats == tiny_vla.norm_stats
        np.testing.assert_array_equal(Policy(loaded).predict_batch(images, [INSTRUCTION] * 2), expected)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "| `vla_sim` | 7 | 1111110 |" in card and "- `vla_sim`: `normal` (`a * std + mean`)" in card


def test_training_carries_the_kind_into_checkpoint_and_export(kind_roots, tmp_path):
    from tests.test_training import compose_train
    from vla.models import load_checkpoint
    from vla.training.run import train

    train(compose_train(tmp_path, kind_roots["bounds"], "trainer.max_steps=2", "trainer.limit_val_batches=0",
                        "checkpoint_every_n_steps=2"))
    for path in (tmp_path / "checkpoints" / "last.ckpt", tmp_path / "export"):
        vla = load_checkpoint(path)
        assert vla.norm_stats["vla_sim"]["action"]["normalization"] == "bounds", path
    policy = Policy(vla)
    actions, decoded = _predict_with_decoded(policy, _images(2))
    np.testing.assert_array_equal(actions, unnormalize(decoded, vla.norm_stats["vla_sim"]["action"], kind="bounds"))


def test_offline_eval_warns_on_a_kind_mismatch(kind_roots):
    from vla.eval.offline import _warn_on_statistics_mismatch

    normal, bounds = _statistics(kind_roots["normal"]), _statistics(kind_roots["bounds"])
    with pytest.warns(UserWarning, match="'normal'.*'bounds'"):
        _warn_on_statistics_mismatch(normal, bounds)
    legacy = copy.deepcopy(bounds)
    del legacy["vla_sim"]["action"]["normalization"], legacy["vla_sim"]["proprio"]["normalization"]
    with pytest.warns(UserWarning, match="'bounds_q99'.*'bounds'"):
        _warn_on_statistics_mismatch(legacy, bounds)
    shifted = copy.deepcopy(normal)
    shifted["vla_sim"]["action"]["std"] = [s * 2 for s in shifted["vla_sim"]["action"]["std"]]
    with pytest.warns(UserWarning, match="normal: mean, std"):
        _warn_on_statistics_mismatch(shifted, normal)
    # Same kind and statistics, or a kind-less entry against bounds_q99 data: silent.
    q99 = {"vla_sim": with_normalization_kind(legacy["vla_sim"], "bounds_q99")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_on_statistics_mismatch(normal, copy.deepcopy(normal))
        _warn_on_statistics_mismatch(legacy, q99)


def test_kind_helpers():
    stats = {"mean": [1.0, 0.0], "std": [2.0, 1.0], "q01": [-1.0, 0.0], "q99": [1.0, 1.0],
             "min": [-2.0, 0.0], "max": [2.0, 1.0], "mask": [True, False]}
    a = np.array([[0.5, 0.3]])
    np.testing.assert_array_equal(unnormalize(a, {**stats, "normalization": "normal"}), [[2.0, 0.3]])
    np.testing.assert_array_equal(unnormalize(a, {**stats, "normalization": "bounds"}), [[1.0, 0.3]])
    np.testing.assert_array_equal(unnormalize(a, stats), [[0.5, 0.3]])  # no key: bounds_q99
    dataset = {"action": stats, "proprio": dict(stats), "num_transitions": 3}
    tagged = with_normalization_kind(dataset, "normal")
    assert tagged["action"]["normalization"] == "normal" and "normalization" not in stats  # a copy
    assert with_normalization_kind(tagged, "normal") == tagged
    with pytest.raises(ValueError, match="record normalization 'normal', not 'bounds'"):
        with_normalization_kind(tagged, "bounds")
    with pytest.raises(ValueError, match="Unknown normalization kind"):
        normalization_kind({"normalization": "minmax"})
