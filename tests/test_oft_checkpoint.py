"""OpenVLA-OFT checkpoint import: tiny checkpoint directories written the way OFT's finetune.py saves them
(docs/oft.md), with OFT's key names spelled out here independently of the module's name maps."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vla.models import build_vla, load_checkpoint
from vla.models.oft_format import from_oft_name, load_oft, merge_film_lora
from vla.policy import Policy

STEP = 150000
SUITE = "libero_spatial_no_noops"
LORA_RANK = 32  # OFT's LIBERO rank; lora_alpha = min(32, 16) = 16, scaling 0.5


def _stats(dims: int) -> dict[str, list]:
    return {"mean": [0.0] * dims, "std": [1.0] * dims, "max": [1.0] * dims, "min": [-1.0] * dims,
            "q01": [-0.9] * dims, "q99": [0.9] * dims}


LIBERO_STATS = {SUITE: {"action": {**_stats(7), "mask": [True] * 6 + [False]}, "proprio": _stats(8),
                        "num_transitions": 100, "num_trajectories": 2}}
BASE_STATS = {"bridge_orig": {"action": {**_stats(7), "mask": [True] * 6 + [False]}}}  # the base model's config.json


def _oft_action_head_keys(hidden: int, action_dim: int) -> dict[str, tuple[int, ...]]:
    """OFT's L1RegressionActionHead state dict as saved from DDP (prismatic/models/action_heads.py)."""
    keys = {"module.model.layer_norm1.weight": (hidden * action_dim,),
            "module.model.layer_norm1.bias": (hidden * action_dim,),
            "module.model.fc1.weight": (hidden, hidden * action_dim), "module.model.fc1.bias": (hidden,),
            "module.model.layer_norm2.weight": (hidden,), "module.model.layer_norm2.bias": (hidden,),
            "module.model.fc2.weight": (action_dim, hidden), "module.model.fc2.bias": (action_dim,)}
    for block in range(2):
        ffn = f"module.model.mlp_resnet_blocks.{block}.ffn"
        keys.update({f"{ffn}.0.weight": (hidden,), f"{ffn}.0.bias": (hidden,),  # LayerNorm
                     f"{ffn}.1.weight": (hidden, hidden), f"{ffn}.1.bias": (hidden,)})  # Linear
    return keys


def _oft_proprio_keys(hidden: int, proprio_dim: int) -> dict[str, tuple[int, ...]]:
    """OFT's ProprioProjector state dict as saved from DDP (prismatic/models/projectors.py)."""
    return {"module.fc1.weight": (hidden, proprio_dim), "module.fc1.bias": (hidden,),
            "module.fc2.weight": (hidden, hidden), "module.fc2.bias": (hidden,)}


def _hf_name(name: str) -> str:
    """OpenVLA's HF name of one of our backbone/projector/LLM parameters (no FiLM)."""
    name = name.replace("llm_backbone.llm.", "language_model.", 1)
    if name.startswith("vision_backbone.") and name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".scale_factor"
    return name


def _component(vla, prefix: str, oft_keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Our ``prefix`` module's tensors under OFT's DDP names; the names and shapes must be OFT's."""
    ours = {k.removeprefix(prefix): v for k, v in vla.state_dict().items() if k.startswith(prefix)}
    state = {f"module.{k}": v.clone() for k, v in ours.items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == oft_keys
    return state


def _film_file_and_base(vla, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """OFT's ``vision_backbone--*.pt`` for ``vla`` (FiLM blocks, every vision linear LoRA-wrapped by PEFT,
    LoRA unmerged) and the base vision weights a merged HF checkpoint holds instead.

    ``vla``'s vision linears are set to ``base + (B @ A) * alpha / r`` (PEFT's merge) so that the file
    describes ``vla`` exactly.
    """
    film: dict[str, torch.Tensor] = {}
    base_weights: dict[str, torch.Tensor] = {}
    vision = vla.vision_backbone
    linears = {name: m for name, m in vision.named_modules()
               if isinstance(m, nn.Linear) and not re.search(r"\.(scale|shift)$", name)}
    with torch.no_grad():
        for name, linear in linears.items():
            base = torch.randn(linear.weight.shape, generator=generator) * 0.05
            a = torch.randn(LORA_RANK, linear.in_features, generator=generator) * 0.05
            b = torch.randn(linear.out_features, LORA_RANK, generator=generator) * 0.05
            linear.weight.copy_(base + (b @ a) * (min(LORA_RANK, 16) / LORA_RANK))
            key = f"vision_backbone.{name}"
            film.update({f"{key}.base_layer.weight": base, f"{key}.base_layer.bias": linear.bias.detach().clone(),
                         f"{key}.lora_A.default.weight": a, f"{key}.lora_B.default.weight": b})
            base_weights[re.sub(r"(\.blocks\.\d+)\.block\.", r"\1.", f"{key}.weight")] = base
    for name, tensor in vision.state_dict().items():
        if name.rsplit(".", 1)[0] in linears:
            continue
        oft = f"vision_backbone.{name}"
        film[oft[: -len(".gamma")] + ".scale_factor" if oft.endswith(".gamma") else oft] = tensor.clone()
    return film, base_weights


def _write_oft_dir(vla, out: Path, film_state: dict[str, torch.Tensor] | None = None,
                   base_vision: dict[str, torch.Tensor] | None = None) -> Path:
    """What finetune.py leaves in ``<run>--<step>_chkpt/``: the merged HF model (2 shards + index, the base
    config's norm_stats), dataset_statistics.json, tokenizer, and the DDP component files."""
    out.mkdir(parents=True)
    tensors = {}
    for name, tensor in vla.state_dict().items():
        if name.startswith(("action_head.", "proprio_projector.")):
            continue
        if film_state is not None and name.startswith("vision_backbone."):
            if re.search(r"\.blocks\.\d+\.(scale|shift)\.", name):
                continue  # FiLM layers exist only in the vision_backbone file
            name = re.sub(r"(\.blocks\.\d+)\.block\.", r"\1.", name)  # the merged model has plain ViT blocks
            tensor = base_vision.get(name, tensor)
        tensors[_hf_name(name)] = tensor.contiguous()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(out / file), metadata={"format": "pt"})
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    llm = vla.llm_backbone.llm.config
    (out / "config.json").write_text(json.dumps({
        "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive", "image_sizes": [224, 224], "pad_token_id": 32000,
        "text_config": {"model_type": "llama", "hidden_size": llm.hidden_size,
                        "intermediate_size": llm.intermediate_size,
                        "num_hidden_layers": llm.num_hidden_layers, "num_attention_heads": llm.num_attention_heads,
                        "num_key_value_heads": llm.num_key_value_heads, "rms_norm_eps": llm.rms_norm_eps,
                        "vocab_size": llm.vocab_size, "pad_token_id": 32000, "torch_dtype": "float32"},
        "norm_stats": BASE_STATS, "n_action_bins": 256, "torch_dtype": "float32",
        "vla_config": {"vision_backbone": "tiny-dinosiglip-224px", "llm_backbone": "tiny-llama"},
    }))
    (out / "dataset_statistics.json").write_text(json.dumps(LIBERO_STATS))
    vla.tokenizer.save_pretrained(str(out))
    hidden = llm.hidden_size
    torch.save(_component(vla, "action_head.", _oft_action_head_keys(hidden, 7)),
               out / f"action_head--{STEP}_checkpoint.pt")
    torch.save(_component(vla, "proprio_projector.", _oft_proprio_keys(hidden, 8)),
               out / f"proprio_projector--{STEP}_checkpoint.pt")
    if film_state is not None:
        torch.save(film_state, out / f"vision_backbone--{STEP}_checkpoint.pt")  # no DDP prefix (vla.module.*)
    (out / "lora_adapter").mkdir()
    return out


def _libero_vla(film: bool):
    torch.manual_seed(1)
    return build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=LIBERO_STATS, action_head="l1", chunk_size=8,
                     image_views=("primary", "wrist"), use_proprio=True, film=film).eval()


def _batch(vla) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)] for _ in range(2)]
    proprio = rng.uniform(-1, 1, (2, 8)).astype(np.float32)
    return vla.processor.inference_batch(images, ["put the bowl on the plate", "Open the top drawer"], proprio)


def _chunk(vla, batch) -> torch.Tensor:
    return vla.predict_action_chunk(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                    batch["action_mask"], proprio=batch["proprio"])


@pytest.fixture(scope="module")
def oft_source():
    vla = _libero_vla(film=False)
    return vla, _chunk(vla, _batch(vla))


@pytest.fixture(scope="module")
def oft_dir(tmp_path_factory, oft_source) -> Path:
    return _write_oft_dir(oft_source[0], tmp_path_factory.mktemp("oft") / f"run--{STEP}_chkpt")


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_load_libero_checkpoint(oft_dir, oft_source):
    source, expected = oft_source
    vla = load_checkpoint(oft_dir)
    config = vla.config
    assert (config.action_head, config.chunk_size, config.action_dim, config.proprio_dim) == ("l1", 8, 7, 8)
    assert not config.film
    assert config.image_views == ("primary", "wrist")
    _assert_same_weights(source, vla)
    assert list(vla.norm_stats) == [SUITE]  # dataset_statistics.json, not the base config's norm_stats
    assert vla.norm_stats[SUITE]["proprio"]["normalization"] == "bounds_q99"
    assert vla.training_info == {"source": "openvla-oft", "platform": "libero", "image_aug": True, "steps": STEP}
    chunk = _chunk(vla, _batch(vla))
    assert chunk.shape == (2, 8, 7)
    assert torch.equal(chunk, expected)

    rng = np.random.default_rng(3)
    observation = {view: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for view in ("primary", "wrist")}
    state = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
    actions = Policy(vla).predict_batch([observation], ["pick up the black bowl"], SUITE, state)
    assert actions.shape == (1, 8, 7)
    np.testing.assert_array_equal(actions, Policy(source).predict_batch([observation], ["pick up the black bowl"],
                                                                          SUITE, state))


def test_load_film_checkpoint(tmp_path):
    source = _libero_vla(film=True)
    film_state, base_vision = _film_file_and_base(source, torch.Generator().manual_seed(0))
    expected = _chunk(source, _batch(source))
    out = _write_oft_dir(source, tmp_path / "film", film_state, base_vision)
    assert any(k.endswith(".block.attn.qkv.lora_A.default.weight") for k in film_state)
    assert "vision_backbone.featurizer.blocks.0.scale.weight" in film_state

    vla = load_oft(out)
    assert vla.config.film
    _assert_same_weights(source, vla)
    assert torch.equal(_chunk(vla, _batch(vla)), expected)


def test_components_follow_the_weights_dtype(oft_dir, oft_source):
    """OFT saves the head in bf16 and the proprio projector in float32; both run in the model's dtype."""
    vla = load_oft(oft_dir, dtype=torch.bfloat16)
    reference = oft_source[0].state_dict()
    for name, tensor in vla.state_dict().items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, reference[name].to(torch.bfloat16)), name


def test_name_maps_and_lora_merge():
    assert from_oft_name("action_head", "model.mlp_resnet_blocks.1.ffn.1.weight") == \
        "action_head.model.mlp_resnet_blocks.1.ffn.1.weight"
    assert from_oft_name("proprio_projector", "fc2.bias") == "proprio_projector.fc2.bias"
    assert from_oft_name("vision_backbone", "vision_backbone.fused_featurizer.blocks.3.block.ls1.scale_factor") == \
        "vision_backbone.fused_featurizer.blocks.3.block.ls1.gamma"
    assert from_oft_name("vision_backbone", "vision_backbone.featurizer.blocks.0.shift.bias") == \
        "vision_backbone.featurizer.blocks.0.shift.bias"
    assert from_oft_name("action_head", "noise_predictor.mlp_resnet.fc1.weight") is None

    base, a, b = torch.ones(3, 2), torch.full((8, 2), 0.5), torch.full((3, 8), 0.25)
    merged = merge_film_lora({"x.q.base_layer.weight": base, "x.q.base_layer.bias": torch.zeros(3),
                              "x.q.lora_A.default.weight": a, "x.q.lora_B.default.weight": b,
                              "x.norm.weight": torch.ones(2)}, "f.pt")
    assert sorted(merged) == ["x.norm.weight", "x.q.bias", "x.q.weight"]
    assert torch.equal(merged["x.q.weight"], torch.full((3, 2), 2.0))  # 1 + 8 * 0.125 * (min(8, 16) / 8)
    with pytest.raises(ValueError, match=r"f.pt: LoRA layer x.q has only \['base.weight', 'lora_A'\]"):
        merge_film_lora({"x.q.base_layer.weight": base, "x.q.lora_A.default.weight": a}, "f.pt")


def _copy(oft_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / oft_dir.name
    shutil.copytree(oft_dir, out)
    return out


def _resave(file: Path, edit) -> None:
    state = torch.load(file, weights_only=True)
    edit(state)
    torch.save(state, file)


def test_component_errors_name_the_file_and_key(tmp_path, oft_dir):
    broken = _copy(oft_dir, tmp_path)
    head = broken / f"action_head--{STEP}_checkpoint.pt"
    projector = broken / f"proprio_projector--{STEP}_checkpoint.pt"
    _resave(projector, lambda s: s.update({"module.fc2.bias": torch.zeros(5)}))
    _resave(head, lambda s: s.update({"module.model.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError) as err:
        load_oft(broken)
    message = str(err.value)
    assert f"proprio_projector--{STEP}_checkpoint.pt: module.fc2.bias: checkpoint (5,)" in message
    assert f"action_head--{STEP}_checkpoint.pt: module.model.extra.weight" in message

    _resave(head, lambda s: s.update({"module.model.fc2.weight": torch.zeros(6, 64)}))
    with pytest.raises(ValueError, match=rf"action_head--{STEP}_checkpoint.pt: module.model.fc2.weight has shape "
                                         r"\(6, 64\), i.e. action_dim 6, but OFT's libero ACTION_DIM is 7"):
        load_oft(broken)
    _resave(projector, lambda s: s.update({"module.fc1.weight": torch.zeros(64, 7)}))
    head.unlink()
    with pytest.raises(FileNotFoundError, match="No action_head--\\*checkpoint.pt"):
        load_oft(broken)
    shutil.copy(oft_dir / head.name, head)
    with pytest.raises(ValueError, match=r"module.fc1.weight has shape \(64, 7\), i.e. proprio_dim 7, but OFT's "
                                         r"libero PROPRIO_DIM is 8"):
        load_oft(broken)


def test_directory_errors(tmp_path, oft_dir):
    broken = _copy(oft_dir, tmp_path)
    shutil.copy(broken / f"action_head--{STEP}_checkpoint.pt", broken / "action_head--latest_checkpoint.pt")
    with pytest.raises(ValueError, match="several action_head checkpoints"):
        load_oft(broken)
    (broken / "action_head--latest_checkpoint.pt").unlink()

    torch.save({"module.fc1.weight": torch.zeros(64, 1)}, broken / f"noisy_action_projector--{STEP}_checkpoint.pt")
    with pytest.raises(ValueError, match="diffusion action head"):
        load_oft(broken)
    (broken / f"noisy_action_projector--{STEP}_checkpoint.pt").unlink()

    stats = broken / "dataset_statistics.json"
    stats.write_text(json.dumps({"my_robot": LIBERO_STATS[SUITE]}))
    with pytest.raises(ValueError, match=r"Cannot tell the OFT platform from the dataset names \['my_robot'\]"):
        load_oft(broken)
    assert load_oft(broken, platform="libero", chunk_size=4).config.chunk_size == 4
    stats.unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        load_oft(broken)

    for shard in broken.glob("model*.safetensors"):
        shard.unlink()
    with pytest.raises(FileNotFoundError, match="merge_lora_weights_and_save.py"):
        load_checkpoint(broken)
