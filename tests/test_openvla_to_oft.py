"""Starting an OpenVLA-OFT fine-tune from OpenVLA weights (``load_openvla`` with chunk settings, ``model=openvla
head=l1``) and writing the result in OFT's layout (``export_oft``) that ``load_checkpoint`` reads back."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from tests.conftest import compose_cli
from vla.models import export_openvla_hf, load_checkpoint, load_openvla
from vla.models.oft_format import export_oft
from vla.training.config_checks import config_problems
from vla.training.peft import apply_lora
from vla.training.run import build_model

K, D, P = 4, 7, 8
VIEWS = ("primary", "wrist")
CHUNK = dict(action_head="l1", chunk_size=K, image_views=VIEWS, use_proprio=True, film=True)


def _part(n: int) -> dict[str, list]:
    return {"q01": [-1.0] * n, "q99": [1.0] * n, "min": [-1.0] * n, "max": [1.0] * n, "mean": [0.0] * n,
            "std": [1.0] * n, "mask": [True] * n}


TRAIN_STATS = {"my_robot": {"action": _part(D), "proprio": _part(P)}}  # the fine-tuning data's statistics


@pytest.fixture(scope="module")
def openvla_dir(tmp_path_factory, tiny_vla) -> Path:
    """A released-OpenVLA-style HF directory (the tiny token model, dataset "sim")."""
    return export_openvla_hf(tiny_vla, tmp_path_factory.mktemp("openvla") / "openvla-tiny")


@pytest.fixture(scope="module")
def oft_start(openvla_dir):
    """The OpenVLA directory loaded as the start of an OFT+ fine-tune: l1, two views, proprio, FiLM."""
    torch.manual_seed(0)
    return load_openvla(openvla_dir, norm_stats=TRAIN_STATS, **CHUNK)


def _filmed_name(name: str) -> str:
    """A plain model's vision block parameter under FiLM's wrapper (``blocks.N.`` -> ``blocks.N.block.``)."""
    return re.sub(r"^(vision_backbone\.\w+\.blocks\.\d+)\.", r"\1.block.", name)


def _training_batch(vla) -> dict:
    rng = np.random.default_rng(0)
    samples = [vla.processor.training_sample([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in VIEWS],
                                             text, rng.uniform(-1, 1, (K, D)), proprio=rng.uniform(-1, 1, P))
               for text in ("pick up the cup", "open the drawer")]
    return vla.processor.collate(samples)


def _chunk(vla) -> torch.Tensor:
    rng = np.random.default_rng(1)
    images = [[rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in VIEWS] for _ in range(2)]
    batch = vla.processor.inference_batch(images, ["put the bowl on the plate", "Open the top drawer"],
                                          rng.uniform(-1, 1, (2, P)).astype(np.float32))
    return vla.predict_action_chunk(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                    batch["action_mask"], proprio=batch["proprio"])


def test_openvla_weights_gain_fresh_trainable_oft_modules(oft_start, tiny_vla):
    vla = oft_start
    config = vla.config
    assert (config.action_head, config.chunk_size, config.action_dim, config.image_views, config.proprio_dim,
            config.film) == ("l1", K, D, VIEWS, P, True)
    assert vla.llm_backbone.llm.config._attn_implementation == "sdpa"
    assert set(vla.norm_stats) == {"sim", "my_robot"}  # the checkpoint's datasets + the training data's

    base = {_filmed_name(k): v for k, v in tiny_vla.state_dict().items()}
    state = vla.state_dict()
    for name, tensor in base.items():
        assert torch.equal(state[name], tensor), name
    added = set(state) - set(base)
    assert {k.split(".")[0] for k in added} == {"action_head", "proprio_projector", "vision_backbone"}
    assert all(re.search(r"\.blocks\.\d+\.(scale|shift)\.", k) for k in added if k.startswith("vision_backbone."))
    assert {id(p) for m in vla.chunk_modules() for p in m.parameters()} == {id(vla.get_parameter(k)) for k in added}

    vla = apply_lora(copy.deepcopy(vla), r=4, adapt_vision_and_projector=True)  # as OFT's finetune.py
    inputs = ("pixel_values", "input_ids", "attention_mask", "action_mask", "actions", "proprio")
    vla.train()(**{k: v for k, v in _training_batch(vla).items() if k in inputs}).loss.backward()
    unused = {id(p) for p in vla.vision_backbone.unused_parameters()}  # FiLM of the ViT's last block never runs
    for name in added:
        param = vla.get_parameter(name)
        if id(param) not in unused:
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0, name
    assert not any(".lora_" in k and k.startswith(("action_head.", "proprio_projector.")) for k in vla.state_dict())
    chunk = _chunk(oft_start.eval())
    assert chunk.shape == (2, K, D) and torch.isfinite(chunk).all()


def test_chunk_modules_take_the_weights_dtype(openvla_dir):
    vla = load_openvla(openvla_dir, dtype=torch.bfloat16, norm_stats=TRAIN_STATS, **CHUNK)
    assert {p.dtype for p in vla.parameters()} == {torch.bfloat16}


def _with_vla_config(openvla_dir: Path, out: Path, **changes) -> Path:
    """``openvla_dir`` (its files linked) with ``changes`` to the ``vla_config`` of its ``config.json``."""
    out.mkdir()
    for file in openvla_dir.iterdir():
        if file.name != "config.json":
            (out / file.name).symlink_to(file)
    config = json.loads((openvla_dir / "config.json").read_text())
    config["vla_config"].update(changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("saved_attn", ["auto", "flash_attention_2"])
def test_l1_head_moves_the_llm_to_a_kernel_taking_its_mask(tmp_path, openvla_dir, monkeypatch, saved_attn):
    """Where the loaded LLM runs another kernel (flash_attention_2 on a CUDA machine; here eager stands in for
    it, as flash_attn is absent), the l1 head switches it to sdpa."""
    import vla.models.llm as llm_module

    checkpoint = _with_vla_config(openvla_dir, tmp_path / "openvla", attn_implementation=saved_attn)
    monkeypatch.setattr(llm_module, "resolve_attn_implementation", lambda requested: "eager")

    tokens = load_openvla(checkpoint)
    assert tokens.llm_backbone.llm.config._attn_implementation == "eager"
    vla = load_openvla(checkpoint, action_head="l1", chunk_size=2, norm_stats=TRAIN_STATS)
    assert vla.config.llm_attn_implementation == "sdpa"
    assert vla.config.attn_implementation == ("auto" if saved_attn == "auto" else "sdpa")
    assert vla.llm_backbone.llm.config._attn_implementation == "sdpa"


def test_chunk_settings_need_statistics_and_a_plain_checkpoint(tmp_path, openvla_dir):
    with pytest.raises(ValueError, match="action_dim comes from the datasets' 'action' statistics"):
        load_openvla(openvla_dir, action_head="l1", chunk_size=2)
    with pytest.raises(ValueError, match="Dataset 'sim' has no 'proprio' statistics"):
        load_openvla(openvla_dir, use_proprio=True, norm_stats={"sim": {"action": _part(D)}})

    two_views = _with_vla_config(openvla_dir, tmp_path / "two-views", image_views=list(VIEWS))
    assert load_openvla(two_views).config.image_views == VIEWS  # default settings: the checkpoint's own
    with pytest.raises(ValueError, match="already holds a model with chunk settings .*'image_views': "
                                         r"\('primary', 'wrist'\).* adds chunk modules to a plain OpenVLA only"):
        load_openvla(two_views, norm_stats=TRAIN_STATS, **CHUNK)


def test_export_oft_round_trips_through_load_checkpoint(tmp_path, oft_start):
    source = oft_start.eval()
    expected = _chunk(source)
    with pytest.raises(ValueError, match=r"no names for this model's OpenVLA-OFT modules \['action_head', "
                                         r"'proprio_projector', 'FiLM scale/shift of the vision_backbone blocks'\]"):
        export_openvla_hf(source, tmp_path / "hf")

    out = export_oft(source, tmp_path / "oft")
    components = sorted(f.name for f in out.glob("*--*checkpoint.pt"))
    assert components == ["action_head--latest_checkpoint.pt", "proprio_projector--latest_checkpoint.pt",
                          "vision_backbone--latest_checkpoint.pt"]
    head = torch.load(out / components[0], weights_only=True)
    assert "module.model.fc2.weight" in head  # DDP-prefixed, as OFT's finetune.py saves it
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["vla_config"]["action_head"] == "l1"
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        hf_names = list(f.keys())
    assert "vision_backbone.featurizer.blocks.0.attn.qkv.weight" in hf_names  # plain ViT blocks, as OFT's merged model
    assert not any(".block." in k or re.search(r"\.blocks\.\d+\.(scale|shift)\.", k) for k in hf_names)
    with pytest.raises(ValueError, match="OpenVLA-OFT policy .* load_checkpoint or vla.models.oft_format.load_oft"):
        load_openvla(out)

    loaded = load_checkpoint(out)
    assert loaded.config == source.config
    assert loaded.norm_stats == source.norm_stats and loaded.training_info == {}
    state, reference = loaded.state_dict(), source.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert torch.equal(_chunk(loaded), expected)

    export_oft(source, out, step=20)  # another step into the same directory replaces the component files
    assert sorted(f.name for f in out.glob("*--*checkpoint.pt")) == [
        "action_head--20_checkpoint.pt", "proprio_projector--20_checkpoint.pt", "vision_backbone--20_checkpoint.pt"]
    assert load_checkpoint(out).training_info == {"steps": 20}
    (out / "proprio_projector--20_checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="the component files give proprio_dim 0 .* config.json's vla_config has "
                                         "proprio_dim 8"):
        load_checkpoint(out)


def test_export_oft_refuses_token_models(tmp_path, tiny_vla):
    with pytest.raises(ValueError, match="OFT's layout holds l1-head policies; this VLA's action_head is 'tokens'"):
        export_oft(tiny_vla, tmp_path / "out")


def test_model_openvla_takes_the_head_and_data_settings(openvla_dir):
    cfg = compose_cli("train", "model=openvla", f"checkpoint={openvla_dir}", "head=l1", "head.chunk_size=4",
                      "data.image_views=[primary,wrist]", "data.proprio=true", "model.film=true")
    assert config_problems(cfg) == []
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert {k: model[k] for k in ("action_head", "chunk_size", "image_views", "use_proprio", "film")} == {
        "action_head": "l1", "chunk_size": 4, "image_views": ["primary", "wrist"], "use_proprio": True, "film": True}
    vla = build_model(cfg.model, TRAIN_STATS)
    assert (vla.config.action_head, vla.config.action_dim, vla.config.proprio_dim, vla.config.film) == ("l1", D, P, True)
    assert set(vla.norm_stats) == {"sim", "my_robot"}


def test_oft_finetune_from_openvla_weights_trains_and_exports(tmp_path, sim_data_root, openvla_dir):
    """train.py model=openvla head=l1: OFT's LoRA recipe on OpenVLA weights, exported, then written in OFT's layout."""
    from tests.test_training import compose_train
    from vla.models import load_vla
    from vla.training.run import train

    cfg = compose_train(tmp_path / "run", sim_data_root, "model=openvla", f"checkpoint={openvla_dir}", "head=l1",
                        "head.chunk_size=2", "data.image_views=[primary,wrist]", "data.proprio=true", "model.film=true",
                        "stage=lora", "stage.lora.r=4", "stage.lora.adapt_vision_and_projector=true",
                        "data.datamodule.batch_size=2", "trainer.max_steps=2", "trainer.val_check_interval=100",
                        "trainer.limit_val_batches=0", "checkpoint_every_n_steps=2", "strategy=auto",
                        "precision=32-true", "trainer.devices=1", "trainer.accumulate_grad_batches=1")
    assert np.isfinite(train(cfg)["train/loss_step"])
    tuned = load_vla(tmp_path / "run" / "export")
    assert (tuned.config.action_head, tuned.config.chunk_size, tuned.config.image_views, tuned.config.proprio_dim,
            tuned.config.film) == ("l1", 2, VIEWS, P, True)
    assert set(tuned.norm_stats) == {"sim", "vla_sim"}
    reloaded = load_checkpoint(export_oft(tuned, tmp_path / "oft"))
    assert reloaded.config == tuned.config
    assert all(torch.equal(t, tuned.state_dict()[k]) for k, t in reloaded.state_dict().items())
