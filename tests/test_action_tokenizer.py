"""The action tokenizer must agree bit-for-bit with OpenVLA's numpy implementation."""

import numpy as np
import pytest
import torch

from vla.contract.action_tokenizer import ActionTokenizer


@pytest.fixture(scope="module")
def tok() -> ActionTokenizer:
    return ActionTokenizer(vocab_size=32000, n_bins=256, min_action=-1.0, max_action=1.0)


def openvla_reference_encode(actions: np.ndarray, vocab_size: int = 32000) -> np.ndarray:
    """OpenVLA's ActionTokenizer.__call__, written out independently."""
    bins = np.linspace(-1.0, 1.0, 256)
    clipped = np.clip(actions, a_min=-1.0, a_max=1.0)
    return vocab_size - np.digitize(clipped, bins)


@pytest.mark.parametrize("value,expected", [(-1.0, 31999), (0.0, 31872), (0.5, 31808), (1.0, 31744)])
def test_documented_examples(tok, value, expected):
    assert tok.encode(np.array([value]))[0] == expected
    assert tok.encode_torch(torch.tensor([value]))[0].item() == expected


def test_begin_idx_and_centers(tok):
    assert tok.action_token_begin_idx == 31743
    assert tok.bin_centers.shape == (255,)
    assert tok.decode(np.array([31744]))[0] == pytest.approx(0.996078431372549)
    assert tok.decode(np.array([31745]))[0] == tok.decode(np.array([31744]))[0]
    assert tok.decode(np.array([31999]))[0] == pytest.approx(-0.996078431372549)


def test_out_of_range_values_and_nan(tok):
    values = np.array([-5.0, -1.0000001, 1.0000001, 7.0, np.inf, -np.inf, np.nan])
    expected = openvla_reference_encode(values)
    np.testing.assert_array_equal(tok.encode(values), expected)
    assert tok.encode(np.array([np.nan]))[0] == 32000 - 256  # NaN encodes like +inf, no error
    np.testing.assert_array_equal(tok.encode_torch(torch.tensor(values)).numpy(), expected)


def test_out_of_range_ids_are_clipped(tok):
    ids = np.array([-1, 0, 31000, 31743, 31744, 31745, 31999, 32000, 40000])
    decoded = tok.decode(ids)
    assert decoded.dtype == np.float64
    centers = tok.bin_centers
    np.testing.assert_array_equal(decoded, centers[np.clip(32000 - ids - 1, 0, 254)])
    assert decoded[0] == pytest.approx(0.996078431372549)  # id -1: 32000 - (-1) - 1 clips to the last centre
    assert tok.decode(tok.encode(np.array([-1.0])))[0] == pytest.approx(-0.996078431372549)
    np.testing.assert_array_equal(tok.decode_torch(torch.tensor(ids)).numpy(), decoded)


def test_float32_bin_edges_match_float64_digitize(tok):
    """float32 inputs exactly on (the float32 rounding of) every edge, and their neighbours."""
    edges32 = tok.bins.astype(np.float32)
    probes = np.concatenate([edges32, np.nextafter(edges32, np.float32(2)), np.nextafter(edges32, np.float32(-2))])
    expected = openvla_reference_encode(probes)  # numpy compares in float64, as OpenVLA
    np.testing.assert_array_equal(tok.encode(probes), expected)
    np.testing.assert_array_equal(tok.encode_torch(torch.from_numpy(probes)).numpy(), expected)


def test_random_agreement_numpy_torch_and_shapes(tok):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.3, 1.3, size=(64, 7)).astype(np.float32)
    ids = tok.encode(actions)
    assert ids.shape == actions.shape and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, openvla_reference_encode(actions))
    np.testing.assert_array_equal(tok.encode_torch(torch.from_numpy(actions)).numpy(), ids)
    np.testing.assert_array_equal(tok.decode_torch(torch.from_numpy(ids)).numpy(), tok.decode(ids))


def test_round_trip_error_is_at_most_half_a_bin_and_reaches_it(tok):
    """Each value decodes to the centre of its bin, so the error peaks at half a bin width, on the edges."""
    half_bin = (2 / 255) / 2
    actions = np.concatenate([np.linspace(-1, 1, 10001), tok.bins])
    errors = np.abs(tok.decode(tok.encode(actions)) - actions)
    assert errors.max() <= half_bin + 1e-15
    edge_errors = np.abs(tok.decode(tok.encode(tok.bins)) - tok.bins)
    np.testing.assert_allclose(edge_errors, half_bin, rtol=0, atol=1e-15)  # attained at every edge, -1 and 1 included
    # Re-encoding a decoded centre gives the same id (centres are stable fixed points).
    ids = np.arange(31744, 32000)
    np.testing.assert_array_equal(tok.encode(tok.decode(ids))[1:], ids[1:])


def test_accuracy_mask(tok):
    labels = torch.tensor([-100, 2, 31743, 31744, 31999])
    assert tok.is_action_token(labels).tolist() == [False, False, False, True, True]


def test_invalid_construction():
    with pytest.raises(ValueError, match="n_bins"):
        ActionTokenizer(vocab_size=100, n_bins=256)
    with pytest.raises(ValueError, match="min_action"):
        ActionTokenizer(min_action=1.0, max_action=-1.0)
