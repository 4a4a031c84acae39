"""Memory levers on CPU: peak memory and step time of a 1B-class VLA's training step, with and without activation
checkpointing, LoRA vs QLoRA; then the per-parameter arithmetic that gives an OpenVLA-7B run's figures on paper.

    python bench/bench_memory.py [--batch-size 2] [--rank 32] [--steps 2] [--max-rss-gb 9]

Model: a TinyLlama-1.1B-shaped Llama (22 layers, width 2048, SwiGLU 5632, GQA 32/4 heads, random weights, offline
tokenizer) behind a SigLIP ViT-B/16 at 224 px (196 patch tokens), in bf16 throughout (Lightning's ``bf16-true``:
weights, adapters and AdamW states in bf16). Each configuration runs in its own process (peaks do not mix; glibc
gets a fixed mmap threshold so freed build-time buffers leave the resident set); the parent kills a child whose
resident set passes ``--max-rss-gb``. Peak = the process's high-water resident set (``VmHWM``, reset once the model
is built) over ``--steps`` optimizer steps; "step" memory = peak - resident before the first step (activations,
gradients, optimizer state). Step time is the last step's (the first builds kernels and the AdamW states), as
process CPU seconds on ``--threads`` torch threads (default 1): on a shared machine wall time mostly measures the
other processes; CPU time measures the work (recomputation, 4-bit dequantization).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {  # name -> (stage, activation checkpointing)
    "lora": ("lora", False),
    "lora+ckpt": ("lora", True),
    "qlora": ("qlora", False),
    "qlora+ckpt": ("qlora", True),
}
LLM_NAME = "bench-llama-1b"
LLM_SHAPE = dict(model_type="llama", hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5)
VISION = "siglip-b16-224px"
GIB = 1024**3
STATS = {"bench": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "min": [-1.0] * 7, "max": [1.0] * 7,
                              "mean": [0.0] * 7, "std": [0.5] * 7, "mask": [True] * 6 + [False]}}}


def _status_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(name: str, batch_size: int, rank: int, steps: int, threads: int) -> dict:
    """Build, set up and train ``name`` for ``steps`` steps in this process; its memory and time figures."""
    import gc

    import numpy as np
    import torch

    from vla.models import build_vla
    from vla.models.llm import LLMSpec, register_llm_backbone
    from vla.training.module import VLATrainingModule

    stage, checkpointing = CONFIGS[name]
    torch.set_num_threads(threads)
    register_llm_backbone(LLM_NAME, LLMSpec(None, LLM_SHAPE, "mistral-sp"))
    torch.manual_seed(0)  # the same random weights and adapters in every configuration
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: a float32 build would set this process's peak
    vla = build_vla(VISION, LLM_NAME, norm_stats=STATS).to(torch.bfloat16)
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in vla.parameters())  # before 4-bit packing changes what numel counts
    lora = {"r": rank, **({"compute_dtype": "bfloat16"} if stage == "qlora" else {})}
    module = VLATrainingModule(vla, stage=stage, lora=lora, activation_checkpointing=checkpointing)
    vla = module.vla
    trainable = [p for p in vla.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-5)
    rng = np.random.default_rng(0)
    size = vla.vision_backbone.image_size
    batch = vla.processor.collate([vla.processor.training_sample(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                                                 "pick up the block", rng.uniform(-1, 1, 7))
                                   for _ in range(batch_size)])
    batch = {key: value.to(torch.bfloat16) if torch.is_floating_point(value) else value for key, value in batch.items()}
    gc.collect()
    resident = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak from here on
    times, cpu_times, losses = [], [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        losses.append(float(out.loss))
    peak = _status_bytes("VmHWM")
    return {"name": name, "params": params, "trainable": sum(p.numel() for p in trainable),
            "tokens": int(batch["input_ids"].shape[1]) + vla.vision_backbone.num_patches, "layers": LLM_SHAPE["num_hidden_layers"],
            "resident_gb": resident / GIB, "peak_gb": peak / GIB, "step_gb": (peak - resident) / GIB,
            "first_step_s": times[0], "step_s": times[-1], "step_cpu_s": cpu_times[-1], "loss": losses[-1]}


def run_child(name: str, args: argparse.Namespace) -> dict:
    """``name`` in a fresh process, killed if its resident set passes ``--max-rss-gb`` (the machine is shared)."""
    import psutil

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, __file__, "--one", name, "--batch-size", str(args.batch_size), "--rank", str(args.rank),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, highest = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            highest = max(highest, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if highest > args.max_rss_gb * GIB:
            child.kill()
            child.wait()
            return {"name": name, "error": f"killed: resident set {highest / GIB:.1f} GiB > --max-rss-gb {args.max_rss_gb}"}
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        return {"name": name, "error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {child.returncode}"}
    return json.loads(stdout.strip().splitlines()[-1])


def paper_figures(rank: int) -> list[tuple[str, float, float]]:
    """(setup, model-state GB in total, GB per GPU sharded over 8) for OpenVLA-7B (DinoSigLIP + Llama-2 7B).

    Bytes per parameter: fp32 master (``32-true`` or ``strategy.mixed_precision=bf16``): weight 4 + grad 4 + AdamW
    8 = 16; ``bf16-true``: 2 + 2 + 4 = 8; frozen bf16: 2; NF4: 0.5 + one fp32 absmax per 64 weights = 0.5625
    (no double quantization, as OpenVLA). LoRA adapters (``rank``, every decoder-layer linear) and the projector train.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from vla.models.llm import get_llm_spec
    from vla.models.summary import parameter_counts

    counts = parameter_counts("dinosiglip-224px", "llama2-7b")
    spec = get_llm_spec("llama2-7b")
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(spec.architecture, vocab_size=spec.padded_vocab_size())))
    linears = [m for m in llm.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    quantizable = sum(m.weight.numel() for m in linears)
    adapters = sum(rank * (m.in_features + m.out_features) for m in linears)
    total, projector = counts["total"], counts["projector"]
    trainable = adapters + projector
    rows = [
        ("full fine-tune, fp32 master (32-true / mixed_precision=bf16)", 16 * total),
        ("full fine-tune, bf16-true", 8 * total),
        (f"LoRA r={rank} (bf16 base frozen)", 2 * total + 8 * trainable),
        (f"QLoRA r={rank} (NF4 decoder linears)", 0.5625 * quantizable + 2 * (total - quantizable) + 8 * trainable),
    ]
    print(f"\nOpenVLA-7B on paper: {total / 1e9:.2f}B parameters ({quantizable / 1e9:.2f}B in decoder-layer linears), "
          f"{trainable / 1e6:.0f}M trainable with LoRA r={rank} (adapters {adapters / 1e6:.0f}M + projector {projector / 1e6:.0f}M)")
    return [(setup, nbytes / 1e9, nbytes / 8 / 1e9) for setup, nbytes in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-rss-gb", type=float, default=9.0, help="GiB")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per configuration (CPU time is the cost measure)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--one", choices=tuple(CONFIGS), help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.batch_size, args.rank, args.steps, args.threads)))
        return

    load_before = os.getloadavg()
    results = {}
    for name in args.configs.split(","):
        results[name] = run_child(name, args)
        print(json.dumps(results[name]), flush=True)
    load_after = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"\n{cpu}, {os.cpu_count()} cores; load average before {load_before[0]:.2f} / after {load_after[0]:.2f} "
          f"(1 min); batch {args.batch_size}, LoRA r={args.rank}, bf16, {args.threads} torch thread(s)")
    print("\n| config | params | trainable | tokens/sample | resident before step (GiB) | peak (GiB) | step memory (GiB) "
          "| step CPU (s) | step wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | {r['error']} ||||||||")
            continue
        print(f"| {name} | {r['params'] / 1e9:.2f}B | {r['trainable'] / 1e6:.1f}M | {r['tokens']} | {r['resident_gb']:.2f} | "
              f"{r['peak_gb']:.2f} | {r['step_gb']:.2f} | {r['step_cpu_s']:.1f} | {r['step_s']:.1f} |")

    def ratio(a: str, b: str, key: str) -> str:
        ok = a in results and b in results and "error" not in results[a] and "error" not in results[b]
        return f"{results[a][key] / results[b][key]:.2f}x" if ok else "n/a"

    print("\n| ratio | step memory | peak | step CPU time | resident before step |\n|---|---:|---:|---:|---:|")
    for a, b in (("lora+ckpt", "lora"), ("qlora+ckpt", "qlora"), ("qlora", "lora"), ("qlora+ckpt", "lora+ckpt")):
        print(f"| {a} / {b} | {ratio(a, b, 'step_gb')} | {ratio(a, b, 'peak_gb')} | {ratio(a, b, 'step_cpu_s')} | "
              f"{ratio(a, b, 'resident_gb')} |")

    figures = paper_figures(args.rank)
    print("\n| setup (model state: weights + grads + AdamW) | total (GB) | per GPU, FSDP over 8 (GB) |\n|---|---:|---:|")
    for setup, total, per_gpu in figures:
        print(f"| {setup} | {total:.1f} | {per_gpu:.1f} |")
    print("FSDP shards model state over the shard group: full sharding over 16 GPUs (2 nodes) halves the last column; "
          "HSDP (2 nodes x 8) keeps it, and only gradients cross nodes.")
    if all(n in results and "error" not in results[n] for n in ("lora", "lora+ckpt")):
        off, on = results["lora"], results["lora+ckpt"]
        saved = (off["step_gb"] - on["step_gb"]) * GIB / (args.batch_size * off["tokens"] * off["layers"] * LLM_SHAPE["hidden_size"])
        tokens_7b, batch_7b, layers_7b, width_7b = 256 + 30, 16, 32, 4096  # OpenVLA: 256 patches + prompt, 16 per GPU
        print(f"Activations: checkpointing saved {saved:.1f} bytes per token x layer x hidden unit here; at OpenVLA-7B's shape "
              f"(~{tokens_7b} tokens, batch {batch_7b} per GPU, {layers_7b} layers x {width_7b}) that is "
              f"~{saved * tokens_7b * batch_7b * layers_7b * width_7b / 1e9:.0f} GB per GPU saved (LLM only).")


if __name__ == "__main__":
    main()
