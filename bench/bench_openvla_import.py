"""Peak memory of importing an OpenVLA HF checkpoint vs. a naive load, on random weights.

Writes a random bf16 checkpoint in OpenVLA's HF layout with the real OpenVLA-7B shapes
(DinoSigLIP-224px + Llama-2-7B, 32064-row embeddings; ``--shape 1b`` keeps one of the 32 decoder
layers, about 1.2B parameters), then imports it in fresh processes and prints peak RSS:

* ``load_openvla``: parameters on the meta device, tensors assigned one by one from the shards;
* naive: materialize the model (uninitialized bf16 storage), ``safetensors.torch.load_file`` every
  shard, then ``load_state_dict`` (two copies of the weights at the peak).

Usage: ``python bench/bench_openvla_import.py [--shape 1b|7b] [--workdir /tmp/openvla_import_bench]``.
The checkpoint is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMPORT_SNIPPET = """
import json, sys, time, torch
from vla.models.openvla_format import load_openvla
def hwm_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, inherited over exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
baseline = hwm_kb()
start = time.perf_counter()
vla = load_openvla(sys.argv[1])
seconds, peak = time.perf_counter() - start, hwm_kb()
for p in vla.parameters():  # shard pages are mapped lazily; reading every weight makes them resident
    p.sum()
print(json.dumps({"seconds": seconds, "baseline_kb": baseline, "peak_kb": peak, "touched_kb": hwm_kb(),
                  "params": sum(p.numel() for p in vla.parameters())}))
"""

NAIVE_SNIPPET = """
import json, sys, time, torch
from pathlib import Path
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM
from vla.models import build_vla
from vla.models.openvla_format import from_hf_name
path = Path(sys.argv[1])
text_config = json.loads((path / "config.json").read_text())["text_config"]
def hwm_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, inherited over exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
baseline = hwm_kb()
start = time.perf_counter()
with torch.device("meta"):
    vla = build_vla("dinosiglip-224px", "llama2-7b", tokenizer_path=str(path))
    vla.llm_backbone.llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**text_config))
vla = vla.to(torch.bfloat16).to_empty(device="cpu")  # a materialized model: the first copy
state = {}
for file in sorted(path.glob("model*.safetensors")):
    state.update({from_hf_name(k): v for k, v in load_file(str(file)).items()})  # the second copy
vla.load_state_dict(state, strict=True)
print(json.dumps({"seconds": time.perf_counter() - start, "baseline_kb": baseline,
                  "peak_kb": hwm_kb(), "touched_kb": hwm_kb(),
                  "params": sum(p.numel() for p in vla.parameters())}))
"""


def write_random_checkpoint(out: Path, num_layers: int, shard_bytes: int) -> int:
    """OpenVLA-7B-shaped random checkpoint (bf16) with OpenVLA's config fields; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    from vla.models import build_vla
    from vla.models.llm import get_llm_spec, load_tokenizer
    from vla.models.openvla_format import openvla_hf_config, to_hf_name

    out.mkdir(parents=True, exist_ok=True)
    # Llama-2's tokenizer is gated; the offline 32000-piece SentencePiece Llama tokenizer has the same size.
    tokenizer = load_tokenizer(get_llm_spec("tiny-llama"))
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    tokenizer.save_pretrained(str(out))
    with torch.device("meta"):
        skeleton = build_vla("dinosiglip-224px", "llama2-7b", tokenizer_path=str(out))
    stats = {"bridge_orig": {"action": {"q01": [-0.03] * 6 + [0.0], "q99": [0.03] * 6 + [1.0],
                                        "mask": [True] * 6 + [False]}}}
    skeleton.norm_stats = stats
    config = openvla_hf_config(skeleton)
    del config["vla_config"]  # import through OpenVLA's own ids, as for the released checkpoints
    config["text_config"] = {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16",
                             "vocab_size": 32064, "num_hidden_layers": num_layers}
    config["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2))

    kept = [f"llm_backbone.llm.model.layers.{i}." for i in range(num_layers)]
    names = [n for n in skeleton.state_dict() if ".layers." not in n or any(n.startswith(k) for k in kept)]
    shapes = {n: skeleton.state_dict()[n].shape for n in names}
    generator = torch.Generator().manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    weight_map, shard_index, total, size = {}, 1, 0, 0
    for name in names:
        tensor = torch.empty(shapes[name], dtype=torch.bfloat16).normal_(0, 0.02, generator=generator)
        shard[to_hf_name(name)] = tensor
        size += tensor.numel() * 2
        if size >= shard_bytes or name == names[-1]:
            file = f"model-{shard_index:05d}.safetensors"
            save_file(shard, str(out / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, file))
            total += size
            shard, size, shard_index = {}, 0, shard_index + 1
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def measure(snippet: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", snippet, str(path)], capture_output=True, text=True, check=True,
                            stdin=subprocess.DEVNULL)
    last = [line for line in result.stdout.splitlines() if "{" in line][-1]  # after any tokenizer prompt text
    return json.loads(last[last.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("1b", "7b"), default="1b")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/openvla_import_bench"))
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--skip-naive", action="store_true", help="only measure load_openvla")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    layers = 32 if args.shape == "7b" else 1
    start = time.perf_counter()
    size = write_random_checkpoint(args.workdir, layers, int(args.shard_gb * 2**30))
    print(f"wrote {size / 2**30:.2f} GiB ({args.shape}-shaped, {layers} decoder layers) in "
          f"{time.perf_counter() - start:.0f} s to {args.workdir}")
    try:
        rows = [("load_openvla (meta + assign)", measure(IMPORT_SNIPPET, args.workdir))]
        if not args.skip_naive:
            rows.append(("naive (materialize + load_file + load_state_dict)", measure(NAIVE_SNIPPET, args.workdir)))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir)
    print("\n| method | params | load s | RSS after imports GiB | peak RSS after load GiB | "
          "peak RSS after reading all weights GiB | (peak - imports) / checkpoint |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        base, peak, touched = (r[k] / 2**20 for k in ("baseline_kb", "peak_kb", "touched_kb"))
        print(f"| {label} | {r['params'] / 1e9:.2f} B | {r['seconds']:.1f} | {base:.2f} | {peak:.2f} | {touched:.2f} | "
              f"{(touched - base) * 2**30 / size:.2f}x |")


if __name__ == "__main__":
    main()
