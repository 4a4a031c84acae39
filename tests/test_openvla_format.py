"""OpenVLA checkpoint import/export: tiny checkpoints in both published layouts, built here with the
parameter names and config fields documented by OpenVLA (written out independently of the module's tables).

The HF fixture's config.json has the fields of OpenVLA's released one and nothing of ours; its Llama is smaller
than the Llama-2-7B its ``llm_backbone_id`` names (as derived checkpoints carry), its vision towers are the tiny
variants of OpenVLA's (``tiny_vision_ids``). OpenVLA's own code running on our exports is checked in
tests/test_openvla_interop.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sentencepiece import sentencepiece_model_pb2
from transformers import LlamaConfig

from vla.models import VLAConfig, build_vla
from vla.models.io import load_vla, save_vla
from vla.models.llm import get_llm_spec, sentencepiece_model_file
from vla.models.openvla_format import (
    OPENVLA_VISION_IDS,
    assign_weights,
    empty_vla,
    export_openvla_hf,
    from_hf_name,
    from_prismatic_name,
    load_openvla,
    to_hf_name,
)
from vla.models.vla import VLA
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


def _documented_prismatic_state(vla, fused_name: str = "siglip_featurizer") -> dict[str, dict[str, torch.Tensor]]:
    """Prismatic's checkpoint["model"] for a fused DinoSigLIP (or, ``clip_featurizer``, DinoCLIP) + fused-gelu-mlp
    model (prismatic/models/backbones/vision/dinosiglip_vit.py, dinoclip_vit.py)."""
    model: dict[str, dict[str, torch.Tensor]] = {"vision_backbone": {}, "projector": {}, "llm_backbone": {}}
    for name, tensor in vla.state_dict().items():
        if name.startswith("vision_backbone.featurizer."):
            model["vision_backbone"]["dino_featurizer." + name.removeprefix("vision_backbone.featurizer.")] = tensor
        elif name.startswith("vision_backbone.fused_featurizer."):
            model["vision_backbone"][f"{fused_name}." + name.removeprefix("vision_backbone.fused_featurizer.")] = tensor
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


# OpenVLA's ids whose architectures the tests build small: the config files below are OpenVLA's, with the vision
# towers shrunk to the registry's tiny-* variants (the full-size ones hold ~700M parameters).
TINY_VISION_IDS = {"dinosiglip-vit-so-224px": "tiny-dinosiglip-224px", "dinoclip-vit-l-336px": "tiny-dinoclip-336px"}
# What OpenVLA's config.json holds in text_config for a smaller Llama than Llama-2-7B (MiniVLA-style checkpoints):
# only the keys that differ from LlamaConfig's defaults. rms_norm_eps, max_position_embeddings and
# num_key_value_heads are left to those defaults (1e-6, 2048, = num_attention_heads).
SMALL_LLAMA_TEXT_CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "pad_token_id": 32000, "torch_dtype": "float32", "vocab_size": 32064}


@pytest.fixture
def tiny_vision_ids(monkeypatch):
    """OpenVLA's vision ids resolve to the tiny variants of their architectures for this test."""
    for openvla_id, ours in TINY_VISION_IDS.items():
        monkeypatch.setitem(OPENVLA_VISION_IDS, openvla_id, ours)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_vla) -> Path:
    """Tokenizer files as OpenVLA's releases ship them: tokenizer.json/config plus the SentencePiece model."""
    out = tmp_path_factory.mktemp("tokenizer")
    tiny_vla.tokenizer.save_pretrained(str(out))
    shutil.copyfile(sentencepiece_model_file(get_llm_spec("tiny-llama")), out / "tokenizer.model")
    return out


@pytest.fixture(scope="module")
def openvla_source(tokenizer_dir, two_dataset_vla) -> VLA:
    """The model OpenVLA's HF code builds from ``hand_built_hf_dir``'s config: a Llama of width 64 named
    llama2-7b-pure, its other fields from LlamaConfig's defaults."""
    torch.manual_seed(1)
    config = VLAConfig("tiny-dinosiglip-224px", "llama2-7b", projector="fused-gelu-mlp")
    llm_config = LlamaConfig(**{k: v for k, v in SMALL_LLAMA_TEXT_CONFIG.items() if k not in ("model_type", "torch_dtype")})
    return VLA(config, norm_stats=two_dataset_vla.norm_stats, tokenizer_path=str(tokenizer_dir), llm_config=llm_config).eval()


def _openvla_config_json(norm_stats) -> dict:
    """The fields of OpenVLA's released config.json (openvla/openvla-7b), with the smaller Llama's text_config."""
    return {
        "arch_specifier": "no-align+fused-gelu-mlp", "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "hf_llm_id": "meta-llama/Llama-2-7b-hf", "image_resize_strategy": "resize-naive", "image_sizes": [224, 224],
        "llm_backbone_id": "llama2-7b-pure", "llm_max_length": 2048, "model_type": "openvla", "n_action_bins": 256,
        "norm_stats": norm_stats, "output_projector_states": False, "pad_to_multiple_of": 64, "pad_token_id": 32000,
        "text_config": SMALL_LLAMA_TEXT_CONFIG,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None], "torch_dtype": "float32", "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True, "vision_backbone_id": "dinosiglip-vit-so-224px",
    }


@pytest.fixture(scope="module")
def hand_built_hf_dir(tmp_path_factory, openvla_source, tokenizer_dir) -> Path:
    """An HF-layout checkpoint written the way OpenVLA publishes it: 2 shards + index, OpenVLA's config.json
    fields only (no project keys), its tokenizer files."""
    vla = openvla_source
    out = tmp_path_factory.mktemp("openvla_hf")
    tensors = {_documented_hf_name(k): v.contiguous() for k, v in vla.state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(out / file), metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(_openvla_config_json(vla.norm_stats)))
    for file in tokenizer_dir.iterdir():
        shutil.copyfile(file, out / file.name)
    return out


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


INSTRUCTIONS = ["pick up the red block", "Open the drawer"]


@pytest.fixture(scope="module")
def expected_actions(openvla_source) -> dict[str, np.ndarray]:
    """The source model's actions per unnorm_key (computed once: CPU time is shared)."""
    return {key: Policy(openvla_source).predict_batch(_images(), INSTRUCTIONS, key) for key in ("sim", "other")}


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
    ours = [from_prismatic_name(k, "tiny-dinosiglip-224px", projector="fused-gelu-mlp") for k in flat]
    assert sorted(ours) == sorted(two_dataset_vla.state_dict())
    assert from_prismatic_name("projector.projector.0.weight", "siglip-224px", projector="gelu-mlp") == "projector.fc1.weight"
    assert from_prismatic_name("projector.projector.weight", "siglip-224px", projector="linear") == "projector.fc1.weight"
    assert from_prismatic_name("vision_backbone.featurizer.cls_token", "siglip-224px", projector="linear") == \
        "vision_backbone.featurizer.cls_token"
    assert from_prismatic_name("vision_backbone.dino_featurizer.cls_token", "siglip-224px", projector="linear") is None
    # DinoCLIP: Prismatic's dinoclip_vit.py names the halves dino_featurizer and clip_featurizer
    assert from_prismatic_name("vision_backbone.clip_featurizer.cls_token", "dinoclip-336px", "fused-gelu-mlp") == \
        "vision_backbone.fused_featurizer.cls_token"
    assert from_prismatic_name("vision_backbone.siglip_featurizer.cls_token", "dinoclip-336px", "fused-gelu-mlp") is None


def test_load_openvla_config_with_a_smaller_llama(tmp_path, tiny_vision_ids, hand_built_hf_dir, openvla_source,
                                                  expected_actions):
    vla = load_openvla(hand_built_hf_dir)
    _assert_same_weights(openvla_source, vla)
    llm = vla.llm_backbone.llm.config
    assert (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers) == (64, 128, 2)
    # what text_config leaves out comes from LlamaConfig's defaults, as in OpenVLA's code (not from llama2-7b's registry)
    assert (llm.rms_norm_eps, llm.max_position_embeddings, llm.num_key_value_heads) == (1e-6, 2048, 4)
    assert vla.projector.fc3.out_features == 64
    assert sorted(vla.norm_stats) == ["other", "sim"]
    assert vla.llm_backbone.llm.get_input_embeddings().num_embeddings == 32064
    for key in ("sim", "other"):
        _assert_same_actions(vla, expected_actions, key)

    # the config records the LLM that is not llama2-7b's, so our own layout saves and rebuilds the same model
    assert vla.config.llm_architecture == {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 32064}
    rebuilt = load_vla(save_vla(vla, tmp_path / "ours"))
    _assert_same_weights(vla, rebuilt)
    assert rebuilt.llm_backbone.llm.config.rms_norm_eps == 1e-6
    _assert_same_actions(rebuilt, expected_actions, "sim")


def test_hf_export_import_round_trip(tmp_path, tiny_vision_ids, hand_built_hf_dir, openvla_source, expected_actions):
    first = load_openvla(hand_built_hf_dir)
    out = export_openvla_hf(first, tmp_path / "exported", max_shard_size=4 * 2**20)
    config = json.loads((out / "config.json").read_text())
    # OpenVLA's fields as its released config.json has them; the project's own key comes on top
    released = _openvla_config_json(openvla_source.norm_stats)
    del released["transformers_version"]
    assert {k: config[k] for k in released} == released
    assert config["text_config"] == SMALL_LLAMA_TEXT_CONFIG  # only the non-default keys
    assert config["vla_config"]["vision_backbone"] == "tiny-dinosiglip-224px"
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["image_resize_strategy"] == "resize-naive" and len(preprocessor["means"]) == 2
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                                        "AutoProcessor": "processing_prismatic.PrismaticProcessor"}
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
    # the checkpoint's own SentencePiece model travels on
    assert (out / "tokenizer.model").read_bytes() == (hand_built_hf_dir / "tokenizer.model").read_bytes()

    second = load_openvla(out)
    _assert_same_weights(first, second)
    _assert_same_actions(second, expected_actions, "other")


def test_exported_tokenizer_files_are_what_openvlas_pinned_versions_read(tmp_path, tiny_vla):
    out = export_openvla_hf(tiny_vla, tmp_path / "out")
    tokenizer_json = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer_json["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges)  # tokenizers 0.19's format
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["legacy"] is False and "add_prefix_space" not in tokenizer_config
    assert "local_files_only" not in tokenizer_config
    assert (out / "tokenizer.model").read_bytes() == sentencepiece_model_file(get_llm_spec("tiny-llama")).read_bytes()
    # and transformers 5 reads them back to the same ids
    reloaded = load_openvla(out)
    assert reloaded.config == tiny_vla.config  # the registry's LLM: no llm_architecture recorded
    for text in INSTRUCTIONS:
        assert reloaded.processor.prompt_tokenizer.prompt_ids(text) == tiny_vla.processor.prompt_tokenizer.prompt_ids(text)


def test_a_sentencepiece_model_of_another_vocabulary_is_refused(tmp_path, tiny_vla):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sentencepiece_model_file(get_llm_spec("tiny-llama")).read_bytes())
    proto.pieces[100].piece, proto.pieces[101].piece = proto.pieces[101].piece, proto.pieces[100].piece
    other = tmp_path / "other.model"
    other.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match=r"other.model does not hold this model's vocabulary .*first difference at id 100"):
        export_openvla_hf(tiny_vla, tmp_path / "out", tokenizer_model=other)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_export_copies_openvlas_code_from_a_checkout(tmp_path, tiny_vla):
    checkout = tmp_path / "openvla"
    code_dir = checkout / "prismatic" / "extern" / "hf"
    code_dir.mkdir(parents=True)
    for name in ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py"):
        (code_dir / name).write_text(f"# {name} from the user's OpenVLA checkout\n")
    out = export_openvla_hf(tiny_vla, tmp_path / "out", openvla_code=checkout)
    config = json.loads((out / "config.json").read_text())
    for module_class in config["auto_map"].values():  # local module names: loads offline from the directory
        assert (out / (module_class.split(".")[0] + ".py")).read_text() == \
            (code_dir / (module_class.split(".")[0] + ".py")).read_text()
    (code_dir / "processing_prismatic.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['processing_prismatic.py'\]"):
        export_openvla_hf(tiny_vla, tmp_path / "again", openvla_code=code_dir)
    assert not (tmp_path / "again").exists()


def test_clip_backbones_export_their_quick_gelu_and_imports_check_it(tmp_path):
    clip = build_vla("tiny-clip-224px", "tiny-llama", projector="gelu-mlp")
    out = export_openvla_hf(clip, tmp_path / "clip")
    config = json.loads((out / "config.json").read_text())
    assert config["vision_backbone_id"] == "clip-vit-l" and config["timm_override_act_layers"] == ["quick_gelu"]
    config["timm_override_act_layers"] = [None]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"timm_override_act_layers \[None\] differ .*\['quick_gelu'\]"):
        load_openvla(out)


def test_prismatic_run_dir_and_pt_file(tmp_path, two_dataset_vla):
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
    _assert_same_actions(from_dir, {"sim": Policy(two_dataset_vla).predict_batch(_images(), INSTRUCTIONS, "sim")}, "sim")
    from_file = load_openvla(run / "checkpoints" / "step-000010-epoch-00-loss=1.0000.pt", dtype=torch.bfloat16)
    reference = two_dataset_vla.state_dict()
    assert all(torch.equal(t, reference[k].to(torch.bfloat16)) for k, t in from_file.state_dict().items())

    del payload["model"]["vision_backbone"]
    torch.save(payload, run / "checkpoints" / "latest-checkpoint.pt")
    with pytest.raises(ValueError, match=r"lacks model components \['vision_backbone'\]"):
        load_openvla(run)


def test_prismatic_dinoclip_run_with_a_smaller_llm(tmp_path, tiny_vision_ids, tokenizer_dir):
    """A Prismatic VLM run (config "model" ids) of a DinoCLIP model whose Llama is narrower than the Vicuna it names:
    the sizes come from the tensors (grouped-query key/value heads included), the head count from text_config."""
    torch.manual_seed(2)
    llm_config = LlamaConfig(**{**get_llm_spec("vicuna-v15-7b").architecture, "hidden_size": 64, "intermediate_size": 96,
                                "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                                "vocab_size": 32064})
    source = VLA(VLAConfig("tiny-dinoclip-336px", "vicuna-v15-7b", image_resize_strategy="letterbox"),
                 norm_stats={"other": STATS_B}, tokenizer_path=str(tokenizer_dir), llm_config=llm_config)
    run = tmp_path / "dinoclip-336px-letterbox+7b+stage-finetune+x7"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": _documented_prismatic_state(source, "clip_featurizer")},
               run / "checkpoints" / "latest-checkpoint.pt")
    config = {"model": {"model_id": "dinoclip-336px-letterbox+7b", "vision_backbone_id": "dinoclip-vit-l-336px",
                        "llm_backbone_id": "vicuna-v15-7b", "arch_specifier": "no-align+fused-gelu-mlp",
                        "image_resize_strategy": "letterbox"}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "dataset_statistics.json").write_text(json.dumps(source.norm_stats))
    with pytest.raises(ValueError, match=r"LLM is 64 wide, not vicuna-v15-7b's 4096.*\"num_attention_heads\""):
        load_openvla(run, tokenizer_path=tokenizer_dir)

    (run / "config.json").write_text(json.dumps({**config, "text_config": {"num_attention_heads": 4}}))
    vla = load_openvla(run, tokenizer_path=tokenizer_dir)
    _assert_same_weights(source, vla)
    assert vla.llm_backbone.llm.config.to_dict() == source.llm_backbone.llm.config.to_dict()
    assert vla.config.vision_backbone == "tiny-dinoclip-336px" and vla.image_transform.resize_strategy == "letterbox"


def test_real_openvla_ids_map_to_our_registry():
    from vla.models.openvla_format import _names_from_prismatic_config

    names = _names_from_prismatic_config({"vla": {"base_vlm": "prism-dinosiglip-224px+7b"}}, Path("run"))
    assert names == {"vision_backbone": "dinosiglip-224px", "llm_backbone": "llama2-7b", "projector": "fused-gelu-mlp",
                     "image_resize_strategy": "resize-naive", "n_action_bins": 256}
    with pytest.raises(ValueError, match="unsupported base_vlm 'prism-clip\\+13b'"):  # 13B LLMs are not in the registry
        _names_from_prismatic_config({"vla": {"base_vlm": "prism-clip+13b"}}, Path("run"))


def test_key_problems_are_listed(tmp_path, tiny_vision_ids, hand_built_hf_dir):
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
