"""LoRA / QLoRA on the tiny VLA: what trains, that a CPU step works, and that merging is exact."""

from __future__ import annotations

import copy

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from peft.tuners.lora import LoraLayer

from vla.models import load_vla, save_vla
from vla.models.lora import adapter_parameter_names, merge_lora
from vla.training.peft import apply_lora, apply_qlora
from vla.training.stages import apply_stage

LLM_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def batch(tiny_vla):
    rng = np.random.default_rng(0)
    samples = [
        tiny_vla.processor.training_sample(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), text, rng.uniform(-1, 1, 7))
        for text in ("pick up the red cube", "open the drawer")
    ]
    return tiny_vla.processor.collate(samples)


def forward(vla, batch):
    return vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])


def train_step(vla, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], set[str]]:
    """One SGD step; returns the loss, the state before and the names of changed tensors."""
    before = {k: v.clone() for k, v in vla.state_dict().items()}
    vla.train()
    loss = forward(vla, batch).loss
    loss.backward()
    torch.optim.SGD([p for p in vla.parameters() if p.requires_grad], lr=1.0).step()
    changed = {k for k, v in vla.state_dict().items() if not torch.equal(v, before[k])}
    return loss, before, changed


def assert_only_adapters_and_projector_changed(before: dict[str, torch.Tensor], changed: set[str]) -> None:
    """Every adapter's B (zero-initialised: the first step moves only B) and the projector changed; the base did not."""
    adapters_b = {k for k in before if ".lora_B." in k}
    projector = {k for k in before if k.startswith("projector.")}
    base = {k for k in before if ".lora_" not in k} - projector
    assert adapters_b and projector and base
    assert adapters_b | projector <= changed, sorted((adapters_b | projector) - changed)[:5]
    assert not changed & base, sorted(changed & base)[:5]  # bit-identical base weights (4-bit ones included)


def randomize_adapters(vla) -> None:
    """peft's gaussian init zeroes lora_B (a no-op adapter); make the adapters do something."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in vla.named_parameters():
            if ".lora_B." in name:
                param.normal_(0.0, 0.05)


@torch.no_grad()
def logits(vla, batch) -> torch.Tensor:
    return forward(vla.eval(), batch).logits


def test_lora_trains_llm_adapters_and_projector_only(tiny_vla):
    vla = apply_lora(copy.deepcopy(tiny_vla))
    trainable = {n for n, p in vla.named_parameters() if p.requires_grad}
    adapters = adapter_parameter_names(vla)
    assert trainable == adapters | {n for n, _ in vla.named_parameters() if n.startswith("projector.")}
    adapted = {n for n, m in vla.named_modules() if isinstance(m, LoraLayer)}
    assert {n.rsplit(".", 1)[-1] for n in adapted} == LLM_LINEARS  # "all-linear": every block linear...
    assert len(adapted) == len(LLM_LINEARS) * len(vla.llm_backbone.llm.model.layers)
    assert not any(n.startswith(("vision_backbone.", "projector.")) or "lm_head" in n for n in adapters)  # ...not the head
    layer = vla.llm_backbone.llm.model.layers[0].self_attn.q_proj
    assert layer.r["default"] == 32 and layer.lora_alpha["default"] == 16  # OpenVLA: alpha = min(r, 16)


def test_lora_step_changes_adapters_and_projector_not_base(tiny_vla, batch):
    vla = apply_lora(copy.deepcopy(tiny_vla), r=4)
    loss, before, changed = train_step(vla, batch)
    assert torch.isfinite(loss)
    assert_only_adapters_and_projector_changed(before, changed)


def test_openvla_scope_adapts_vision_and_projector_with_frozen_bases(tiny_vla):
    vla = apply_lora(copy.deepcopy(tiny_vla), r=4, adapt_vision_and_projector=True)
    trainable = {n for n, p in vla.named_parameters() if p.requires_grad}
    never_used = {id(p) for p in vla.vision_backbone.unused_parameters()}  # adapters in the ViT's unused tail
    assert trainable == {n for n, p in vla.named_parameters() if n in adapter_parameter_names(vla) and id(p) not in never_used}
    assert any(n.startswith("vision_backbone.") for n in trainable) and any(n.startswith("projector.") for n in trainable)
    assert not any("lm_head" in n for n in trainable)


def test_oft_modules_train_in_full_without_adapters():
    """OFT wraps the VLA with LoRA before adding FiLM, the action head and the proprio projector, and trains
    those in full: no adapter lands on them, even with every vision linear adapted."""
    from vla.models import build_vla

    stats = {"sim": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}, "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}}}
    torch.manual_seed(0)
    chunk_vla = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats, action_head="l1", chunk_size=2,
                          use_proprio=True, film=True)
    plain_keys = chunk_vla.state_dict().keys()
    vla = apply_lora(chunk_vla, r=4, adapt_vision_and_projector=True)
    adapted = {n for n, m in vla.named_modules() if isinstance(m, LoraLayer)}
    assert "vision_backbone.featurizer.blocks.0.block.attn.qkv" in adapted  # the FiLMed ViT's own linears adapt
    assert not {n for n in adapted if n.startswith(("action_head.", "proprio_projector.")) or n.endswith((".scale", ".shift"))}
    never_used = {id(p) for p in vla.vision_backbone.unused_parameters()}
    for module in vla.chunk_modules():
        assert not isinstance(module, LoraLayer) and not any(".lora_" in n for n, _ in module.named_parameters())
        assert all(p.requires_grad or id(p) in never_used for p in module.parameters())
    assert merge_lora(vla).state_dict().keys() == plain_keys


def test_target_modules_by_name_and_errors(tiny_vla):
    vla = apply_lora(copy.deepcopy(tiny_vla), r=4, target_modules=("q_proj", "v_proj"))
    adapted = {n.rsplit(".", 1)[-1] for n, m in vla.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(vla)
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(copy.deepcopy(tiny_vla), target_modules=("qkv_proj",))
    with pytest.raises(ValueError, match="rank"):
        apply_lora(copy.deepcopy(tiny_vla), r=0)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(copy.deepcopy(tiny_vla))
    with pytest.raises(ValueError, match="compute_dtype"):
        apply_qlora(copy.deepcopy(tiny_vla), compute_dtype="int8")


def test_merge_matches_adapted_model_and_round_trips(tiny_vla, batch, tmp_path):
    vla = apply_lora(copy.deepcopy(tiny_vla), r=8)
    randomize_adapters(vla)
    adapted = logits(vla, batch)
    assert not torch.allclose(adapted, logits(tiny_vla, batch), atol=1e-3)  # the adapters matter
    merged = merge_lora(vla)
    assert list(merged.state_dict()) == list(tiny_vla.state_dict())
    torch.testing.assert_close(logits(merged, batch), adapted, atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for p in merged.parameters())
    apply_stage(merged, "vla-train")  # the merged model is a plain model again
    loaded = load_vla(save_vla(merged, tmp_path / "merged"))
    torch.testing.assert_close(logits(loaded, batch), logits(merged, batch), atol=0, rtol=0)


def test_qlora_step_on_cpu_keeps_quantized_base(tiny_vla, batch):
    vla = apply_qlora(copy.deepcopy(tiny_vla), r=4)
    base_layers = [m.get_base_layer() for m in vla.modules() if isinstance(m, LoraLayer)]
    assert len(base_layers) == len(LLM_LINEARS) * 2 and all(isinstance(b, bnb.nn.Linear4bit) for b in base_layers)
    assert type(vla.llm_backbone.llm.lm_head) is torch.nn.Linear  # the head stays float, as load_in_4bit does
    loss, before, changed = train_step(vla, batch)
    assert torch.isfinite(loss)
    assert_only_adapters_and_projector_changed(before, changed)


def test_qlora_merge_dequantizes_to_plain_float_model(tiny_vla, batch, tmp_path):
    vla = apply_qlora(copy.deepcopy(tiny_vla), r=4)
    randomize_adapters(vla)
    adapted = logits(vla, batch)
    merged = merge_lora(vla)
    assert list(merged.state_dict()) == list(tiny_vla.state_dict())
    assert {n: p.dtype for n, p in merged.named_parameters() if p.dtype != torch.float32} == {}
    torch.testing.assert_close(logits(merged, batch), adapted, atol=1e-4, rtol=1e-4)
    loaded = load_vla(save_vla(merged, tmp_path / "merged"))
    torch.testing.assert_close(logits(loaded, batch), logits(merged, batch), atol=0, rtol=0)
