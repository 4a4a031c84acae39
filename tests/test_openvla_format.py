"""OpenVLA checkpoint import/export: tiny checkpoints in both published layouts, built here with the
parameter names documented by OpenVLA (written out independently of the module's mapping table)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla.models import VLAConfig, build_vla
from vla.models.openvla_format import (
    assign_weights,
    empty_vla,
    export_openvla_hf,
    from_hf_name,
    from_prismatic_name,
    load_openvla,
    to_hf_name,
)
from vla.policy import Policy

STATS_B = {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "min": [-2.0] * 6 + [0.0],
                      "max": [2.0] * 6 + [1.0], "mean": [0.0] * 7, "std": [1.0] * 7, "mask": [True] * 6 + [False]}}


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (180, 240, 3), dtype=np.uint8) for _ in range(n)]


def _documented_hf_name(name: str) -> str:
    """OpenVLA's HF names, as listed in its convert script / modeling_prismatic.py."""
    name = name.replace("llm_backbone.llm.", "language_model.", 1)
    if name.startswith("vision_backbone.") and name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".scale_factor"
    return name


def _documented_prismatic_state(vla) -> dict[str, dict[str, torch.Tensor]]:
    """Prismatic's checkpoint["model"] for a fused DinoSigLIP + fused-gelu-mlp model."""
    model: dict[str, dict[str, torch.Tensor]] = {"vision_backbone": {}, "projector": {}, "llm_backbone": {}}
    for name, tensor in vla.state_dict().items():
        if name.startswith("vision_backbone.featurizer."):
            model["vision_backbone"]["dino_featurizer." + name.removeprefix("vision_backbone.featurizer.")] = tensor
        elif name.startswith("vision_backbone.fused_featurizer."):
            model["vision_backbone"]["siglip_featurizer." + name.removeprefix("vision_backbone.fused_featurizer.")] = tensor
        elif name.startswith("projector."):
            index = {"fc1": "0", "fc2": "2", "fc3": "4"}[name.split(".")[1]]
            model["projector"][f"projector.{index}.{name.split('.')[2]}"] = tensor
        else:
            model["llm_backbone"][name.removeprefix("llm_backbone.")] = tensor
    return model


@pytest.fixture(scope="module")
def two_dataset_vla(tiny_vla):
    """The session's tiny VLA with a second dataset's statistics (shares tiny_vla's weights)."""
    vla = copy.deepcopy(tiny_vla)
    vla.norm_stats = {**tiny_vla.norm_stats, "other": STATS_B}
    return vla


@pytest.fixture(scope="module")
def hand_built_hf_dir(tmp_path_factory, two_dataset_vla) -> Path:
    """An HF-layout checkpoint written the way OpenVLA publishes it: 2 shards + index, OpenVLAConfig fields."""
    vla = two_dataset_vla
    out = tmp_path_factory.mktemp("openvla_hf")
    tensors = {_documented_hf_name(k): v.contiguous() for k, v in vla.state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(out / file), metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    llm = vla.llm_backbone.llm.config
    config = {
        "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive", "image_sizes": [224, 224], "pad_token_id": 32000,
        "text_config": {"model_type": "llama", "hidden_size": llm.hidden_size, "intermediate_size": llm.intermediate_size,
                        "num_hidden_layers": llm.num_hidden_layers, "num_attention_heads": llm.num_attention_heads,
                        "num_key_value_heads": llm.num_key_value_heads, "rms_norm_eps": llm.rms_norm_eps,
                        "vocab_size": llm.vocab_size, "pad_token_id": 32000, "torch_dtype": "float32"},
        "norm_stats": vla.norm_stats, "n_action_bins": 256, "torch_dtype": "float32",
        "vla_config": {"vision_backbone": "tiny-dinosiglip-224px", "llm_backbone": "tiny-llama"},
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig"},
    }
    (out / "config.json").write_text(json.dumps(config))
    vla.tokenizer.save_pretrained(str(out))
    return out


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


INSTRUCTIONS = ["pick up the red block", "Open the drawer"]


@pytest.fixture(scope="module")
def expected_actions(two_dataset_vla) -> dict[str, np.ndarray]:
    """The source model's actions per unnorm_key (computed once: CPU time is shared)."""
    return {key: Policy(two_dataset_vla).predict_batch(_images(), INSTRUCTIONS, key) for key in ("sim", "other")}


def _assert_same_actions(vla, expected_actions: dict[str, np.ndarray], unnorm_key: str) -> None:
    actual = Policy(vla).predict_batch(_images(), INSTRUCTIONS, unnorm_key)
    assert actual.shape == (2, 7)
    np.testing.assert_array_equal(actual, expected_actions[unnorm_key])


def test_hf_name_table_covers_every_parameter(two_dataset_vla):
    names = list(two_dataset_vla.state_dict())
    hf = [to_hf_name(n) for n in names]
    assert hf == [_documented_hf_name(n) for n in names]
    assert len(set(hf)) == len(hf)
    assert [from_hf_name(h) for h in hf] == names
    prefixes = {h.split(".")[0] + "." + h.split(".")[1] for h in hf}
    assert prefixes == {"vision_backbone.featurizer", "vision_backbone.fused_featurizer", "projector.fc1",
                        "projector.fc2", "projector.fc3", "language_model.model", "language_model.lm_head"}
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in hf
    assert from_hf_name("vision_tower.blocks.0.weight") is None


def test_prismatic_name_table_covers_every_parameter(two_dataset_vla):
    model = _documented_prismatic_state(two_dataset_vla)
    flat = [f"{c}.{k}" for c, sd in model.items() for k in sd]
    ours = [from_prismatic_name(k, fused_vision=True, projector="fused-gelu-mlp") for k in flat]
    assert sorted(ours) == sorted(two_dataset_vla.state_dict())
    assert from_prismatic_name("projector.projector.0.weight", fused_vision=False, projector="gelu-mlp") == "projector.fc1.weight"
    assert from_prismatic_name("projector.projector.weight", fused_vision=False, projector="linear") == "projector.fc1.weight"
    assert from_prismatic_name("vision_backbone.featurizer.cls_token", fused_vision=False, projector="linear") == \
        "vision_backbone.featurizer.cls_token"
    assert from_prismatic_name("vision_backbone.dino_featurizer.cls_token", fused_vision=False, projector="linear") is None


def test_load_hand_built_hf_checkpoint(hand_built_hf_dir, two_dataset_vla, expected_actions):
    vla = load_openvla(hand_built_hf_dir)
    _assert_same_weights(two_dataset_vla, vla)
    assert sorted(vla.norm_stats) == ["other", "sim"]
    assert vla.llm_backbone.llm.get_input_embeddings().num_embeddings == 32064
    for key in ("sim", "other"):
        _assert_same_actions(vla, expected_actions, key)


def test_hf_export_import_round_trip(tmp_path, hand_built_hf_dir, two_dataset_vla, expected_actions):
    first = load_openvla(hand_built_hf_dir)
    out = export_openvla_hf(first, tmp_path / "exported", max_shard_size=4 * 2**20)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["architectures"] == ["OpenVLAForActionPrediction"]
    assert config["vision_backbone_id"] == "dinosiglip-vit-so-224px" and config["llm_backbone_id"] == "llama2-7b-pure"
    assert config["arch_specifier"] == "no-align+fused-gelu-mlp" and config["use_fused_vision_backbone"] is True
    assert config["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert config["text_config"]["vocab_size"] == 32064 and config["pad_token_id"] == 32000
    assert config["norm_stats"] == two_dataset_vla.norm_stats and config["n_action_bins"] == 256
    assert config["auto_map"]["AutoModelForVision2Seq"].endswith("modeling_prismatic.OpenVLAForActionPrediction")
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["image_resize_strategy"] == "resize-naive" and len(preprocessor["means"]) == 2
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 1
    exported = {}
    for file in set(index.values()):
        exported.update(load_file(str(out / file)))
    original = {}
    for file in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        original.update(load_file(str(hand_built_hf_dir / file)))
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k]) for k in original)

    second = load_openvla(out)
    _assert_same_weights(first, second)
    _assert_same_actions(second, expected_actions, "other")


def test_prismatic_run_dir_and_pt_file(tmp_path, two_dataset_vla, expected_actions):
    run = tmp_path / "prism-dinosiglip-224px+mx-tiny"
    (run / "checkpoints").mkdir(parents=True)
    payload = {"model": _documented_prismatic_state(two_dataset_vla)}
    torch.save(payload, run / "checkpoints" / "step-000010-epoch-00-loss=1.0000.pt")
    torch.save(payload, run / "checkpoints" / "step-000200-epoch-01-loss=0.5000.pt")
    config = {"vla": {"base_vlm": "prism-dinosiglip-224px+7b"},
              "vla_config": {"vision_backbone": "tiny-dinosiglip-224px", "llm_backbone": "tiny-llama",
                             "projector": "fused-gelu-mlp", "image_resize_strategy": "resize-naive"}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "dataset_statistics.json").write_text(json.dumps(two_dataset_vla.norm_stats))

    from_dir = load_openvla(run)
    _assert_same_weights(two_dataset_vla, from_dir)
    _assert_same_actions(from_dir, expected_actions, "sim")
    from_file = load_openvla(run / "checkpoints" / "step-000010-epoch-00-loss=1.0000.pt", dtype=torch.bfloat16)
    reference = two_dataset_vla.state_dict()
    assert all(torch.equal(t, reference[k].to(torch.bfloat16)) for k, t in from_file.state_dict().items())

    del payload["model"]["vision_backbone"]
    torch.save(payload, run / "checkpoints" / "latest-checkpoint.pt")
    with pytest.raises(ValueError, match=r"lacks model components \['vision_backbone'\]"):
        load_openvla(run)


def test_real_openvla_ids_map_to_our_registry():
    from vla.models.openvla_format import _names_from_prismatic_config

    names = _names_from_prismatic_config({"vla": {"base_vlm": "prism-dinosiglip-224px+7b"}}, Path("run"))
    assert names == {"vision_backbone": "dinosiglip-224px", "llm_backbone": "llama2-7b", "projector": "fused-gelu-mlp",
                     "image_resize_strategy": "resize-naive", "n_action_bins": 256}
    with pytest.raises(ValueError, match="unsupported base_vlm 'prism-clip\\+13b'"):  # 13B LLMs are not in the registry
        _names_from_prismatic_config({"vla": {"base_vlm": "prism-clip+13b"}}, Path("run"))


def test_key_problems_are_listed(tmp_path, hand_built_hf_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    tensors = {}
    for file in hand_built_hf_dir.iterdir():
        if file.suffix == ".safetensors":
            tensors.update(load_file(str(file)))
        elif file.name != "model.safetensors.index.json":
            (broken / file.name).write_bytes(file.read_bytes())
    dropped = "language_model.model.norm.weight"
    del tensors[dropped]
    tensors["language_model.model.extra_head.weight"] = torch.zeros(2)
    tensors["projector.fc3.bias"] = torch.zeros(3)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_openvla(broken)
    message = str(err.value)
    assert "language_model.model.extra_head.weight" in message
    assert from_hf_name(dropped) in message
    assert "projector.fc3.bias: checkpoint (3,)" in message


def test_rejects_paths_and_architectures_openvla_cannot_express(tmp_path):
    with pytest.raises(ValueError, match="neither an OpenVLA HF directory"):
        load_openvla(tmp_path)
    linear = build_vla("tiny-siglip-224px", "tiny-llama", projector="linear")
    with pytest.raises(ValueError, match="'gelu-mlp' projector"):
        export_openvla_hf(linear, tmp_path / "out")


def test_skeleton_is_built_on_meta_and_nothing_is_left_there(two_dataset_vla):
    llm_config = two_dataset_vla.llm_backbone.llm.config
    skeleton = empty_vla(two_dataset_vla.config, two_dataset_vla.norm_stats, llm_config, None)
    assert all(p.is_meta for p in skeleton.parameters())
    assert not skeleton.image_transform.mean.is_meta  # preprocessing is built on CPU
    loaded = assign_weights(skeleton, iter(two_dataset_vla.state_dict().items()))
    rotary = "llm_backbone.llm.model.rotary_emb.inv_freq"
    assert torch.equal(loaded.get_buffer(rotary), two_dataset_vla.get_buffer(rotary))  # rebuilt, not in checkpoints

    skeleton = empty_vla(VLAConfig("tiny-dinosiglip-224px", "tiny-llama"), {}, llm_config, None)
    skeleton.projector.register_buffer("scale", torch.ones(1, device="meta"), persistent=False)
    with pytest.raises(RuntimeError, match=r"left \['projector.scale'\] on the meta device"):
        assign_weights(skeleton, iter(two_dataset_vla.state_dict().items()))
