"""OpenVLA's own HF code on the versions it pins reads what ``export_openvla_hf`` writes.

The reference runs in another interpreter (tests/openvla_reference.py), one whose environment has OpenVLA's pins:
transformers 4.40.1, tokenizers 0.19.1, timm 0.9.10 (and torch). Two environment variables say where things are;
each test skips when what it needs is absent:

* ``VLA_OPENVLA_PYTHON``: that interpreter (default ``/tmp/ov440/bin/python``);
* ``VLA_OPENVLA_SRC``: an OpenVLA checkout, whose ``prismatic/extern/hf/`` holds ``configuration_prismatic.py``,
  ``modeling_prismatic.py`` and ``processing_prismatic.py`` (default ``/tmp/openvla_src``); the export copies
  them next to the weights (``openvla_code``), as a user would.

Checked: 4.40.1's tokenizers (fast and SentencePiece) read the exported files and give our prompt ids; its
``LlamaConfig`` defaults (what OpenVLA fills ``text_config`` gaps with) are the ones we fill them with; and
``AutoModelForVision2Seq.from_pretrained(export, trust_remote_code=True)`` + its processor + ``predict_action``
give our ``Policy``'s actions. OpenVLA's ``PrismaticVisionBackbone`` calls ``timm.create_model(timm_id,
img_size=..., act_layer=...)`` with no architecture arguments, so it cannot build the project's ``tiny-*``
towers (real timm ids with fewer, narrower blocks) from ``timm_model_ids``: the reference registers the shrunken
architectures with timm and points the config at them; everything else runs unchanged. OpenVLA's
``predict_action`` appends Llama-2's "▁" id (29871) to the prompt, so that model uses a tokenizer whose "▁" has
that id (the tiny SentencePiece model with two pieces swapped).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sentencepiece import sentencepiece_model_pb2
from transformers import LlamaConfig, LlamaTokenizer

from vla.models import build_vla, export_openvla_hf
from vla.models.llm import get_llm_spec, sentencepiece_model_file
from vla.models.vision import get_vision_spec
from vla.policy import Policy

OPENVLA_PYTHON = Path(os.environ.get("VLA_OPENVLA_PYTHON", "/tmp/ov440/bin/python"))
OPENVLA_SRC = Path(os.environ.get("VLA_OPENVLA_SRC", "/tmp/openvla_src"))
OPENVLA_CODE = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
REFERENCE = Path(__file__).with_name("openvla_reference.py")
LLAMA2_SPACE_ID = 29871  # what OpenVLA's predict_action appends
INSTRUCTIONS = ["Pick up the red block", "open the drawer", "put the cup in the sink, then close it!"]


@pytest.fixture(scope="session")
def pinned_python() -> Path:
    """The interpreter with OpenVLA's pinned versions (skips the test where there is none)."""
    if not os.access(OPENVLA_PYTHON, os.X_OK):
        pytest.skip(f"no interpreter at {OPENVLA_PYTHON} (set VLA_OPENVLA_PYTHON)")
    probe = "import timm, tokenizers, transformers; print(transformers.__version__, tokenizers.__version__, timm.__version__)"
    result = subprocess.run([str(OPENVLA_PYTHON), "-c", probe], capture_output=True, text=True, env=_reference_env())
    found = result.stdout.split() if result.returncode == 0 else result.stderr[-200:]
    if found != ["4.40.1", "0.19.1", "0.9.10"]:
        pytest.skip(f"{OPENVLA_PYTHON} lacks transformers 4.40.1 / tokenizers 0.19.1 / timm 0.9.10 ({found})")
    return OPENVLA_PYTHON


@pytest.fixture(scope="session")
def openvla_code() -> Path:
    """The OpenVLA checkout holding its HF modules (skips the test where there is none)."""
    missing = [name for name in OPENVLA_CODE if not (OPENVLA_SRC / "prismatic" / "extern" / "hf" / name).is_file()]
    if missing:
        pytest.skip(f"OpenVLA's {missing} not under {OPENVLA_SRC}/prismatic/extern/hf (set VLA_OPENVLA_SRC)")
    return OPENVLA_SRC


def _reference_env() -> dict[str, str]:
    # No project paths; offline; transformers 4.40.1 must not import TensorFlow (installed system-wide, it
    # crashes the interpreter when loaded next to torch's Triton).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "USE_TF": "0", "USE_FLAX": "0", "USE_TORCH": "1"}


def _reference(python: Path, request: dict) -> dict:
    result = subprocess.run([str(python), str(REFERENCE), json.dumps(request)], capture_output=True,
                            text=True, env=_reference_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pinned_tokenizers_read_the_export_and_give_our_prompt_ids(pinned_python, tmp_path, tiny_vla):
    out = export_openvla_hf(tiny_vla, tmp_path / "export")
    prompts = tiny_vla.processor.prompt_tokenizer
    theirs = _reference(pinned_python, {"check": "tokenizer", "dir": str(out), "texts": [prompts.prompt_text(t) for t in INSTRUCTIONS]})
    assert theirs["fast"]["class"] == "LlamaTokenizerFast" and theirs["slow"]["class"] == "LlamaTokenizer"
    for kind in ("fast", "slow"):
        # OpenVLA's processor adds BOS; our prompt ids also end with the "▁" token predict_action appends
        assert theirs[kind]["ids"] == [prompts.prompt_ids(t)[:-1] for t in INSTRUCTIONS], kind
        assert theirs[kind]["pad_token_id"] == tiny_vla.tokenizer.pad_token_id == 32000
        assert theirs[kind]["length"] == len(tiny_vla.tokenizer)


def test_pinned_llama_defaults_are_the_ones_we_fill_text_config_with(pinned_python):
    theirs = _reference(pinned_python, {"check": "llama_defaults"})
    ours = LlamaConfig().to_dict()
    ours["rope_theta"] = ours["rope_parameters"]["rope_theta"]
    assert theirs == {key: ours.get(key) for key in theirs}


@pytest.fixture(scope="module")
def llama2_space_tokenizer(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny SentencePiece model with "▁" moved to Llama-2's id 29871 (swapped with the piece there), and the
    tokenizer directory transformers 5 makes of it."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sentencepiece_model_file(get_llm_spec("tiny-llama")).read_bytes())
    space = next(i for i, piece in enumerate(proto.pieces) if piece.piece == "▁")
    first, second = (sentencepiece_model_pb2.ModelProto.SentencePiece() for _ in range(2))
    first.CopyFrom(proto.pieces[space])
    second.CopyFrom(proto.pieces[LLAMA2_SPACE_ID])
    proto.pieces[space].CopyFrom(second)
    proto.pieces[LLAMA2_SPACE_ID].CopyFrom(first)
    source = tmp_path_factory.mktemp("sentencepiece")
    (source / "tokenizer.model").write_bytes(proto.SerializeToString())
    out = tmp_path_factory.mktemp("tokenizer")
    LlamaTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return source / "tokenizer.model", out


@pytest.mark.slow
def test_openvlas_code_loads_the_export_and_predicts_our_actions(pinned_python, openvla_code, tmp_path,
                                                                 llama2_space_tokenizer, tiny_vla):
    sentencepiece_file, tokenizer_dir = llama2_space_tokenizer
    torch.manual_seed(0)
    vla = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=tiny_vla.norm_stats,
                    tokenizer_path=str(tokenizer_dir)).eval()
    assert vla.llm_backbone.space_token_id == LLAMA2_SPACE_ID
    actions = vla.action_tokenizer
    with torch.no_grad():  # only action tokens can win, so the actions follow image and instruction
        vla.llm_backbone.llm.lm_head.weight[: actions.vocab_size - actions.n_bins] = 0
        vla.llm_backbone.llm.lm_head.weight[actions.vocab_size:] = 0
    out = export_openvla_hf(vla, tmp_path / "export", openvla_code=openvla_code, tokenizer_model=sentencepiece_file)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((224, 224, 3), (180, 240, 3), (224, 224, 3))]
    cases = []
    for i, (image, instruction) in enumerate(zip(images, INSTRUCTIONS)):
        np.save(tmp_path / f"image{i}.npy", image)
        cases.append({"image": str(tmp_path / f"image{i}.npy"), "instruction": instruction})
    spec = get_vision_spec(vla.config.vision_backbone)
    theirs = _reference(pinned_python, {"check": "predict", "dir": str(out), "cases": cases, "unnorm_key": "sim",
                         "tiny_timm": [[timm_id, spec.overrides] for timm_id in spec.timm_ids]})
    assert theirs["model_class"] == "OpenVLAForActionPrediction"
    assert theirs["loading_info"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    ours = Policy(vla).predict_batch(images, INSTRUCTIONS, "sim")
    assert len({tuple(a) for a in ours.tolist()}) > 1  # the comparison can tell models apart
    np.testing.assert_array_equal(np.array(theirs["actions"]), ours)
    assert theirs["input_ids"] == [vla.processor.prompt_tokenizer.prompt_ids(t)[:-1] for t in INSTRUCTIONS]
