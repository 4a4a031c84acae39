"""Where one ``Policy.act`` call spends its time: preprocessing, vision, prefill, each decode step, decoding.

    python bench/predict_breakdown.py --device cuda                 # DinoSigLIP-224px + Llama-2-7B shape, bf16
    python bench/predict_breakdown.py --device cpu --quick          # tiny model, float32

Each stage is timed with the device synchronized around it (median over calls), then one call runs under
``torch.profiler`` and the ops with the most self time are printed: on a GPU, host time far above device
time means the decode loop is launch-bound (Python and kernel-launch overhead), not bandwidth-bound.
``--static-decode`` also times the lever for that, ``vla.models.decoding.StaticCacheDecoder`` (a
preallocated ``StaticCache``: fixed shapes, no mask rebuilt per step), eager and with the decode step under
``torch.compile`` (``mode="reduce-overhead"``: CUDA graphs on a GPU), and checks it gives today's tokens. Random weights; the LLM shape uses the offline SentencePiece tokenizer (see gpu_check.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import (INSTRUCTION, Target, build_model, random_images, shape_only_backbones)  # noqa: E402

from vla.contract.normalization import normalization_kind, unnormalize  # noqa: E402
from vla.models.decoding import StaticCacheDecoder  # noqa: E402
from vla.models.llm import LLM_BACKBONES, register_llm_backbone  # noqa: E402
from vla.models.vla import _right_to_left_padding  # noqa: E402
from vla.policy import Policy  # noqa: E402


class StageTimer:
    """Wall-clock seconds per named stage, with the device synchronized at both ends of each stage."""

    def __init__(self, target: Target):
        self.target = target
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def __call__(self, name: str, fn, *args, **kwargs):
        self.target.sync()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.target.sync()
        self.seconds[name].append(time.perf_counter() - start)
        return result


@torch.inference_mode()
def staged_act(policy: Policy, image: np.ndarray, timer: StageTimer) -> np.ndarray:
    """``Policy.act`` split into stages (the same computation as ``VLA.generate_action_tokens``)."""
    model = policy.model
    device = next(model.parameters()).device
    inputs = timer("preprocess + tokenize", lambda: policy.processor.inference_batch([policy.preprocess(image)],
                                                                                       [INSTRUCTION]))
    inputs = timer("host -> device", lambda: {k: v.to(device) for k, v in inputs.items()})
    patches = timer("vision + projector", lambda: model.projector(model.vision_backbone(inputs["pixel_values"])))

    def assemble():
        text = model.llm_backbone.embed(inputs["input_ids"])
        embeds = torch.cat([text[:, :1], patches.to(text.dtype), text[:, 1:]], dim=1)
        ones = inputs["attention_mask"].new_ones(1, patches.shape[1])
        mask = torch.cat([inputs["attention_mask"][:, :1], ones, inputs["attention_mask"][:, 1:]], dim=1)
        return _right_to_left_padding(embeds, mask)

    embeds, mask = timer("embed + assemble", assemble)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = timer(f"prefill ({embeds.shape[1]} positions)", lambda: model.llm_backbone(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1))
    tokens = []
    for step in range(policy.action_dim()):
        token = out.logits[:, -1].argmax(dim=-1)
        tokens.append(token)
        if step == policy.action_dim() - 1:
            break
        mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = timer("decode step (x6)", lambda: model.llm_backbone(
            inputs_embeds=model.llm_backbone.embed(token[:, None]), attention_mask=mask, position_ids=positions,
            cache=out.cache, use_cache=True))
    stats = model.norm_stats[policy.resolve_unnorm_key(None)]["action"]
    return timer("detokenize + unnormalize", lambda: unnormalize(
        policy.processor.decode_actions(torch.stack(tokens, dim=1)), stats, kind=normalization_kind(stats)))


def time_static_decoding(policy: Policy, image: np.ndarray, target: Target, calls: int) -> None:
    """Median ms per decoding call (from the image) of today's path and of ``vla.models.decoding``'s
    static-cache decoder, eager and compiled, and whether each gives today's tokens."""
    model = policy.model
    inputs = policy.processor.inference_batch([policy.preprocess(image)], [INSTRUCTION])
    action_dim = policy.action_dim()
    reference = model.generate_action_tokens(**inputs, action_dim=action_dim)
    modes = [("dynamic cache (today)", model.generate_action_tokens),
             ("static cache, eager", StaticCacheDecoder(model, compile_mode=None).generate),
             ("static cache, compiled",
              StaticCacheDecoder(model, compile_mode="reduce-overhead" if target.cuda else "default").generate)]
    print("| decoding | ms per call (median) | same tokens |\n|---|---:|---|")
    for name, generate in modes:
        start = time.perf_counter()
        tokens = generate(**inputs, action_dim=action_dim)  # the first compiled call compiles
        warm = time.perf_counter() - start
        for _ in range(2):
            generate(**inputs, action_dim=action_dim)
        seconds = []
        for _ in range(calls):
            target.sync()
            start = time.perf_counter()
            tokens = generate(**inputs, action_dim=action_dim)
            target.sync()
            seconds.append(time.perf_counter() - start)
        same = bool(torch.equal(tokens.cpu(), reference.cpu()))
        print(f"| {name} (first call {warm:.1f} s) | {1000 * statistics.median(seconds):.1f} | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny model")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--static-decode", action="store_true", help="also time static-cache (+ compiled) decoding")
    args = parser.parse_args()
    target = (Target(torch.device("cuda", 0), torch.bfloat16) if args.device == "cuda"
              else Target(torch.device("cpu"), torch.float32))
    for name, spec in shape_only_backbones().items():
        if LLM_BACKBONES.get(name) != spec:
            register_llm_backbone(name, spec)
    vision, llm = ("tiny-dinosiglip-224px", "tiny-llama") if args.quick else ("dinosiglip-224px", "llama2-7b-shape")
    policy = Policy(build_model(vision, llm, target).eval().requires_grad_(False))
    (image,) = random_images(1)
    for _ in range(3):
        policy.act(image, INSTRUCTION)
    whole = []
    for _ in range(args.calls):
        start = time.perf_counter()
        expected = policy.act(image, INSTRUCTION)
        whole.append(time.perf_counter() - start)
    timer = StageTimer(target)
    for _ in range(args.calls):
        staged = staged_act(policy, image, timer)
    np.testing.assert_allclose(staged[0], expected)  # the staged copy computes what Policy.act computes
    print(f"{vision} + {llm} on {args.device} ({target.dtype}); median of {args.calls} calls")
    print(f"Policy.act: {1000 * statistics.median(whole):.1f} ms")
    print("| stage | ms (median per call) |\n|---|---:|")
    for name, seconds in timer.seconds.items():
        per_call = sum(seconds) / args.calls
        print(f"| {name} | {1000 * per_call:.1f} |")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if target.cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        policy.act(image, INSTRUCTION)
        target.sync()
    sort = "self_cuda_time_total" if target.cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15))
    if args.static_decode:
        time_static_decoding(policy, image, target, args.calls)


if __name__ == "__main__":
    main()
