"""Loading for serving: quantized (bitsandbytes) checkpoints and the Hydra config behind serve.py."""

from __future__ import annotations

import bitsandbytes as bnb
import numpy as np
import pytest
import requests
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_serve import REPO_ROOT_CONF, export_tiny_vla, random_images

from vla.client import PolicyClient
from vla.policy import load_policy
from vla.serve.server import BackgroundServer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_export_quant")
    export_tiny_vla(out)
    return out


@pytest.mark.parametrize("mode,layer_type", [("4bit", bnb.nn.Linear4bit), ("8bit", bnb.nn.Linear8bitLt)])
def test_quantized_checkpoint_serves_finite_actions(checkpoint, mode, layer_type):
    policy = load_policy(checkpoint, quantize=mode)
    quantized = [m for m in policy.model.llm_backbone.llm.model.layers.modules() if isinstance(m, layer_type)]
    assert len(quantized) == 2 * 7  # tiny-llama: 2 blocks x (q, k, v, o, gate, up, down)
    with BackgroundServer(instantiate_app(policy)) as server:
        actions = [PolicyClient(server.url).act(image, "pick up the screw") for image in random_images(2)]
    assert all(a.shape == (7,) and np.isfinite(a).all() for a in actions)


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
