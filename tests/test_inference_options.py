"""CPU inference options of the policy (``vision_dtype``) and the server's wait/model-time sums.

No timings here: bench/bench_predict.py and bench/bench_serve.py measure them.
"""

from __future__ import annotations

import asyncio
import copy
import time

import numpy as np
import pytest
import torch

from vla.policy import Policy
from vla.serve.batching import MicroBatcher

INSTRUCTION = "pick up the red screw"


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(count)]


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_default_policy_keeps_the_model_as_loaded_and_skips_only_the_unused_last_block(tiny_vla):
    model = copy.deepcopy(tiny_vla)
    policy = Policy(model)
    assert _dtypes(model) == {torch.float32}
    image = _images(1)[0]
    inputs = policy.processor.inference_batch([image], [INSTRUCTION])
    pixels = model.vision_backbone.image_transform.normalize(inputs["pixel_values"])
    with torch.inference_mode():
        expected = torch.cat([vit.get_intermediate_layers(view, n={len(vit.blocks) - 2})[0]  # Prismatic's call
                              for vit, view in zip(model.vision_backbone.featurizers, torch.split(pixels, 3, dim=1))],
                             dim=2)
        assert torch.equal(model.vision_backbone(inputs["pixel_values"]), expected)
    assert _dtypes(model) == {torch.float32}  # acting casts nothing


def test_bf16_vision_towers_run_and_answer_valid_actions(tiny_vla):
    model = copy.deepcopy(tiny_vla)
    policy = Policy(model, vision_dtype="bfloat16")
    assert _dtypes(model.vision_backbone) == {torch.bfloat16}
    assert _dtypes(model.projector) == _dtypes(model.llm_backbone) == {torch.float32}
    stats = model.norm_stats["sim"]["action"]
    actions = policy.predict_batch(_images(3), [INSTRUCTION] * 3)
    assert actions.shape == (3, 7) and np.isfinite(actions).all()
    low, high = np.array(stats["q01"]), np.array(stats["q99"])
    mask = np.array(stats["mask"])
    assert (actions[:, mask] >= low[mask] - 1e-9).all() and (actions[:, mask] <= high[mask] + 1e-9).all()
    assert ((actions[:, ~mask] >= -1) & (actions[:, ~mask] <= 1)).all()  # the gripper stays normalized


def test_bf16_vision_towers_with_film_take_the_float32_instruction_embedding():
    from vla.models import build_vla

    stats = {"sim": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    torch.manual_seed(0)
    model = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats, film=True).eval()
    action = Policy(model, vision_dtype="bfloat16").act(_images(1)[0], INSTRUCTION)
    assert action.shape == (7,) and np.isfinite(action).all()


def test_unknown_vision_dtype_is_named(tiny_vla):
    with pytest.raises(ValueError, match="vision_dtype"):
        Policy(copy.deepcopy(tiny_vla), vision_dtype="int3")


def test_batcher_sums_queue_waits_gathering_and_model_time():
    def predict_batch(images, instructions, unnorm_key):
        time.sleep(0.05)
        return np.zeros((len(images), 7))

    async def serve() -> dict:
        batcher = MicroBatcher(predict_batch, max_batch_size=4, max_wait_ms=20)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(np.zeros((8, 8, 3), np.uint8), INSTRUCTION, None)
                                   for _ in range(8)))
        finally:
            await batcher.stop()
        return batcher.stats()

    stats = asyncio.run(serve())
    assert stats["requests_served"] == 8
    assert stats["predict_s"] >= 0.05 * stats["batches_run"]
    # the requests of the second batch waited out the whole first model call in the queue
    assert stats["queue_wait_s"] >= 0.05 * (8 - stats["largest_batch"])
    assert 0 < stats["gather_s"] <= stats["queue_wait_s"]


def test_serve_config_passes_vision_dtype_to_the_loaded_policy(tmp_path, tiny_vla):
    from hydra.utils import instantiate

    from tests.conftest import compose_cli
    from vla.models import save_vla

    save_vla(tiny_vla, tmp_path / "export")
    assert compose_cli("serve", f"checkpoint={tmp_path / 'export'}").policy.vision_dtype is None
    assert compose_cli("eval", f"checkpoint={tmp_path / 'export'}").vision_dtype is None
    policy = instantiate(compose_cli("serve", f"checkpoint={tmp_path / 'export'}", "vision_dtype=bfloat16").policy)
    assert _dtypes(policy.model.vision_backbone) == {torch.bfloat16}
    assert _dtypes(policy.model.llm_backbone) == {torch.float32}
