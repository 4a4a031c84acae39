"""Action-chunk head (OFT's parallel decoding + L1 head) vs OpenVLA's token head: inference and training cost.

    python bench/bench_chunks.py [--chunk-size 8] [--calls 10] [--steps 8]

Table 1: actions/s of ``Policy.predict_batch`` at batch 1 and 8: the token head emits one action per
call (D greedy decoding steps after the prefill), the chunk head K actions per call (one forward pass).
Same backbones, random weights, on the tiny model and on DinoSigLIP-224px + tiny Llama (real vision shapes).
Table 2: training step time per sample (forward + backward + AdamW, stage vla-full-train) of both heads
on the same backbones and batch: the chunk head predicts K x D values per sample, the token head D.
Both tables print the load average; each ratio is measured within this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from vla.models import build_vla
from vla.policy import Policy
from vla.training.stages import apply_stage

INSTRUCTION = "pick up the red block"
ACTION_DIM = 7
STATS = {"sim": {"action": {"q01": [-1.0] * ACTION_DIM, "q99": [1.0] * ACTION_DIM, "min": [-1.0] * ACTION_DIM,
                            "max": [1.0] * ACTION_DIM, "mean": [0.0] * ACTION_DIM, "std": [1.0] * ACTION_DIM,
                            "mask": [True] * (ACTION_DIM - 1) + [False]}}}
BACKBONES = [("tiny-dinosiglip-224px", "tiny-llama"), ("dinosiglip-224px", "tiny-llama")]


def build(vision: str, llm: str, head: str, chunk_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"action_head": "l1", "chunk_size": chunk_size} if head == "l1" else {}
    return build_vla(vision, llm, norm_stats=STATS, **extra)


def actions_per_second(policy: Policy, batch: int, calls: int) -> float:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(batch)]
    instructions = [INSTRUCTION] * batch
    actions = policy.predict_batch(images, instructions)  # warm-up; its shape says how many actions a call gives
    policy.predict_batch(images, instructions)
    per_call = actions.shape[0] * (actions.shape[1] if actions.ndim == 3 else 1)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.predict_batch(images, instructions)
        seconds.append(time.perf_counter() - start)
    return per_call / statistics.median(seconds)


def training_seconds_per_sample(vla: torch.nn.Module, batch_size: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    processor = vla.processor
    chunk = vla.config.action_head == "l1"
    samples = []
    for _ in range(batch_size):
        image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        action = rng.uniform(-1, 1, (vla.config.chunk_size, ACTION_DIM) if chunk else ACTION_DIM)
        samples.append(processor.training_sample(image, INSTRUCTION, action))
    batch = processor.collate(samples)
    apply_stage(vla, "vla-full-train")
    vla.train()
    optimizer = torch.optim.AdamW([p for p in vla.parameters() if p.requires_grad], lr=1e-4)
    extra = {"action_mask": batch["action_mask"], "actions": batch["actions"]} if chunk else {}
    seconds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"], **extra)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    print(f"\n| backbones | batch | token head actions/s | chunk head (K={args.chunk_size}) actions/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for vision, llm in BACKBONES:
        policies = {head: Policy(build(vision, llm, head, args.chunk_size).eval().requires_grad_(False))
                    for head in ("tokens", "l1")}
        for batch in (1, 8):
            tokens = actions_per_second(policies["tokens"], batch, args.calls)
            chunks = actions_per_second(policies["l1"], batch, args.calls)
            print(f"| {vision} + {llm} | {batch} | {tokens:.1f} | {chunks:.1f} | {chunks / tokens:.1f}x |", flush=True)
    print(f"\n| backbones | batch | token head ms/sample | chunk head (K={args.chunk_size}) ms/sample | ratio |")
    print("|---|---:|---:|---:|---:|")
    for vision, llm in BACKBONES:
        tokens = training_seconds_per_sample(build(vision, llm, "tokens", 1), args.train_batch, args.steps)
        chunks = training_seconds_per_sample(build(vision, llm, "l1", args.chunk_size), args.train_batch, args.steps)
        print(f"| {vision} + {llm} | {args.train_batch} | {1000 * tokens:.1f} | {1000 * chunks:.1f} | "
              f"{chunks / tokens:.2f}x |", flush=True)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
