"""The reference side of tests/test_openvla_interop.py: OpenVLA's own HF code on the versions it pins.

Run with the interpreter of an environment holding transformers 4.40.1, tokenizers 0.19.1 and timm 0.9.10
(``VLA_OPENVLA_PYTHON``), never imported by pytest: ``python openvla_reference.py '<json request>'`` prints one
JSON line. It imports nothing from ``vla``; OpenVLA's modules are loaded from the export directory, where the
export copied them (``auto_map`` names them locally).

Requests (``check``):

* ``tokenizer``: ``AutoTokenizer`` (fast, and the SentencePiece slow one) from ``dir``; the ids of ``texts``.
* ``llama_defaults``: ``LlamaConfig()``'s architecture fields (what OpenVLA fills ``text_config`` gaps with).
* ``predict``: ``AutoModelForVision2Seq.from_pretrained(dir, trust_remote_code=True)`` and its processor, then
  ``predict_action`` for each of ``cases`` (an RGB image in a .npy file and an instruction). ``tiny_timm``
  ([timm id, architecture overrides] per featurizer) registers those shrunken ViTs with timm and points the
  config's ``timm_model_ids`` at them: OpenVLA's code calls ``timm.create_model(id, img_size, act_layer)``
  and has no way to pass the overrides the project's ``tiny-*`` test backbones use.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ARCHITECTURE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "vocab_size",
                     "rope_theta", "attention_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id")


def tokenizer_ids(directory: str, texts: list[str]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    ids = {}
    for kind, use_fast in (("fast", True), ("slow", False)):
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=use_fast)
        ids[kind] = {"class": type(tokenizer).__name__, "ids": [tokenizer(text).input_ids for text in texts],
                     "pad_token_id": tokenizer.pad_token_id, "length": len(tokenizer)}
    return ids


def llama_defaults() -> dict[str, Any]:
    from transformers import LlamaConfig

    defaults = LlamaConfig().to_dict()
    return {key: defaults.get(key) for key in ARCHITECTURE_KEYS}


def register_tiny_vits(tiny_timm: list[list[Any]]) -> list[str]:
    """timm model names for shrunken copies of the given timm architectures (same code, fewer/smaller blocks)."""
    import timm
    from timm.models import register_model

    names = []
    for index, (timm_id, overrides) in enumerate(tiny_timm):
        def build(pretrained: bool = False, timm_id: str = timm_id, overrides: dict = overrides, **kwargs: Any):
            return timm.create_model(timm_id, pretrained=False, **{**overrides, **kwargs})

        build.__name__ = f"vla_tiny_featurizer_{index}"
        register_model(build)
        names.append(build.__name__)
    return names


def predict(directory: str, cases: list[dict[str, str]], unnorm_key: str | None,
            tiny_timm: list[list[Any]] | None) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModelForVision2Seq, AutoProcessor

    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    if tiny_timm:
        config.timm_model_ids = register_tiny_vits(tiny_timm)
    model, info = AutoModelForVision2Seq.from_pretrained(directory, config=config, trust_remote_code=True,
                                                        output_loading_info=True)
    model.eval()
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
    actions, input_ids = [], []
    for case in cases:
        image = Image.fromarray(np.load(case["image"]))
        prompt = f"In: What action should the robot take to {case['instruction'].lower()}?\nOut:"  # OpenVLA's README
        inputs = processor(prompt, image)
        with torch.no_grad():
            actions.append(np.asarray(model.predict_action(**inputs, unnorm_key=unnorm_key, do_sample=False)).tolist())
        input_ids.append(inputs["input_ids"][0].tolist())
    return {"actions": actions, "input_ids": input_ids, "model_class": type(model).__name__,
            "loading_info": {k: sorted(map(str, v)) for k, v in info.items()},
            "timm_model_ids": list(config.timm_model_ids)}


def main(request: dict[str, Any]) -> dict[str, Any]:
    check = request["check"]
    if check == "tokenizer":
        return tokenizer_ids(request["dir"], request["texts"])
    if check == "llama_defaults":
        return llama_defaults()
    if check == "predict":
        return predict(request["dir"], request["cases"], request.get("unnorm_key"), request.get("tiny_timm"))
    raise ValueError(f"Unknown check {check!r}")


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
