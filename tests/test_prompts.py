"""Prismatic's prompt builders (pure, vicuna-v15, llama2-chat): exact text, token layout, labels.

Formats from openvla/openvla ``prismatic/models/backbones/llm/prompting/*.py`` (``get_prompt()``
after the human turn), ``prismatic/vla/datasets/datasets.py`` (``RLDSBatchTransform``: the full
two-turn conversation tokenized with BOS, labels on the last ``D + 1`` ids only) and
``vla-scripts/deploy.py`` (the v01 / vicuna prompt written out by hand).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla.contract.prompt import (
    IGNORE_INDEX, LLAMA2_CHAT_SYSTEM_PROMPT, PROMPT_STYLES, VICUNA_V15_SYSTEM_PROMPT, PromptTokenizer, openvla_prompt,
)
from vla.models.llm import LLM_BACKBONES, LLMSpec, get_llm_spec, load_tokenizer, register_llm_backbone

INSTRUCTION = "Put The Bowl On The Plate"
EXPECTED = {
    "pure": "In: What action should the robot take to put the bowl on the plate?\nOut:",
    "vicuna-v15": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: What action should the robot take to put "
        "the bowl on the plate? ASSISTANT:"
    ),
    "llama2-chat": (
        "[INST] <<SYS>\nYou are a helpful language and vision assistant. You are able to understand the visual "
        "content that the user provides, and assist the user with a variety of tasks using natural language.\n"
        "<</SYS>>\n\nWhat action should the robot take to put the bowl on the plate? [/INST]"
    ),
}
ACTION_IDS = np.array([31744, 31800, 31872, 31900, 31950, 31999, 31744])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(get_llm_spec("tiny-llama"))


def prompt_tokenizer(tokenizer, style: str) -> PromptTokenizer:
    return PromptTokenizer(tokenizer, tokenizer.bos_token_id, tokenizer.eos_token_id,
                           tokenizer.convert_tokens_to_ids("▁"), style=style)


def prismatic_conversation(style: str, instruction: str, action_text: str) -> str:
    """What a Prismatic prompt builder's ``get_prompt()`` returns after (human, gpt) turns, re-derived
    from its wrap functions: wrap_human(msg) + wrap_gpt(actions) with BOS removed and rstrip()."""
    msg = f"What action should the robot take to {instruction.lower()}?"
    human = {
        "pure": f"In: {msg}\nOut: ",
        "vicuna-v15": f"{VICUNA_V15_SYSTEM_PROMPT.strip()} USER: {msg} ASSISTANT: ",
        "llama2-chat": f"[INST] <<SYS>\n{LLAMA2_CHAT_SYSTEM_PROMPT.strip()}\n<</SYS>>\n\n{msg} [/INST] ",
    }[style]
    return (human + f"{action_text}</s>").rstrip()


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_prompt_text_is_prismatic_get_prompt(style):
    assert openvla_prompt(INSTRUCTION, style) == EXPECTED[style]
    # get_prompt() after only the human turn: the conversation minus the model's turn, stripped
    assert prismatic_conversation(style, INSTRUCTION, "").removesuffix("</s>").rstrip() == EXPECTED[style]


def test_vicuna_prompt_matches_openvla_deploy_v01():
    system = ("A chat between a curious user and an artificial intelligence assistant. "
              "The assistant gives helpful, detailed, and polite answers to the user's questions.")
    deploy = f"{system} USER: What action should the robot take to {INSTRUCTION.lower()}? ASSISTANT:"
    assert openvla_prompt(INSTRUCTION, "vicuna-v15") == deploy


def test_default_style_is_pure_and_unknown_styles_are_refused(tokenizer):
    assert openvla_prompt(INSTRUCTION) == EXPECTED["pure"]
    assert PromptTokenizer(tokenizer, 1, 2, 3).style == "pure"
    with pytest.raises(ValueError, match="prompt style"):
        openvla_prompt(INSTRUCTION, "chatml")
    with pytest.raises(ValueError, match="prompt style"):
        PromptTokenizer(tokenizer, 1, 2, 3, style="chatml")
    with pytest.raises(ValueError, match="prompt style"):
        LLMSpec(None, {}, "mistral-sp", prompt_style="chatml")
    for style in PROMPT_STYLES:
        with pytest.raises(ValueError, match="empty"):
            openvla_prompt("  ", style)


@pytest.mark.parametrize("style", PROMPT_STYLES)
@pytest.mark.parametrize("predict_stop_token", [True, False])
def test_training_example_layout_and_labels(tokenizer, style, predict_stop_token):
    pt = prompt_tokenizer(tokenizer, style)
    input_ids, labels = pt.training_example(INSTRUCTION, ACTION_IDS, predict_stop_token)
    text_ids = tokenizer(EXPECTED[style], add_special_tokens=False)["input_ids"]
    space = tokenizer.convert_tokens_to_ids("▁")
    assert text_ids[-1] != space  # every style's prompt ends in a non-space token (":" or "]")
    expected = [tokenizer.bos_token_id, *text_ids, space, *ACTION_IDS.tolist(), tokenizer.eos_token_id]
    assert input_ids.tolist() == expected
    n_labelled = len(ACTION_IDS) + (1 if predict_stop_token else 0)
    assert (labels[: len(expected) - len(ACTION_IDS) - 1] == IGNORE_INDEX).all()
    assert labels[labels != IGNORE_INDEX].tolist() == expected[-len(ACTION_IDS) - 1:][:n_labelled]
    # Inference prompt: the same ids up to (and including) the space token
    assert pt.prompt_ids(INSTRUCTION) == expected[: -len(ACTION_IDS) - 1]


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_training_ids_equal_prismatic_tokenization_of_the_conversation(tokenizer, style):
    """RLDSBatchTransform tokenizes get_prompt() of the whole conversation (action characters as text)
    with BOS; building the ids directly gives the same sequence."""
    action_text = tokenizer.decode(ACTION_IDS.tolist())
    text = prismatic_conversation(style, INSTRUCTION, action_text)
    # Llama-2's tokenizer adds BOS and reads "</s>" as EOS; the offline tokenizer does neither, so do it here
    assert text.endswith("</s>")
    reference = [tokenizer.bos_token_id, *tokenizer(text.removesuffix("</s>"), add_special_tokens=False)["input_ids"],
                 tokenizer.eos_token_id]
    input_ids, labels = prompt_tokenizer(tokenizer, style).training_example(INSTRUCTION, ACTION_IDS)
    assert input_ids.tolist() == reference
    ref_labels = torch.tensor(reference)
    ref_labels[: -(len(ACTION_IDS) + 1)] = IGNORE_INDEX
    assert torch.equal(labels, ref_labels)


def test_pure_ids_are_pinned(tokenizer):
    """The pure (OpenVLA-7B) layout is unchanged: ids pinned before prompt styles existed."""
    pt = prompt_tokenizer(tokenizer, "pure")
    assert pt.prompt_ids("open the drawer") == PURE_OPEN_THE_DRAWER_IDS
    assert pt.prompt_ids("open the drawer") == PromptTokenizer(tokenizer, pt.bos_token_id, pt.eos_token_id,
                                                               pt.space_token_id).prompt_ids("open the drawer")


# [BOS] "In: What action should the robot take to open the drawer?\nOut:" [space], offline tokenizer
PURE_OPEN_THE_DRAWER_IDS = [1, 560, 28747, 1824, 2992, 1023, 272, 18401, 1388, 298, 1565, 272, 27673, 28804, 13, 2919,
                            28747, 28705]


def test_prompt_style_comes_from_the_llm_backbone(tiny_vla):
    assert get_llm_spec("llama2-7b").prompt_style == "pure"
    assert get_llm_spec("vicuna-v15-7b").prompt_style == "vicuna-v15"
    assert get_llm_spec("tiny-llama").prompt_style == "pure"
    assert get_llm_spec("qwen25-0_5b").prompt_style == "pure"
    assert tiny_vla.prompt_tokenizer.style == "pure"
    assert tiny_vla.processor.prompt_tokenizer.style == "pure"


def test_vicuna_backbone_prompts_in_training_inference_and_after_export(tmp_path):
    """A backbone whose spec says vicuna-v15 prompts that way in training samples and inference
    batches, and its exported copy (same backbone name) does too."""
    from vla.models import build_vla, load_vla, save_vla

    name = "test-tiny-vicuna"
    if name not in LLM_BACKBONES:
        tiny = get_llm_spec("tiny-llama")
        register_llm_backbone(name, LLMSpec(None, tiny.architecture, tiny.tokenizer, prompt_style="vicuna-v15"))
    torch.manual_seed(0)
    vla = build_vla("tiny-dinosiglip-224px", name).eval()
    tok = vla.tokenizer
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    sample = vla.processor.training_sample(image, INSTRUCTION, rng.uniform(-1, 1, 7))
    prompt = [tok.bos_token_id, *tok(EXPECTED["vicuna-v15"], add_special_tokens=False)["input_ids"],
              tok.convert_tokens_to_ids("▁")]
    assert sample["input_ids"][: len(prompt)].tolist() == prompt
    assert (sample["labels"] != IGNORE_INDEX).sum() == 8
    batch = vla.processor.inference_batch([image], [INSTRUCTION])
    assert batch["input_ids"][0].tolist() == prompt

    save_vla(vla, tmp_path / "export")
    loaded = load_vla(tmp_path / "export")
    assert loaded.prompt_tokenizer.style == "vicuna-v15"
    assert loaded.processor.inference_batch([image], [INSTRUCTION])["input_ids"].tolist() == batch["input_ids"].tolist()
