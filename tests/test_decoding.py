"""Static-cache decoding (vla.models.decoding): the same action tokens as the model's own decoding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vla.models.decoding import StaticCacheDecoder
from vla.policy import Policy

INSTRUCTIONS = ["pick up the red block", "push the blue block to the left", "open the drawer"]


@pytest.fixture(scope="module")
def varied_vla(tiny_vla):
    """The tiny VLA with large random decoder weights, so greedy tokens depend on the image and prompt
    (at the default init each step's hidden state is little more than its input token's embedding)."""
    vla = copy.deepcopy(tiny_vla).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in vla.llm_backbone.llm.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.5)
    return vla


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(count)]


def test_static_cache_decoding_gives_the_models_tokens(varied_vla):
    decoder = StaticCacheDecoder(varied_vla, compile_mode=None)
    processor = varied_vla.processor
    seen = set()
    for image, text in zip(_images(3), INSTRUCTIONS):
        inputs = processor.inference_batch([image], [text])
        expected = varied_vla.generate_action_tokens(**inputs, action_dim=7)
        assert torch.equal(decoder.generate(**inputs, action_dim=7), expected)
        seen.add(tuple(expected[0].tolist()))
    assert len(seen) == 3  # the check has teeth: the prompts decode differently
    # equal-length prompts batch on the static path; different lengths fall back to the model's decoding
    for texts in (["pick up the red block"] * 2, INSTRUCTIONS[:2]):
        inputs = processor.inference_batch(_images(2), texts)
        assert torch.equal(decoder.generate(**inputs, action_dim=7),
                           varied_vla.generate_action_tokens(**inputs, action_dim=7))
    assert set(decoder.caches) == {(1, 320), (2, 320)}  # one cache per batch size and length bucket, reused


def test_policy_with_compiled_decoding_acts_like_the_plain_policy(varied_vla):
    plain, compiled = Policy(varied_vla), Policy(varied_vla, compile_decoding=True)
    for image, text in zip(_images(2), INSTRUCTIONS):
        np.testing.assert_array_equal(compiled.act(image, text), plain.act(image, text))


def test_compiled_decoding_is_for_token_models_only():
    from vla.models import build_vla

    stats = {"sim": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    chunk_model = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats, action_head="l1", chunk_size=2)
    with pytest.raises(ValueError, match="chunk head decodes in one pass"):
        Policy(chunk_model, compile_decoding=True)
    with pytest.raises(ValueError, match="decodes action tokens"):
        StaticCacheDecoder(chunk_model)
