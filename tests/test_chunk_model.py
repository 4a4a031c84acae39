"""Action-chunk VLAs (OpenVLA-OFT, docs/action-chunks.md): config, l1 head, views, proprio, FiLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla.contract.prompt import IGNORE_INDEX
from vla.models import VLA, ChunkOutput, VLAConfig, build_vla, load_vla, save_vla
from vla.models.vision import VisionBackbone

K, D, P = 3, 7, 8
STATS = {"sim": {"action": {"q01": [-1.0] * D, "q99": [1.0] * D}, "proprio": {"q01": [-1.0] * P, "q99": [1.0] * P}}}
VIEWS = ("primary", "wrist")


def _image(seed: int, size: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _chunk_vla(seed: int = 0, **overrides) -> VLA:
    """A tiny l1 model with two views, proprio and FiLM (112 px: 64 patches per view)."""
    kwargs = dict(norm_stats=STATS, action_head="l1", chunk_size=K, image_views=VIEWS, use_proprio=True, film=True)
    torch.manual_seed(seed)
    return build_vla("tiny-dinosiglip-112px", "tiny-llama", **{**kwargs, **overrides}).eval()


def _batch(vla: VLA, instructions=("pick up the cup", "put the red block on the plate")) -> dict:
    rng = np.random.default_rng(1)
    views = len(vla.config.image_views)
    samples = []
    for i, text in enumerate(instructions):
        images = [_image(10 * i + v) for v in range(views)]
        proprio = rng.uniform(-1, 1, P) if vla.config.proprio_dim else None
        samples.append(vla.processor.training_sample(images, text, rng.uniform(-1, 1, (K, D)), proprio=proprio))
    return vla.processor.collate(samples)


def _chunk_inputs(batch: dict) -> dict:
    keys = ("pixel_values", "input_ids", "attention_mask", "action_mask", "proprio")
    return {k: batch[k] for k in keys if k in batch}


# ------------------------------------------------------------------ config
def test_chunk_config_fields_validate_and_name_the_problem():
    base = dict(vision_backbone="tiny-siglip-224px", llm_backbone="tiny-llama")
    with pytest.raises(ValueError, match=r"Unknown action_head 'mse'.*\['l1', 'tokens'\]"):
        VLAConfig(**base, action_head="mse")
    with pytest.raises(ValueError, match="chunk_size 8 needs a chunked action_head.*'tokens' predicts one step"):
        VLAConfig(**base, chunk_size=8)
    with pytest.raises(ValueError, match="chunk_size .* integer >= 1, got 0"):
        VLAConfig(**base, action_head="l1", action_dim=7, chunk_size=0)
    with pytest.raises(ValueError, match="action_head 'l1' needs action_dim"):
        VLAConfig(**base, action_head="l1", chunk_size=8)
    with pytest.raises(ValueError, match="action_dim .* integer >= 1 or null, got 0"):
        VLAConfig(**base, action_dim=0)
    with pytest.raises(ValueError, match=r"Unknown image view 'left'.*\['primary', 'secondary', 'wrist'\]"):
        VLAConfig(**base, image_views=("primary", "left"))
    with pytest.raises(ValueError, match=r"image_views .* repeat \['wrist'\]"):
        VLAConfig(**base, image_views=["wrist", "primary", "wrist"])
    with pytest.raises(ValueError, match="image_views .* non-empty list"):
        VLAConfig(**base, image_views=())
    with pytest.raises(ValueError, match="image_views .* non-empty list"):
        VLAConfig(**base, image_views="primary")
    with pytest.raises(ValueError, match="proprio_dim .* >= 0, got -1"):
        VLAConfig(**base, proprio_dim=-1)
    with pytest.raises(ValueError, match="film .* true or false, got 'yes'"):
        VLAConfig(**base, film="yes")
    with pytest.raises(ValueError, match="attn_implementation 'flash_attention_2' cannot take the l1 head's 4-D"):
        VLAConfig(**base, action_head="l1", action_dim=7, attn_implementation="flash_attention_2")
    assert VLAConfig(**base, action_head="l1", action_dim=7, attn_implementation="auto").llm_attn_implementation == "sdpa"
    assert VLAConfig(**base, image_views=["wrist", "primary"]).image_views == ("wrist", "primary")


def test_chunk_config_saves_non_default_fields_only_and_loads_old_files():
    config = VLAConfig("tiny-siglip-224px", "tiny-llama", action_head="l1", chunk_size=8, action_dim=7,
                       image_views=("primary", "wrist"), proprio_dim=8, film=True)
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["image_views"] == ["primary", "wrist"] and saved["chunk_size"] == 8 and saved["film"] is True
    assert VLAConfig.from_dict(saved) == config
    plain = VLAConfig("tiny-siglip-224px", "tiny-llama")
    assert not set(plain.to_dict()) & {"action_head", "chunk_size", "action_dim", "image_views", "proprio_dim", "film"}
    old = VLAConfig.from_dict(plain.to_dict())
    assert (old.action_head, old.chunk_size, old.action_dim, old.image_views, old.proprio_dim, old.film) == \
        ("tokens", 1, None, ("primary",), 0, False)


def test_build_vla_sizes_actions_and_proprio_from_the_statistics():
    vla = _chunk_vla()
    assert (vla.config.action_dim, vla.config.proprio_dim, vla.config.chunk_size) == (D, P, K)
    assert vla.num_prefix_tokens == 2 * vla.num_patches + 1
    other = {"action": {"q01": [0.0] * 6, "q99": [1.0] * 6}}
    with pytest.raises(ValueError, match=r"Datasets disagree on their action size \(action_dim\): \{'other': 6, 'sim': 7\}"):
        build_vla("tiny-siglip-224px", "tiny-llama", norm_stats={**STATS, "other": other}, action_head="l1")
    with pytest.raises(ValueError, match="Dataset 'other' has no 'proprio' statistics"):
        build_vla("tiny-siglip-224px", "tiny-llama", norm_stats={"other": other}, use_proprio=True)
    with pytest.raises(ValueError, match="no norm_stats were given; pass norm_stats or action_dim"):
        build_vla("tiny-siglip-224px", "tiny-llama", action_head="l1")
    assert build_vla("tiny-siglip-224px", "tiny-llama", norm_stats={"other": other}, action_head="l1",
                     action_dim=6, chunk_size=2).config.action_dim == 6


# ------------------------------------------------------------------ the tokens head stays OpenVLA
def test_tokens_head_is_unchanged(tiny_vla):
    torch.manual_seed(0)
    explicit = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=tiny_vla.norm_stats, action_head="tokens",
                         chunk_size=1, image_views=["primary"], use_proprio=False, film=False).eval()
    assert list(explicit.state_dict()) == list(tiny_vla.state_dict())
    for (name, ours), theirs in zip(explicit.state_dict().items(), tiny_vla.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert not hasattr(tiny_vla, "action_head") and not hasattr(tiny_vla, "proprio_projector")
    inputs = tiny_vla.processor.inference_batch([_image(3, 224)], ["open the drawer"])
    vla = tiny_vla
    # The pre-chunk computation, written out: [BOS] + patches + prompt through the LLM.
    text = vla.llm_backbone.embed(inputs["input_ids"])
    patches = vla.projector(vla.vision_backbone(inputs["pixel_values"])).to(text.dtype)
    embeds = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)
    mask = torch.cat([inputs["attention_mask"][:, :1], torch.ones(1, patches.shape[1], dtype=torch.long),
                      inputs["attention_mask"][:, 1:]], dim=1)
    with torch.no_grad():
        expected = vla.llm_backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        logits = vla(**inputs).logits
        five_d = vla(inputs["pixel_values"][:, None], inputs["input_ids"], inputs["attention_mask"]).logits
    assert torch.equal(logits, expected) and torch.equal(five_d, expected)
    assert torch.equal(vla.generate_action_tokens(**inputs), explicit.generate_action_tokens(**inputs))


def test_tokens_head_takes_views_proprio_and_film():
    vla = _chunk_vla(action_head="tokens", chunk_size=1)
    assert not hasattr(vla, "action_head") and hasattr(vla, "proprio_projector")
    rng = np.random.default_rng(0)
    samples = [vla.processor.training_sample([_image(i), _image(i + 1)], text, rng.uniform(-1, 1, D),
                                             proprio=rng.uniform(-1, 1, P))
               for i, text in enumerate(["pick up the cup", "stack the red block on the blue one"])]
    batch = vla.processor.collate(samples)
    out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"], proprio=batch["proprio"])
    assert torch.isfinite(out.loss) and out.targets.numel() == 2 * (D + 1)
    out.loss.backward()
    assert vla.vision_backbone.featurizer.blocks[0].scale.weight.grad is not None
    assert vla.proprio_projector.fc1.weight.grad is not None
    # FiLM's instruction is the prompt: a training sequence (prompt + action tokens) conditions the vision
    # backbone exactly as the inference prompt alone does.
    inference = vla.processor.inference_batch([[_image(0), _image(1)]], ["pick up the cup"], proprio=[np.zeros(P)])
    one = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        train_embeds, _, _ = vla.embed_multimodal(one["pixel_values"], one["input_ids"], one["attention_mask"], one["labels"],
                                                  proprio=one["proprio"])
        infer_embeds, _, _ = vla.embed_multimodal(inference["pixel_values"], inference["input_ids"],
                                                  inference["attention_mask"], proprio=one["proprio"])
    patches = slice(1, 1 + 2 * vla.num_patches)
    assert torch.allclose(train_embeds[:, patches], infer_embeds[:, patches], atol=1e-6)
    tokens = vla.generate_action_tokens(**inference, action_dim=D)
    assert tokens.shape == (1, D)
    with pytest.raises(ValueError, match="predict_action_chunk needs a chunk head"):
        vla.predict_action_chunk(**inference, action_mask=torch.zeros_like(inference["input_ids"], dtype=torch.bool))


# ------------------------------------------------------------------ the l1 head
def test_attention_is_bidirectional_over_each_rows_unpadded_positions():
    """OpenVLA-OFT's layout: every position sees every unpadded one (earlier placeholders see later ones, the
    prompt sees the placeholders and the stop token); padding and other rows are never seen."""
    for attn in ("sdpa", "eager"):
        vla = _chunk_vla(attn_implementation=attn, film=False)
        assert vla.llm_backbone.llm.config._attn_implementation == attn
        batch = _batch(vla)
        with torch.no_grad():
            embeds, mask, _ = vla.embed_multimodal(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                                   proprio=batch["proprio"], action_mask=batch["action_mask"])
            placeholders = torch.cat([batch["action_mask"][:, :1], torch.zeros(2, vla.num_prefix_tokens, dtype=torch.bool),
                                      batch["action_mask"][:, 1:]], dim=1)
            attention = vla._chunk_attention_mask(mask, embeds.dtype)

            def hidden(x):
                return vla.llm_backbone.llm.model(inputs_embeds=x, attention_mask=attention).last_hidden_state

            positions = placeholders[0].nonzero().squeeze(1)
            first, last = int(positions[0]), int(positions[-1])
            length = int(mask[0].sum())
            assert torch.equal(embeds[0, first], torch.zeros_like(embeds[0, first]))  # zero input embeddings
            assert batch["input_ids"][0, int(batch["action_mask"][0].nonzero()[-1]) + 1] == vla.prompt_tokenizer.eos_token_id
            reference = hidden(embeds)
            changed = embeds.clone()
            changed[0, last] = torch.randn_like(changed[0, last])
            after = hidden(changed)
            assert (after[0, first] - reference[0, first]).abs().max() > 1e-4  # an earlier placeholder sees a later one
            assert (after[0, 1] - reference[0, 1]).abs().max() > 1e-4  # so does the prefix
            assert torch.allclose(after[1], reference[1], atol=1e-6, rtol=0)  # another row does not
            if length < mask.shape[1]:  # padding is seen by no unpadded position
                changed = embeds.clone()
                changed[0, length:] = torch.randn_like(changed[0, length:])
                assert torch.allclose(hidden(changed)[0, :length], reference[0, :length], atol=1e-6, rtol=0)


def test_attention_mask_layout():
    vla = _chunk_vla(film=False)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    allowed = vla._chunk_attention_mask(mask, torch.float32)[:, 0]
    expected_row0 = torch.tensor([[1, 1, 1, 1, 0]] * 4 + [[1, 1, 1, 1, 1]])
    assert torch.equal(allowed[0].long(), expected_row0)  # padded key masked; the padded query sees itself
    assert bool(allowed[1].all())


def test_batched_prediction_matches_one_at_a_time():
    vla = _chunk_vla()
    images = [[_image(1), _image(2)], [_image(3), _image(4)]]
    texts = ["pick up the cup", "put the red block on the blue plate and then wait"]
    proprio = [np.full(P, 0.5), np.full(P, -0.25)]
    batch = vla.processor.inference_batch(images, texts, proprio=proprio)
    together = vla.predict_action_chunk(**batch)
    assert together.shape == (2, K, D) and together.dtype == torch.float32
    for i in range(2):
        alone = vla.predict_action_chunk(**vla.processor.inference_batch(images[i:i + 1], texts[i:i + 1],
                                                                         proprio=proprio[i:i + 1]))
        assert torch.allclose(alone[0], together[i], atol=1e-5), i


def test_forward_returns_a_chunk_output_with_mean_l1_loss():
    vla = _chunk_vla()
    batch = _batch(vla)
    out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"], proprio=batch["proprio"],
              action_mask=batch["action_mask"], actions=batch["actions"])
    assert isinstance(out, ChunkOutput) and out.predicted.shape == (2, K, D)
    assert torch.allclose(out.loss, (out.predicted - batch["actions"]).abs().mean())
    assert ChunkOutput().loss is None and ChunkOutput().predicted is None
    with torch.no_grad():
        assert torch.allclose(vla.predict_action_chunk(**_chunk_inputs(batch)), out.predicted, atol=1e-6)
    assert vla(**_chunk_inputs(batch)).loss is None


def test_regression_loss_choices():
    vla = _chunk_vla()
    batch = _batch(vla)
    inputs = dict(proprio=batch["proprio"], action_mask=batch["action_mask"], actions=batch["actions"])
    args = (batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    mse = vla(*args, regression_loss="mse", **inputs)
    assert torch.allclose(mse.loss, (mse.predicted - batch["actions"]).square().mean())
    assert not torch.allclose(mse.loss, vla(*args, **inputs).loss)  # the default stays OFT's L1
    with pytest.raises(ValueError, match=r"regression_loss must be one of \['l1', 'mse'\], got 'huber'"):
        vla(*args, regression_loss="huber", **inputs)


def test_chunk_metrics_count_real_steps_only():
    vla = _chunk_vla(film=False)
    predicted = torch.zeros(2, K, D)
    actions = torch.ones(2, K, D)
    actions[:, :, 0] = 3.0  # dim 0 errs by 3, the rest by 1
    actions[1, 2] = 100.0  # a padded step: must not count
    pad = torch.tensor([[False, False, False], [False, False, True]])
    metrics = vla.chunk_metrics(ChunkOutput(predicted=predicted, actions=actions), pad)
    assert torch.allclose(metrics["l1"], torch.tensor((3 + 6) / 7))
    assert torch.allclose(metrics["l1_per_dim"], torch.tensor([3.0] + [1.0] * 6))
    assert torch.allclose(metrics["l1_per_step"], torch.full((K,), (3 + 6) / 7))
    assert metrics["count"] == 5 and metrics["count_per_step"].tolist() == [2, 2, 1]


def test_overfits_one_batch():
    vla = _chunk_vla().train()
    batch = _batch(vla)
    optimizer = torch.optim.AdamW(vla.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], proprio=batch["proprio"],
                  action_mask=batch["action_mask"], actions=batch["actions"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_save_and_load_round_trip(tmp_path):
    vla = _chunk_vla()
    batch = _batch(vla)
    loaded = load_vla(save_vla(vla, tmp_path / "export"))
    assert loaded.config == vla.config and list(loaded.state_dict()) == list(vla.state_dict())
    saved = json.loads((tmp_path / "export" / "vla_config.json").read_text())
    assert saved["image_views"] == list(VIEWS) and saved["action_head"] == "l1" and saved["proprio_dim"] == P
    assert torch.equal(loaded.predict_action_chunk(**_chunk_inputs(batch)), vla.predict_action_chunk(**_chunk_inputs(batch)))
    card = (tmp_path / "export" / "README.md").read_text()
    assert "OpenVLA-OFT" in card and "| action head | `l1` |" in card and "`primary`, `wrist`" in card


def test_chunk_model_input_errors():
    vla = _chunk_vla()
    inputs = _chunk_inputs(_batch(vla))
    with pytest.raises(ValueError, match=r"pixel_values hold 1 view\(s\) per example but this VLA takes 2"):
        vla.predict_action_chunk(**{**inputs, "pixel_values": inputs["pixel_values"][:, 0]})
    with pytest.raises(ValueError, match="this VLA takes proprio .* pass proprio"):
        vla.predict_action_chunk(**{**inputs, "proprio": None})
    fewer = inputs["action_mask"].clone()
    fewer[0, int(fewer[0].nonzero()[0])] = False
    with pytest.raises(ValueError, match=r"every row needs chunk_size x action_dim = 3 x 7 = 21 placeholders"):
        vla.predict_action_chunk(**{**inputs, "action_mask": fewer})
    with pytest.raises(ValueError, match=r"action_mask must have input_ids' shape"):
        vla.predict_action_chunk(**{**inputs, "action_mask": inputs["action_mask"][:, :-1]})
    with pytest.raises(ValueError, match="'l1' head needs action_mask"):
        vla(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], proprio=inputs["proprio"])
    with pytest.raises(ValueError, match="generate_action_tokens needs the 'tokens' head"):
        vla.generate_action_tokens(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])


# ------------------------------------------------------------------ FiLM
def test_film_keeps_the_feature_layer_and_is_identity_at_zero():
    torch.manual_seed(0)
    backbone = VisionBackbone("tiny-dinosiglip-112px").eval()
    images = torch.from_numpy(np.stack([_image(1), _image(2)])).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        plain = backbone(images)
        backbone.add_film(llm_dim=16)
        language = torch.randn(2, 16)
        filmed = backbone(images, language)
        assert not torch.allclose(filmed, plain, atol=1e-4)  # the instruction changes the features
        for name, param in backbone.named_parameters():
            if ".scale." in name or ".shift." in name:
                param.zero_()
        assert torch.allclose(backbone(images, language), plain, atol=1e-6)
    assert "featurizer.blocks.0.block.attn.qkv.weight" in dict(backbone.named_parameters())  # OFT's names
    with pytest.raises(ValueError, match="has FiLM: its forward needs the instruction embedding"):
        backbone(images)
    unused = {id(p) for p in backbone.unused_parameters()}
    last = backbone.featurizer.blocks[-1]
    assert id(last.scale.weight) in unused and id(backbone.featurizer.blocks[-2].scale.weight) not in unused


def test_film_conditions_on_the_instruction():
    vla = _chunk_vla()
    batch = vla.processor.inference_batch([[_image(1), _image(2)]] * 2, ["pick up the cup", "open the drawer"],
                                          proprio=[np.zeros(P)] * 2)
    with torch.no_grad():
        embeds, _, _ = vla.embed_multimodal(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                            proprio=batch["proprio"], action_mask=batch["action_mask"])
    patches = embeds[:, 1:1 + 2 * vla.num_patches]
    assert (patches[0] - patches[1]).abs().max() > 1e-4  # same images, different instructions
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    with torch.no_grad():
        again, _, _ = vla.embed_multimodal(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], labels,
                                           proprio=batch["proprio"], action_mask=batch["action_mask"])
    assert torch.equal(again, embeds)  # all-ignored labels (l1 training) condition as inference does
