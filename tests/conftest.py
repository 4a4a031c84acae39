"""Shared test fixtures. Tests never touch the network: hub lookups fail fast offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Triton (loaded by torch._dynamo through torchvision.ops) segfaults when its native library loads
# after TensorFlow's in the same process; test modules that import TensorFlow at collection time
# (the RLDS readers) would otherwise make the order of test files decide whether pytest crashes.
import torchvision.ops  # noqa: E402, F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BRIDGE = REPO_ROOT.parent / "shared" / "data" / "rlds" / "octo_bridge_debug"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Per-sample tensor ops are tiny; on a shared 2-core machine intra-op threads only contend.

    Data-loader test modules use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def bridge_rlds_dir() -> Path:
    """The shared real Bridge RLDS sample (third-party data: read in place, never copied)."""
    if not (SHARED_BRIDGE / "bridge_dataset" / "1.0.0").is_dir():
        pytest.skip("shared Bridge RLDS sample not present")
    return SHARED_BRIDGE


@pytest.fixture(scope="session")
def tiny_vla():
    """A tiny random DinoSigLIP + Llama VLA with one dataset's statistics (built once per session)."""
    from vla.models import build_vla

    stats = {
        "sim": {
            "action": {
                "q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0], "min": [-0.1] * 6 + [0.0],
                "max": [0.1] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.02] * 6 + [0.5], "mask": [True] * 6 + [False],
            }
        }
    }
    import torch

    torch.manual_seed(0)
    return build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats).eval()


@pytest.fixture(scope="session")
def sim_data_root(tmp_path_factory) -> Path:
    """A small built-in sim dataset (RLDS -> prepared shards), made once per session.

    Returns the data root holding ``vla_sim/`` (the layout ``VLADataModule`` reads).
    """
    from data_prep import prepare
    from data_prep.sim_rlds import generate_rlds

    base = tmp_path_factory.mktemp("sim_data")
    rlds = generate_rlds(base / "rlds", episodes=12, seed=0, image_size=224, progress=False)
    prepare(dataset="vla_sim", source=rlds, out=base / "prepared" / "vla_sim")
    return base / "prepared"


def compose_cli(config_name: str, *overrides: str):
    """The config an entry point (``vla-<name>``) composes from these command-line overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
