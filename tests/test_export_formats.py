"""``vla-export format=vla|openvla|oft``: one command writes our layout or OpenVLA's (whose code files it copies
from the user's OpenVLA checkout), from a training checkpoint or any checkpoint ``load_checkpoint`` reads."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import compose_cli
from vla.cli import export as export_cli
from vla.models import load_checkpoint
from vla.models.io import save_vla

OPENVLA_CODE = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory, tiny_vla):
    return save_vla(tiny_vla, tmp_path_factory.mktemp("vla") / "export")


def test_openvla_format_with_the_code_of_a_checkout(tmp_path, exported_dir, tiny_vla):
    checkout = tmp_path / "openvla"
    (checkout / "prismatic" / "extern" / "hf").mkdir(parents=True)
    for name in OPENVLA_CODE:
        (checkout / "prismatic" / "extern" / "hf" / name).write_text(f"# {name}\n")
    out = export_cli(compose_cli("export", f"ckpt={exported_dir}", f"out={tmp_path / 'openvla'}", "format=openvla",
                                 f"openvla_code={checkout}"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["vision_backbone_id"] == "dinosiglip-vit-so-224px"
    assert all((out / name).is_file() for name in (*OPENVLA_CODE, "tokenizer.model", "tokenizer.json"))
    reloaded = load_checkpoint(out)
    expected = tiny_vla.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in reloaded.state_dict().items())


def test_export_options_are_checked_before_any_work(tmp_path, exported_dir):
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"format='hf' is not an export format; choose one of \['vla', 'openvla', 'oft'\]"):
        export_cli(compose_cli("export", f"ckpt={exported_dir}", f"out={out}", "format=hf"))
    with pytest.raises(Exception, match="openvla_code and tokenizer_model apply to format=openvla|oft"):
        export_cli(compose_cli("export", f"ckpt={exported_dir}", f"out={out}", f"openvla_code={tmp_path}"))
    assert not out.exists()
    with pytest.raises(Exception, match="OFT's layout holds l1-head policies"):  # a token-head model
        export_cli(compose_cli("export", f"ckpt={exported_dir}", f"out={out}", "format=oft"))
