"""compute_statistics: OpenVLA's dataset_statistics.json values, checked on hand-computable data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla.contract.normalization import normalize
from vla.data.statistics import compute_statistics, load_statistics, openvla_quantile, write_statistics


def test_values_are_population_std_and_linear_quantiles_over_all_episodes():
    # dim 0 = 0..100 over two episodes: q01 = 1, q99 = 99 by linear interpolation; std with ddof 0
    values = np.arange(101, dtype=np.float32)
    actions = np.stack([values, np.full(101, 3.0, np.float32)], axis=1)
    stats = compute_statistics([actions[:40], actions[40:]], None, action_mask=[True, False])
    action = stats["action"]
    assert action["q01"] == pytest.approx([1.0, 3.0]) and action["q99"] == pytest.approx([99.0, 3.0])
    assert action["mean"] == pytest.approx([50.0, 3.0])
    assert action["std"] == pytest.approx([np.sqrt((101**2 - 1) / 12), 0.0], rel=1e-6)  # ddof 0
    assert (action["min"], action["max"]) == ([0.0, 3.0], [100.0, 3.0])
    assert action["mask"] == [True, False]
    assert (stats["num_transitions"], stats["num_trajectories"]) == (101, 2)
    # no proprio -> zeros like the action, as OpenVLA
    assert stats["proprio"]["max"] == [0.0, 0.0] and stats["proprio"]["mask"] == [True, True]


def test_quantiles_interpolate_between_samples():
    actions = np.array([[0.0], [10.0], [20.0]], dtype=np.float32)
    stats = compute_statistics([actions], [actions * 2])
    assert stats["action"]["q01"] == pytest.approx([0.2]) and stats["action"]["q99"] == pytest.approx([19.8])
    assert stats["proprio"]["q99"] == pytest.approx([39.6])


def test_statistics_drive_normalization_with_mask_and_zero_rule():
    actions = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0], [2.0, 1.0, 5.0]], dtype=np.float32)
    stats = compute_statistics([actions], None, action_mask=[True, False, True])
    normalized = normalize(actions, stats["action"])
    np.testing.assert_allclose(normalized[:, 0], [-1, 0, 1], atol=1e-6)  # q01=0.04, q99=1.96 -> clipped ends
    np.testing.assert_array_equal(normalized[:, 1], actions[:, 1])  # mask False passes through
    np.testing.assert_array_equal(normalized[:, 2], 0)  # min == max -> 0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="without episodes"):
        compute_statistics([], None)
    with pytest.raises(ValueError, match="mask has 2 entries for 3"):
        compute_statistics([np.zeros((2, 3))], None, action_mask=[True, False])
    with pytest.raises(ValueError, match="3 proprio rows for 2 actions"):
        compute_statistics([np.zeros((2, 3))], [np.zeros((3, 4))])


def test_write_and_load_pin_the_file_hash(tmp_path):
    stats = compute_statistics([np.ones((2, 7), np.float32)], None)
    sha = write_statistics(tmp_path, "sim", stats)
    assert load_statistics(tmp_path, sha) == json.loads(json.dumps({"sim": stats}))
    (tmp_path / "dataset_statistics.json").write_text("{}")
    with pytest.raises(ValueError, match="sha256"):
        load_statistics(tmp_path, sha)
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        load_statistics(tmp_path / "missing")


def test_quantiles_are_openvla_numpy1_float64_not_numpy2_float32():
    # OpenVLA ran np.quantile on float32 under NumPy 1.x, which interpolates in float64; NumPy 2 stays in
    # float32. On data whose sorted neighbours are close (b - a exact in float32) that is exactly the
    # float64 computation.
    values = np.random.default_rng(0).normal(0.0, 0.02, (1000, 6)).astype(np.float32) + np.float32(0.5)
    stats = compute_statistics([values[:500], values[500:]], None)["action"]
    for key, q in (("q01", 0.01), ("q99", 0.99)):
        float64 = np.quantile(values.astype(np.float64), q, axis=0)
        assert stats[key] == float64.tolist(), key
        if np.lib.NumpyVersion(np.__version__) >= "2.0.0":  # NumPy 2's float32 quantile differs
            assert stats[key] != np.quantile(values, q, axis=0).astype(np.float64).tolist(), key
        assert openvla_quantile(values, q).dtype == np.float64
    # mean / std: OpenVLA's float32 values.mean(0) / values.std(0) (float32 accumulation), not float64
    assert stats["mean"] == values.mean(0).tolist() and stats["std"] == values.std(0).tolist()
    assert stats["min"] == values.min(0).tolist() and stats["max"] == values.max(0).tolist()


def test_quantiles_round_the_neighbour_difference_in_float32_as_numpy1():
    # Expected values printed by NumPy 1.26.4's np.quantile on this float32 array. Column 0's neighbours
    # -0.1 and 0.3 differ by 0.4, which rounds in float32: NumPy 1.x's result is then neither the float64
    # computation (-0.09200000122189522) nor NumPy 2's float32 one (-0.09200000017881393).
    values = np.array([[-0.1, 1.1], [0.3, 1.3], [0.7, 1.7]], dtype=np.float32)
    stats = compute_statistics([values], None)["action"]
    assert stats["q01"] == [-0.09200000137090683, 1.1040000224113464]
    assert stats["q99"] == [0.6919999885559082, 1.692000045776367]
    one = np.array([[2.5, -1.0]], dtype=np.float32)  # a single row: every quantile is that row
    assert openvla_quantile(one, 0.01).tolist() == openvla_quantile(one, 0.99).tolist() == [2.5, -1.0]
    with_nan = np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 3.0]], dtype=np.float32)
    assert np.isnan(openvla_quantile(with_nan, 0.5)[0]) and openvla_quantile(with_nan, 0.5)[1] == 2.0
