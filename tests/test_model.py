"""Model core: shapes, label masking, inference semantics, learning, and input validation."""

import copy
import json
import warnings

import numpy as np
import pytest
import torch

from vla.contract.prompt import IGNORE_INDEX, openvla_prompt
from vla.models import VLA, VLAConfig, build_projector, build_vla, load_checkpoint, load_vla, save_vla
from vla.models.summary import parameter_counts
from vla.contract.image_transform import ImageTransform
from vla.models.vision import VisionBackbone
from vla.policy import Policy


def _image(seed: int = 0, shape=(180, 240, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _batch(vla: VLA, n: int = 2):
    rng = np.random.default_rng(1)
    samples = [
        vla.processor.training_sample(_image(i), f"pick up the {c} block", rng.uniform(-1, 1, 7))
        for i, c in zip(range(n), ["red", "blue green", "yellow", "purple"])
    ]
    return vla.processor.collate(samples)


def test_prompt_layout_and_label_masking(tiny_vla):
    tok = tiny_vla.tokenizer
    actions = np.array([-1.0, 0.0, 0.5, 1.0, 0.2, -0.3, 1.0])
    ids, labels = tiny_vla.prompt_tokenizer.training_example("Pick Up The Cup", tiny_vla.action_tokenizer.encode(actions))
    prompt_ids = tiny_vla.prompt_tokenizer.prompt_ids("Pick Up The Cup")
    assert ids[0].item() == tok.bos_token_id
    assert tok.decode(ids[1 : len(prompt_ids)]) .startswith("In: What action should the robot take to pick up the cup?\nOut:")
    assert ids[len(prompt_ids) - 1].item() == tok.convert_tokens_to_ids("▁")  # the empty-space token
    assert ids[-1].item() == tok.eos_token_id
    assert (labels[: len(prompt_ids)] == IGNORE_INDEX).all()
    assert labels[len(prompt_ids):].tolist() == [31999, 31872, 31808, 31744, *tiny_vla.action_tokenizer.encode(actions[4:]).tolist(), 2]


def test_openvla_prompt_text_and_empty_instruction():
    assert openvla_prompt("Open The Drawer") == "In: What action should the robot take to open the drawer?\nOut:"
    with pytest.raises(ValueError, match="empty"):
        openvla_prompt("   ")


def test_forward_backward_shapes_and_patch_labels(tiny_vla):
    vla = copy.deepcopy(tiny_vla).train()
    batch = _batch(vla, 3)
    assert batch["pixel_values"].shape == (3, 3, 224, 224) and batch["pixel_values"].dtype == torch.uint8
    out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    vocab = vla.llm_backbone.llm.get_input_embeddings().num_embeddings
    assert vla.num_patches == 256
    assert out.logits.shape == (3 * 8, vocab) and out.targets.shape == (3 * 8,)  # labelled positions only
    with torch.no_grad():
        full = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    assert full.logits.shape == (3, batch["input_ids"].shape[1] + vla.num_patches, vocab)
    out.loss.backward()
    grads = {n: p.grad for n, p in vla.named_parameters()}
    for prefix in ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.", "projector.fc1", "projector.fc3", "llm_backbone.llm.model.layers.1."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    # Patch positions carry no labels: the multimodal labels ignore exactly [1, 1 + num_patches).
    _, mask, mm_labels = vla.embed_multimodal(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert (mm_labels[:, 1 : 1 + vla.num_patches] == IGNORE_INDEX).all()
    assert (mm_labels[:, 1 + vla.num_patches :] == batch["labels"][:, 1:]).all()
    assert mask.shape == mm_labels.shape
    n_labelled = (batch["labels"] != IGNORE_INDEX).sum(dim=1)
    assert n_labelled.tolist() == [8, 8, 8]  # 7 action tokens + stop token


def test_loss_equals_manual_cross_entropy_on_action_tokens(tiny_vla):
    batch = _batch(tiny_vla, 2)
    with torch.no_grad():
        out = tiny_vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        full = tiny_vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    _, _, mm_labels = tiny_vla.embed_multimodal(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    logits = full.logits[:, :-1].reshape(-1, full.logits.shape[-1]).float()
    manual = torch.nn.functional.cross_entropy(logits, mm_labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_predict_action_finite_deterministic_and_batch_consistent(tiny_vla):
    img = _image(3)
    a1 = Policy(tiny_vla).act(img, "push the red block to the left")
    a2 = Policy(tiny_vla).act(img, "push the red block to the left")
    assert a1.shape == (7,) and a1.dtype == np.float64 and np.isfinite(a1).all()
    np.testing.assert_array_equal(a1, a2)
    # The gripper dim is masked out of normalization: it stays a bin centre in [-1, 1].
    assert -1 <= a1[6] <= 1
    batch = Policy(tiny_vla).predict_batch([img, _image(4, (64, 64, 3))], ["push the red block to the left", "go"])
    np.testing.assert_array_equal(batch[0], a1)
    np.testing.assert_array_equal(batch[1], Policy(tiny_vla).act(_image(4, (64, 64, 3)), "go"))


def test_kv_cache_decoding_matches_full_recompute(tiny_vla):
    img = _image(5)
    tokens = tiny_vla.generate_action_tokens(**tiny_vla.processor.inference_batch([img], ["stack the cups"]), action_dim=7)[0]
    pixel = tiny_vla.image_transform(img)[None]
    ids = torch.tensor(tiny_vla.prompt_tokenizer.prompt_ids("stack the cups"))[None]
    expected = []
    with torch.no_grad():
        for _ in range(7):
            logits = tiny_vla(pixel, ids).logits
            nxt = logits[0, -1].argmax()
            expected.append(nxt.item())
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    assert tokens.tolist() == expected


def test_unnormalization_uses_statistics_and_mask(tiny_vla):
    tokens = tiny_vla.generate_action_tokens(**tiny_vla.processor.inference_batch([_image(6)], ["lift"]), action_dim=7)[0].numpy()
    normalized = tiny_vla.action_tokenizer.decode(tokens)
    stats = tiny_vla.norm_stats["sim"]["action"]
    expected = normalized.copy()
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    expected[:6] = 0.5 * (normalized[:6] + 1) * (q99[:6] - q01[:6]) + q01[:6]
    np.testing.assert_allclose(Policy(tiny_vla).act(_image(6), "lift"), expected, rtol=0, atol=1e-12)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    vla = build_vla("tiny-dinosiglip-224px", "tiny-llama").train()
    batch = _batch(vla, 2)
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] / 10, losses[::5]
    out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    metrics = vla.action_metrics(out.logits, out.targets)
    assert metrics["count"].item() == 14 and metrics["accuracy"].item() > 0.3  # chance is 1/256


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((32, 32, 3), dtype=np.float32), "dtype uint8"),
        (np.zeros((32, 32), dtype=np.uint8), "HxWx3"),
        (np.zeros((32, 32, 4), dtype=np.uint8), "3 \\(RGB\\) channels"),
        (np.zeros((3, 32, 32), dtype=np.uint8), "3 \\(RGB\\) channels"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_rejected(tiny_vla, image, match):
    with pytest.raises(ValueError, match=match):
        Policy(tiny_vla).act(image, "go")


def test_bad_instruction_and_unnorm_key(tiny_vla):
    with pytest.raises(ValueError, match="instruction is empty"):
        Policy(tiny_vla).act(_image(), "")
    with pytest.raises(ValueError, match="Unknown unnorm_key 'bridge'.*sim"):
        Policy(tiny_vla).act(_image(), "go", unnorm_key="bridge")


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Unknown vision backbone 'dinosiglip-999px'.*registered"):
        VisionBackbone("dinosiglip-999px")
    with pytest.raises(ValueError, match="Unknown llm_backbone 'llama9-70b'.*tiny-llama"):
        build_vla("tiny-dinosiglip-224px", "llama9-70b")
    with pytest.raises(ValueError, match="Unknown projector"):
        build_projector("transformer", 8, 8)
    with pytest.raises(ValueError, match="resize strategy"):
        ImageTransform(224, [(0.5,) * 3], [(0.5,) * 3], "crop")


def test_projector_shapes_follow_openvla():
    fused = build_projector("fused-gelu-mlp", 2176, 4096)
    assert (fused.fc1.in_features, fused.fc1.out_features) == (2176, 4 * 2176)
    assert (fused.fc2.in_features, fused.fc2.out_features) == (4 * 2176, 4096)
    assert (fused.fc3.in_features, fused.fc3.out_features) == (4096, 4096)
    assert build_projector("gelu-mlp", 1152, 4096).fc2.in_features == 4096


def test_image_transform_views_and_letterbox():
    t = ImageTransform(224, [(0.485, 0.456, 0.406), (0.5, 0.5, 0.5)], [(0.229, 0.224, 0.225), (0.5, 0.5, 0.5)])
    white = np.full((100, 300, 3), 255, dtype=np.uint8)
    assert t(white).shape == (3, 224, 224) and t(white).dtype == torch.uint8
    x = t.normalize(t(white))
    assert x.shape == (6, 224, 224)  # fused: DINOv2 + SigLIP views
    assert torch.allclose(x[0], torch.full((224, 224), (1 - 0.485) / 0.229))
    assert torch.allclose(x[3], torch.ones(224, 224))
    letterbox = ImageTransform(224, [(0.5, 0.5, 0.5)], [(0.5, 0.5, 0.5)], "letterbox")
    boxed = letterbox.normalize(letterbox(white))
    assert boxed[0, 0, 112].item() < 0.1 and boxed[0, 112, 112].item() == pytest.approx(1.0)  # padded top, image centre


def test_112px_backbone_sees_64_patches_of_any_input_size():
    vla = build_vla("tiny-dinosiglip-112px", "tiny-llama")
    assert vla.num_patches == 64  # (112 / 14)^2, vs 256 at 224 px
    sample = vla.processor.training_sample(np.zeros((224, 224, 3), np.uint8), "move", np.zeros(7))
    assert sample["pixel_values"].shape == (3, 112, 112)
    assert vla.vision_backbone(sample["pixel_values"][None]).shape == (1, 64, vla.vision_backbone.embed_dim)


def test_parameter_counts_from_configs_without_weights():
    openvla = parameter_counts("dinosiglip-224px", "llama2-7b", "fused-gelu-mlp")
    assert openvla["total"] == 7_541_237_184  # OpenVLA-7B
    assert openvla["llm"] == 6_738_939_904  # Llama-2 7B with embeddings padded to 32064
    tiny = parameter_counts("tiny-dinosiglip-224px", "tiny-llama")
    assert tiny["total"] == sum(p.numel() for p in build_vla("tiny-dinosiglip-224px", "tiny-llama").parameters())


def test_actions_can_depend_on_the_image_alone():
    """Same instruction, a red square on the left vs the right: the model must read the image."""
    torch.manual_seed(0)
    vla = build_vla("tiny-dinosiglip-224px", "tiny-llama").train()

    def square_at(x: int) -> np.ndarray:
        image = np.full((224, 224, 3), 128, np.uint8)
        image[100:130, x : x + 30] = (255, 0, 0)
        return image

    batch = vla.processor.collate([
        vla.processor.training_sample(square_at(20), "do it", np.full(7, -0.4)),
        vla.processor.training_sample(square_at(170), "do it", np.full(7, 0.4)),
    ])
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-3)
    for _ in range(100):
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    vla.eval()
    left = vla.generate_action_tokens(**vla.processor.inference_batch([square_at(20)], ["do it"]))[0]
    right = vla.generate_action_tokens(**vla.processor.inference_batch([square_at(170)], ["do it"]))[0]
    np.testing.assert_allclose(vla.action_tokenizer.decode(left.numpy()), -0.4, atol=2 / 255)
    np.testing.assert_allclose(vla.action_tokenizer.decode(right.numpy()), 0.4, atol=2 / 255)


def _outputs(vla: VLA) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-sequence logits and greedy action tokens for a fixed input."""
    inputs = vla.processor.inference_batch([_image(7)], ["open the drawer"])
    with torch.no_grad():
        logits = vla(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]).logits
    return logits, vla.generate_action_tokens(**inputs)


def test_directly_built_vla_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    config = VLAConfig("tiny-siglip-224px", "tiny-llama", projector="gelu-mlp", image_resize_strategy="letterbox",
                       n_action_bins=128)
    vla = VLA(config, norm_stats={"sim": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}}}).eval()
    assert vla.config is config and vla.model_id == "tiny-siglip-224px+tiny-llama"
    loaded = load_vla(save_vla(vla, tmp_path / "export"))
    assert loaded.config == config and loaded.norm_stats == vla.norm_stats
    for ours, theirs in zip(_outputs(vla), _outputs(loaded)):
        assert torch.equal(ours, theirs)


# vla_config.json and the .ckpt ["vla"]["config"] entry as train.py/export wrote them before VLAConfig.
OLD_SAVED_CONFIG = {"vision_backbone": "tiny-dinosiglip-224px", "llm_backbone": "tiny-llama", "projector": "fused-gelu-mlp",
                    "image_resize_strategy": "resize-naive", "n_action_bins": 256,
                    "model_id": "tiny-dinosiglip-224px+tiny-llama", "attn_implementation": "sdpa"}


def test_configs_saved_before_vla_config_still_load(tmp_path, tiny_vla):
    assert tiny_vla.config.to_dict() == OLD_SAVED_CONFIG  # the saved format is unchanged
    export = save_vla(tiny_vla, tmp_path / "export")
    (export / "vla_config.json").write_text(json.dumps(OLD_SAVED_CONFIG))
    ckpt = tmp_path / "last.ckpt"
    torch.save({"vla": {"config": OLD_SAVED_CONFIG, "norm_stats": tiny_vla.norm_stats, "stage": "full", "lora": None},
                "state_dict": {f"vla.{k}": v for k, v in tiny_vla.state_dict().items()}}, ckpt)
    expected = _outputs(tiny_vla)
    for loaded in (load_checkpoint(export), load_checkpoint(ckpt)):
        assert loaded.config == tiny_vla.config
        for ours, theirs in zip(expected, _outputs(loaded)):
            assert torch.equal(ours, theirs)


def test_vla_config_validation_names_the_field():
    with pytest.raises(ValueError, match="Unknown projector 'mlp'.*fused-gelu-mlp"):
        VLAConfig("tiny-siglip-224px", "tiny-llama", projector="mlp")
    with pytest.raises(ValueError, match="Unknown attn_implementation 'fast'.*sdpa"):
        VLAConfig("tiny-siglip-224px", "tiny-llama", attn_implementation="fast")
    with pytest.raises(ValueError, match="n_action_bins .* >= 2"):
        VLAConfig("tiny-siglip-224px", "tiny-llama", n_action_bins=1)
    with pytest.raises(ValueError, match=r"Unknown VLA config keys \['pretrained_llm'\]"):
        VLAConfig.from_dict({**OLD_SAVED_CONFIG, "pretrained_llm": True})
    with pytest.raises(ValueError, match=r"lacks required keys \['llm_backbone'\]"):
        VLAConfig.from_dict({"vision_backbone": "tiny-siglip-224px"})
    pretrained = VLAConfig("tiny-siglip-224px", "tiny-llama", pretrained_vision=True, pretrained_llm=True)
    assert "pretrained_vision" not in pretrained.to_dict() and VLAConfig.from_dict(pretrained.to_dict()).pretrained_llm is False


def test_action_decoding_uses_no_deprecated_transformers_api(tiny_vla):
    inputs = tiny_vla.processor.inference_batch([_image(8)], ["close the drawer"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_vla.generate_action_tokens(**inputs)
    deprecations = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, [str(w.message) for w in deprecations]


def test_export_explains_itself_with_a_model_card(tmp_path, tiny_vla):
    from vla.models import save_vla

    training = {"data": "sim", "mixture": {"vla_sim": 1.0}, "stage": "vla-full-train", "steps": 12,
                "metrics": {"val/loss": 1.5, "val/action_accuracy": 0.25}}
    card = (save_vla(tiny_vla, tmp_path / "export", training=training) / "README.md").read_text()
    total = sum(p.numel() for p in tiny_vla.parameters())
    assert card.startswith(f"# {tiny_vla.model_id}") and f"| total | | {total:,} |" in card
    assert "| `sim` | 7 | 1111110 |" in card  # unnorm key, action dim, mask
    assert "optimizer steps: 12" in card and "| val/action_accuracy | 0.2500 |" in card
    assert f"vla-serve checkpoint={tmp_path / 'export'}" in card and "load_policy(" in card
    untrained = (save_vla(tiny_vla, tmp_path / "bare") / "README.md").read_text()
    assert "Not recorded" in untrained
