"""Loading for serving: quantized (bitsandbytes) checkpoints and the Hydra config behind serve.py."""

from __future__ import annotations

import bitsandbytes as bnb
import numpy as np
import pytest
import requests
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_serve import REPO_ROOT_CONF, STATS, export_tiny_vla, random_images

from vla.client import PolicyClient
from vla.policy import load_policy
from vla.serve.server import BackgroundServer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_export_quant")
    export_tiny_vla(out)
    return out


# Quantized vs float actions. Greedy decoding picks one of 256 bins per action dimension, and on this
# tiny random model a quantization error either leaves a token as it is or flips it to a near-tied bin
# anywhere in the range (the next dimensions may follow), so gaps are 0 or ~100+ bins and an element-wise
# tolerance would have to be the whole range. We bound the share of dimensions on the float model's
# token and the mean gap in bins instead. Measured on the 16 inputs below (CPU, bitsandbytes 0.50):
# 8bit 89% same token, mean gap 10.9 bins; 4bit 92%, 5.9 bins. Over 32-input sets (seeds 0-5): 8bit
# 83-100% / 0.4-19 bins, 4bit 66-87% / 10-38 bins. Unrelated actions (the float action of the
# neighbouring input) score 25%, 91 bins here, so the bound still fails a quantization that garbles the model.
MIN_SAME_TOKEN, MAX_MEAN_GAP_BINS = 0.6, 45.0
ACTION = STATS["sim"]["action"]
BIN_WIDTH = np.where(ACTION["mask"], (np.array(ACTION["q99"]) - ACTION["q01"]) / 255, 2 / 255)  # un-normalized
INSTRUCTIONS = ["pick up the screw", "open the drawer", "put the red block in the bowl", "push the blue cube left"] * 4


@pytest.fixture(scope="module")
def float_actions(checkpoint) -> np.ndarray:
    return load_policy(checkpoint).predict_batch(random_images(len(INSTRUCTIONS), seed=5), INSTRUCTIONS)


@pytest.mark.parametrize("mode,layer_type", [("4bit", bnb.nn.Linear4bit), ("8bit", bnb.nn.Linear8bitLt)])
def test_quantized_checkpoint_serves_its_own_actions_close_to_float(checkpoint, float_actions, mode, layer_type):
    policy = load_policy(checkpoint, quantize=mode)
    quantized = [m for m in policy.model.llm_backbone.llm.model.layers.modules() if isinstance(m, layer_type)]
    assert len(quantized) == 2 * 7  # tiny-llama: 2 blocks x (q, k, v, o, gate, up, down)
    images = random_images(2)
    with BackgroundServer(instantiate_app(policy)) as server:
        served = [PolicyClient(server.url).act(image, "pick up the screw") for image in images]
    for image, action in zip(images, served):
        np.testing.assert_array_equal(action, policy.act(image, "pick up the screw"))

    actions = policy.predict_batch(random_images(len(INSTRUCTIONS), seed=5), INSTRUCTIONS)
    gap_bins = np.abs(actions - float_actions) / BIN_WIDTH
    same_token, mean_gap = float((gap_bins < 0.5).mean()), float(gap_bins.mean())
    assert same_token >= MIN_SAME_TOKEN and mean_gap <= MAX_MEAN_GAP_BINS, (same_token, mean_gap)


def test_unknown_quantize_mode_is_refused(checkpoint):
    with pytest.raises(ValueError, match="quantize"):
        load_policy(checkpoint, quantize="3bit")
    with pytest.raises(ValueError, match="dtype"):
        load_policy(checkpoint, dtype="float8")


def instantiate_app(policy, **overrides):
    with initialize_config_dir(config_dir=str(REPO_ROOT_CONF), version_base="1.3"):
        cfg = compose("serve", overrides=["checkpoint=unused"] + [f"{k}={v}" for k, v in overrides.items()])
    return instantiate(cfg.app, policy=policy)


def test_serve_config_builds_policy_and_app(checkpoint):
    with initialize_config_dir(config_dir=str(REPO_ROOT_CONF), version_base="1.3"):
        cfg = compose("serve", overrides=[f"checkpoint={checkpoint}", "max_batch_size=2", "api_key=k"])
    assert cfg.host == "127.0.0.1" and cfg.quantize is None
    policy = instantiate(cfg.policy)
    with BackgroundServer(instantiate(cfg.app, policy=policy)) as server:
        assert requests.get(f"{server.url}/info", timeout=10).status_code == 401
        info = PolicyClient(server.url, api_key="k").info()
    assert info["batching"]["max_batch_size"] == 2
