"""Memory and scale levers: activation checkpointing, checkpoint retention / trainable-only step checkpoints,
and the attention kernel choice (``attn_implementation: auto``)."""

from __future__ import annotations

import copy
import socket

import numpy as np
import pytest
import torch

from tests.test_training import LossRecorder, compose_train
from vla.training.module import VLATrainingModule
from vla.training.run import train


def _batch(vla, n: int = 2) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    size = vla.vision_backbone.image_size
    samples = [vla.processor.training_sample(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "pick up the block",
                                             rng.uniform(-1, 1, 7)) for _ in range(n)]
    return vla.processor.collate(samples)


class _ForwardCounter:
    """Counts the forward calls of some modules (a checkpointed block runs twice per step: forward + recompute).

    Pre-hooks of a block's first submodule: a non-reentrant recompute stops early, once it has what the backward
    needs, and HF checkpoints a layer's ``forward`` (its own hooks stay outside the checkpoint)."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.counts = dict.fromkeys(modules, 0)
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, name=name: self.counts.__setitem__(name, self.counts[name] + 1))


def _one_step(tiny_vla, stage: str, checkpointing: bool):
    torch.manual_seed(0)  # the same LoRA initialisation with and without checkpointing
    module = VLATrainingModule(copy.deepcopy(tiny_vla), stage=stage, lora={"r": 4} if stage == "lora" else None,
                               activation_checkpointing=checkpointing)
    vla = module.vla
    counter = _ForwardCounter({"llm": vla.llm_backbone.layers[0].self_attn, "vit": vla.vision_backbone.featurizer.blocks[0].attn})
    batch = _batch(vla)
    loss = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in vla.named_parameters() if p.requires_grad}
    return loss.detach(), grads, counter.counts


@pytest.mark.parametrize("stage", ["vla-full-train", "lora"])
def test_activation_checkpointing_gives_the_same_step_and_recomputes_blocks(tiny_vla, stage):
    loss, grads, counts = _one_step(tiny_vla, stage, checkpointing=False)
    loss_ckpt, grads_ckpt, counts_ckpt = _one_step(tiny_vla, stage, checkpointing=True)
    assert torch.allclose(loss, loss_ckpt, rtol=1e-6, atol=1e-7)
    assert grads.keys() == grads_ckpt.keys() and any(g.abs().sum() > 0 for g in grads.values())
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], rtol=1e-5, atol=1e-7), name
    assert counts == {"llm": 1, "vit": 1}
    # LLM layers recompute in the backward pass; a ViT block recomputes only where the ViT trains (LoRA freezes it).
    assert counts_ckpt == {"llm": 2, "vit": 2 if stage == "vla-full-train" else 1}
    if stage == "lora":  # frozen embeddings pass gradients into the checkpointed (adapted) layers
        assert any(".lora_B." in name and g.abs().sum() > 0 for name, g in grads_ckpt.items())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_activation_checkpointing_composes_with_fsdp2(tiny_vla):
    """configure_model's fully_shard over checkpointed blocks (world size 1, gloo): the same loss and gradients."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.utils._pytree import tree_leaves

    loss, grads, _ = _one_step(tiny_vla, "vla-full-train", checkpointing=False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        module = VLATrainingModule(copy.deepcopy(tiny_vla), stage="vla-full-train", activation_checkpointing=True)
        module._device_mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
        module.configure_model()
        counter = _ForwardCounter({"llm": module.vla.llm_backbone.layers[0].self_attn})
        batch = _batch(module.vla)
        out = module.vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        # Backward starts at the root's output head: its weight must still be unsharded (a resharded one has
        # no storage on CUDA), and the output's tensors must be visible to FSDP2's backward hooks.
        assert not isinstance(module.vla.llm_backbone.llm.get_output_embeddings().weight, DTensor)
        assert any(leaf is out.loss for leaf in tree_leaves(out))
        out.loss.backward()
        sharded = {name: p.grad.full_tensor() for name, p in module.vla.named_parameters() if p.requires_grad}
    finally:
        dist.destroy_process_group()
    assert counter.counts == {"llm": 2}
    assert torch.allclose(loss, out.loss.detach(), rtol=1e-6, atol=1e-7)
    assert sharded.keys() == grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], sharded[name], rtol=1e-5, atol=1e-6), name


def _names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_keep_last_checkpoints_and_resume_auto(tmp_path, sim_data_root):
    common = ("checkpoint_every_n_steps=2", "checkpoint_keep_last=2", "trainer.val_check_interval=100",
              "trainer.limit_val_batches=0", "export=false")
    train(compose_train(tmp_path, sim_data_root, "trainer.max_steps=6", *common))
    checkpoints = tmp_path / "checkpoints"
    assert _names(checkpoints) == ["last.ckpt", "step0000004.ckpt", "step0000006.ckpt"]
    resumed = LossRecorder()
    train(compose_train(tmp_path, sim_data_root, "trainer.max_steps=8", "resume=auto", *common), callbacks=[resumed])
    assert sorted(resumed.losses) == [7, 8]  # continued from step 6 (last.ckpt)
    assert _names(checkpoints) == ["last.ckpt", "step0000006.ckpt", "step0000008.ckpt"]


def test_lora_trainable_only_step_checkpoints_resume_and_refuse_export(tmp_path, sim_data_root):
    from vla.models import load_checkpoint

    common = ("stage=lora", "stage.lora.r=4", "checkpoint_every_n_steps=2", "trainer.val_check_interval=100",
              "trainer.limit_val_batches=0", "trainer.max_steps=4")
    straight = LossRecorder()
    train(compose_train(tmp_path / "a", sim_data_root, "checkpoint_trainable_only=true", *common), callbacks=[straight])
    checkpoints = tmp_path / "a" / "checkpoints"
    assert _names(checkpoints) == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"]
    step, last = checkpoints / "step0000002.ckpt", checkpoints / "last.ckpt"
    assert step.stat().st_size < 0.25 * last.stat().st_size, (step.stat().st_size, last.stat().st_size)
    # last.ckpt is full: it loads and exports (the end-of-run export came from it); a step file is refused.
    assert (tmp_path / "a" / "export" / "model.safetensors").exists()
    load_checkpoint(last)
    with pytest.raises(ValueError, match="trainable-only step checkpoint.*last.ckpt"):
        load_checkpoint(step)
    from tests.conftest import compose_cli
    from vla.cli import export as export_cli

    with pytest.raises(Exception, match="trainable-only"):  # Hydra's instantiate wraps the ValueError
        export_cli(compose_cli("export", f"ckpt={step}", f"out={tmp_path / 'out'}"))

    # Resuming from it rebuilds the frozen base from the model config and continues exactly.
    resumed = LossRecorder()
    train(compose_train(tmp_path / "b", sim_data_root, f"resume={step}", *common), callbacks=[resumed])
    assert sorted(resumed.losses) == [3, 4]
    for s in (3, 4):
        assert resumed.losses[s] == pytest.approx(straight.losses[s], rel=1e-5, abs=1e-6), (resumed.losses, straight.losses)
    # Another base (a different seed builds other random weights) is refused, not silently mixed in.
    with pytest.raises(ValueError, match="frozen weights this run built"):
        train(compose_train(tmp_path / "c", sim_data_root, f"resume={step}", "seed=8", *common))


def test_attn_implementation_auto_resolves_to_sdpa_without_flash_attn_and_is_saved_as_requested():
    from vla.models import build_vla
    from vla.models.config import VLAConfig
    from vla.models.llm import flash_attention_2_available, resolve_attn_implementation

    assert not flash_attention_2_available()  # flash_attn is not installed here (and there is no CUDA)
    assert resolve_attn_implementation("auto") == "sdpa" and resolve_attn_implementation("eager") == "eager"
    vla = build_vla("tiny-dinosiglip-224px", "tiny-llama", attn_implementation="auto")
    assert vla.llm_backbone.llm.config._attn_implementation == "sdpa"
    assert vla.config.to_dict()["attn_implementation"] == "auto"  # the request travels, not this machine's kernel
    assert VLAConfig.from_dict(vla.config.to_dict()).attn_implementation == "auto"
    with pytest.raises(ImportError, match="flash_attn package"):
        build_vla("tiny-dinosiglip-224px", "tiny-llama", attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation"):
        VLAConfig("tiny-dinosiglip-224px", "tiny-llama", attn_implementation="flash")
