"""Turn a checkpoint into a standalone model directory: ``vla-export ckpt=<path> out=<dir> [format=...]``.

``format=vla`` (default) writes our layout (:mod:`vla.models.io`: safetensors + config + tokenizer +
dataset_statistics.json + model card), LoRA merged, which eval and serve load without training code.
``format=openvla`` writes OpenVLA's HF layout (:func:`vla.models.openvla_format.export_openvla_hf`), which
OpenVLA's own code loads with ``AutoModelForVision2Seq.from_pretrained(out, trust_remote_code=True)`` once its
three HF modules lie next to the weights: ``openvla_code=<OpenVLA checkout>`` copies them there.
``format=oft`` writes OpenVLA-OFT's layout for ``l1``-head models (:func:`vla.models.oft_format.export_oft`).

``ckpt`` is a train.py ``.ckpt`` or anything :func:`vla.models.load_checkpoint` reads (an exported directory,
an OpenVLA/OFT/Prismatic checkpoint), so a model also moves between layouts.
"""

from __future__ import annotations

from pathlib import Path

from vla.models.checkpoints import load_checkpoint, load_training_checkpoint
from vla.models.io import save_vla
from vla.models.oft_format import export_oft
from vla.models.openvla_format import export_openvla_hf

FORMATS = ("vla", "openvla", "oft")


def export_checkpoint(ckpt: str | Path, out: str | Path, format: str = "vla", openvla_code: str | Path | None = None,
                      tokenizer_model: str | Path | None = None) -> Path:
    """Export ``ckpt`` to the directory ``out`` in ``format`` (:data:`FORMATS`); returns it.

    ``openvla_code`` (an OpenVLA checkout, or the folder holding its ``configuration_prismatic.py``,
    ``modeling_prismatic.py``, ``processing_prismatic.py``) and ``tokenizer_model`` (the SentencePiece model to
    ship; default: the tokenizer's own) apply to the OpenVLA-family formats only.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not an export format; choose one of {list(FORMATS)}")
    if format == "vla" and (openvla_code is not None or tokenizer_model is not None):
        raise ValueError("openvla_code and tokenizer_model apply to format=openvla|oft (OpenVLA's HF layout); "
                         "format=vla writes our own layout")
    path = Path(ckpt)
    model = load_training_checkpoint(path) if path.suffix == ".ckpt" else load_checkpoint(path)
    if format == "vla":
        out_dir = save_vla(model, out, training=model.training_info)
    elif format == "openvla":
        out_dir = export_openvla_hf(model, out, openvla_code=openvla_code, tokenizer_model=tokenizer_model)
    else:
        out_dir = export_oft(model, out, openvla_code=openvla_code, tokenizer_model=tokenizer_model)
    print(f"Exported {ckpt} -> {out_dir} ({format} format)")
    return out_dir
