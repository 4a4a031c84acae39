"""Composed training recipes: experiment=libero-lora is OpenVLA's finetune.py setting."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer
from torch import nn

from tests.conftest import compose_cli
from vla.training.peft import apply_lora


def test_plain_lora_stage_adapts_the_llm_only_and_keeps_clipping():
    cfg = compose_cli("train", "stage=lora")
    assert cfg.stage.lora.adapt_vision_and_projector is False
    assert cfg.module.lora.adapt_vision_and_projector is False
    assert cfg.trainer.gradient_clip_val == 1.0


def test_libero_lora_is_openvla_finetune_py():
    cfg = compose_cli("train", "experiment=libero-lora", "model=tiny")
    assert cfg.model.llm_backbone == "tiny-llama"  # the command line still picks the model
    assert cfg.stage.name == "lora"
    lora = OmegaConf.to_container(cfg.module.lora, resolve=True)
    assert lora == {"r": 32, "alpha": None, "dropout": 0.0, "target_modules": "all-linear",
                    "adapt_vision_and_projector": True}
    assert cfg.trainer.gradient_clip_val is None
    assert cfg.trainer.accumulate_grad_batches == 1
    assert cfg.data.datamodule.batch_size == 16 and cfg.data.datamodule.image_aug is True
    assert cfg.module.learning_rate == 5e-4 and cfg.module.lr_schedule == "constant"
    assert cfg.module.warmup_ratio == 0.0 and cfg.module.weight_decay == 0.01  # torch AdamW's default
    assert cfg.strategy.name == "ddp" and cfg.trainer.precision == "bf16-mixed"
    # the 7B recipe underneath does not bring back accumulation or clipping
    full = compose_cli("train", "experiment=libero-lora")
    assert full.model.llm_backbone == "llama2-7b"
    assert full.trainer.accumulate_grad_batches == 1 and full.trainer.gradient_clip_val is None
    assert full.module.learning_rate == 5e-4 and full.strategy.name == "ddp"


def test_libero_lora_stage_adapts_vision_projector_and_llm():
    cfg = compose_cli("train", "experiment=libero-lora", "model=tiny")
    torch.manual_seed(0)
    vla = instantiate(cfg.model)
    linears = {name for name, m in vla.named_modules() if type(m) is nn.Linear}
    apply_lora(vla, **OmegaConf.to_container(cfg.module.lora, resolve=True))
    adapted = {name for name, m in vla.named_modules() if isinstance(m, LoraLayer)}
    for scope in ("vision_backbone.", "projector.", "llm_backbone."):
        assert any(name.startswith(scope) for name in adapted), scope
    # every linear layer except the LLM's output head (peft's all-linear rule), as finetune.py
    head = {name for name in linears if name.endswith("lm_head")}
    assert head and adapted == linears - head
    trainable = {name for name, p in vla.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)  # projector base frozen too
