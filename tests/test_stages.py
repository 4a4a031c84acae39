"""Freeze stages set exactly Prismatic's trainable parameter sets on the tiny VLA."""

from __future__ import annotations

import copy

import pytest
import torch

from vla.training.stages import STAGES, apply_stage, trainable_parameter_summary

LAST = 1  # tiny-llama has two decoder layers

# stage -> trainable? for (vision, projector, LLM "last layer" modules, rest of the LLM)
EXPECTED = {
    "align": (False, True, False, False),
    "finetune": (False, True, True, True),
    "vla-train": (False, True, True, True),
    "full-finetune": (True, True, True, True),
    "vla-full-train": (True, True, True, True),
    "vla-sandwich-train": (True, True, True, False),
    "vla-last-layer-train": (False, False, True, False),
}
LAST_LAYER_PREFIXES = (
    f"llm_backbone.llm.model.layers.{LAST}.", "llm_backbone.llm.model.embed_tokens.", "llm_backbone.llm.lm_head.",
)


def group_of(name: str) -> int:
    if name.startswith("vision_backbone."):
        return 0
    if name.startswith("projector."):
        return 1
    if name.startswith(LAST_LAYER_PREFIXES):
        return 2
    assert name.startswith("llm_backbone."), name
    return 3


@pytest.fixture(scope="module")
def vla(tiny_vla):
    """One copy for the flag-only tests: every stage sets every flag, so order does not matter."""
    return copy.deepcopy(tiny_vla)


@pytest.mark.parametrize("stage", sorted(EXPECTED))
@pytest.mark.parametrize("previous", ["vla-full-train", "align"])
def test_stage_freezes_exactly_the_right_parameters(vla, stage, previous):
    apply_stage(vla, previous)  # the stage must set every flag, whatever came before
    summary = apply_stage(vla, stage)
    never_used = {id(p) for p in vla.vision_backbone.unused_parameters()}  # ViT tail after the feature block
    assert never_used
    wrong = [name for name, p in vla.named_parameters()
             if p.requires_grad != (EXPECTED[stage][group_of(name)] and id(p) not in never_used)]
    assert not wrong, f"{stage}: wrong requires_grad for {wrong[:5]}"
    trainable = sum(p.numel() for p in vla.parameters() if p.requires_grad)
    assert summary["total"] == (trainable, sum(p.numel() for p in vla.parameters()))
    assert summary["projector"][0] == (summary["projector"][1] if EXPECTED[stage][1] else 0)


def test_last_layer_is_block_embeddings_and_head_but_not_final_norm(vla):
    apply_stage(vla, "vla-sandwich-train")
    llm = vla.llm_backbone.llm
    assert all(p.requires_grad for p in llm.model.layers[-1].parameters())
    assert llm.get_input_embeddings().weight.requires_grad and llm.get_output_embeddings().weight.requires_grad
    assert not llm.model.norm.weight.requires_grad
    assert not any(p.requires_grad for p in llm.model.layers[0].parameters())


def test_last_layer_step_updates_only_the_last_layer(tiny_vla):
    vla = copy.deepcopy(tiny_vla)
    apply_stage(vla, "vla-last-layer-train")
    before = {k: v.clone() for k, v in vla.state_dict().items()}
    sample = vla.processor.training_sample(torch.zeros(224, 224, 3, dtype=torch.uint8).numpy(), "pick up the cube",
                                           torch.linspace(-1, 1, 7).numpy())
    batch = vla.processor.collate([sample])
    loss = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
    loss.backward()
    torch.optim.SGD([p for p in vla.parameters() if p.requires_grad], lr=1.0).step()
    changed = {k for k, v in vla.state_dict().items() if not torch.equal(v, before[k])}
    assert torch.isfinite(loss)
    assert f"llm_backbone.llm.model.layers.{LAST}.mlp.down_proj.weight" in changed
    assert "llm_backbone.llm.lm_head.weight" in changed
    assert all(k.startswith(LAST_LAYER_PREFIXES) for k in changed), sorted(changed)


def test_unknown_stage_lists_allowed_stages(vla):
    with pytest.raises(ValueError, match="vla-sandwich-train"):
        apply_stage(vla, "train-everything")


@pytest.mark.parametrize("stage", ["lora", "qlora"])
def test_adapter_stages_need_adapters(vla, stage):
    with pytest.raises(ValueError, match="LoRA adapters"):
        apply_stage(vla, stage)


def test_all_stages_are_known():
    assert set(STAGES) == set(EXPECTED) | {"lora", "qlora"}


def test_summary_names_modules_and_counts(vla):
    counts = apply_stage(vla, "align")
    text = trainable_parameter_summary(vla)
    for name, (trainable, total) in counts.items():
        assert f"{trainable:,}" in text and f"{total:,}" in text and name in text
