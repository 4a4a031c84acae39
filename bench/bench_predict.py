"""predict_action on CPU: ours vs OpenVLA's own HF code on the same weights, and inference levers.

    python bench/bench_predict.py --openvla-python /tmp/ov440/bin/python --openvla-src /tmp/openvla_src
    python bench/bench_predict.py --quick          # tiny vision towers: a smoke run of every code path

(``OPENVLA_PYTHON`` / ``OPENVLA_SRC`` work as the flags; without them the OpenVLA row is skipped.)

Model: DinoSigLIP-224px (the real ViT-L/14 DINOv2 + SO400M SigLIP shapes, the cost of a CPU call) + a
tiny Llama with the 32064-row vocabulary, random weights, float32. It is exported in OpenVLA's HF
layout and loaded in a subprocess running OpenVLA's pinned environment (``--openvla-python``:
transformers 4.40.1, timm 0.9.10) with ``OpenVLAForActionPrediction`` imported from OpenVLA's
``prismatic/extern/hf/modeling_prismatic.py`` (``--openvla-src``). Its call is what OpenVLA's
deploy does: ``PrismaticImageProcessor`` on the PIL image, then ``predict_action(do_sample=False)``
on the prompt ids our processor made (the tokenizer call, well under 1 ms, is left out of its time).
Ours is ``Policy.act`` on the numpy frame. Both run with ``--threads`` threads, never at the same
time: timing rounds alternate between the two processes, and each lever of ours gets its calls in
every round, so load changes on a shared CPU hit every row alike. Ratios are of medians.

Levers (ours): bf16 vision towers (``Policy(vision_dtype="bfloat16")``), bf16 everything (what
``load_policy(dtype="bfloat16")`` gives), int8 dynamic quantization of the towers' Linear layers,
timm attention without SDPA, channels-last, ``torch.compile`` (inductor, opt-in: ``--levers ...
compile`` for the float32 towers, ``bf16-vision-compile``; inductor with ``freezing``, compile time
reported apart). Each is checked against float32 on ``--cases`` random
images: how many of the 7 action tokens differ.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import INSTRUCTION, Target, build_model  # noqa: E402

from vla.models.llm import LLM_BACKBONES, get_llm_spec, register_llm_backbone  # noqa: E402
from vla.models.openvla_format import export_openvla_hf  # noqa: E402
from vla.policy import Policy  # noqa: E402

# The offline SentencePiece tokenizer's "▁" is id 28705, but OpenVLA's predict_action appends Llama-2's
# "▁" (id 29871) to any prompt not ending with it. The benchmark LLM's space token is the piece at 29871,
# so both codes decode from the very same ids, as they do for OpenVLA-7B's real Llama-2 tokenizer.
BENCH_LLM = "tiny-llama-llama2-space"
LLAMA2_SPACE_ID = 29871
LEVERS = ("fp32", "bf16-vision", "bf16-all", "int8-vision", "no-sdpa", "channels-last", "compile", "bf16-vision-compile")
DEFAULT_LEVERS = LEVERS[:-2]

WORKER = r"""
import json, statistics, sys, time
import numpy as np, torch
from PIL import Image
export_dir, openvla_src, threads, cases_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, openvla_src)
from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig
from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor
torch.set_num_threads(threads)
start = time.perf_counter()
config = OpenVLAConfig.from_pretrained(export_dir)
model = OpenVLAForActionPrediction.from_pretrained(export_dir, config=config, torch_dtype=torch.float32,
                                                   attn_implementation="sdpa").eval()
image_processor = PrismaticImageProcessor.from_pretrained(export_dir)
cases = np.load(cases_file)
images, input_ids, unnorm_key = cases["images"], torch.from_numpy(cases["input_ids"])[None], str(cases["unnorm_key"])
generated = []
generate = model.generate
def recording_generate(*args, **kwargs):  # this instance only: keep the token ids predict_action decodes
    out = generate(*args, **kwargs)
    generated.append(out)
    return out
model.generate = recording_generate
def act(index):
    pixel_values = image_processor(Image.fromarray(images[index]), return_tensors="pt")["pixel_values"]
    return model.predict_action(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                pixel_values=pixel_values, unnorm_key=unnorm_key, do_sample=False)
def reply(data):
    sys.stdout.write("@@" + json.dumps(data) + "\n")
    sys.stdout.flush()
reply({"ready": time.perf_counter() - start, "threads": torch.get_num_threads()})
with torch.inference_mode():
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "cases":
            rows = []
            for index in range(len(images)):
                actions = act(index)
                rows.append({"tokens": generated[-1][0, -len(actions):].tolist(), "actions": actions.tolist()})
            reply(rows)
        elif command["do"] == "time":
            seconds, cpu, preprocess = [], [], []
            for _ in range(command["calls"]):
                t0, c0 = time.perf_counter(), time.process_time()
                act(0)
                seconds.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                t0 = time.perf_counter()
                image_processor(Image.fromarray(images[0]), return_tensors="pt")
                preprocess.append(time.perf_counter() - t0)
            reply({"seconds": seconds, "cpu": cpu, "preprocess": preprocess})
        else:
            break
"""


class OpenVLAWorker:
    """OpenVLA's ``predict_action`` in its own environment, driven over stdin/stdout one command at a time."""

    def __init__(self, python: str, openvla_src: str, export_dir: Path, cases_file: Path, threads: int):
        self.process = subprocess.Popen([python, "-c", WORKER, str(export_dir), openvla_src, str(threads),
                                         str(cases_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": ""})
        self.ready = self._read()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"OpenVLA's worker exited (status {self.process.wait()}); its stderr is above")

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps({"do": "quit"}) + "\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


@dataclass
class Lever:
    """One way of running our policy: its ``Policy`` and, for levers that flip a setting of the shared
    float32 model, the context that flips it for the lever's calls only."""

    name: str
    policy: Policy
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    setup_s: float = 0.0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)  # the vision towers' output per case


def bench_llm() -> str:
    if BENCH_LLM not in LLM_BACKBONES:
        register_llm_backbone(BENCH_LLM, dataclasses.replace(get_llm_spec("tiny-llama"), space_token="ข"))
    return BENCH_LLM


@contextlib.contextmanager
def timm_attention_without_sdpa(model: nn.Module) -> Iterator[None]:
    """timm's attention as explicit matmul + softmax instead of ``F.scaled_dot_product_attention``."""
    attentions = [m for m in model.vision_backbone.modules() if hasattr(m, "fused_attn")]
    for attention in attentions:
        attention.fused_attn = False
    try:
        yield
    finally:
        for attention in attentions:
            attention.fused_attn = True


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[None]:
    """The towers' conv (the patch embedding: the only 4-D weights of a ViT) in channels-last layout."""
    convs = [m for m in model.vision_backbone.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for conv in convs:
            conv.weight.data = conv.weight.data.contiguous()


def build_levers(model: nn.Module, names: tuple[str, ...], image: np.ndarray) -> list[Lever]:
    """The levers asked for; the float32 policy (the reference) always comes first."""
    levers = [Lever("fp32", Policy(model))]
    for name in names:
        start = time.perf_counter()
        if name == "bf16-vision":
            lever = Lever(name, Policy(copy.deepcopy(model), vision_dtype="bfloat16"))
        elif name == "bf16-all":
            lever = Lever(name, Policy(copy.deepcopy(model).to(torch.bfloat16)))
        elif name == "int8-vision":
            quantized = copy.deepcopy(model)
            quantized.vision_backbone = torch.ao.quantization.quantize_dynamic(
                quantized.vision_backbone, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8)
            lever = Lever(name, Policy(quantized))
        elif name == "no-sdpa":
            lever = Lever(name, levers[0].policy, lambda: timm_attention_without_sdpa(model))
        elif name == "channels-last":
            lever = Lever(name, levers[0].policy, lambda: channels_last(model))
        elif name in ("compile", "bf16-vision-compile"):
            compiled = copy.deepcopy(model)
            if name == "bf16-vision-compile":
                compiled.vision_backbone.to(torch.bfloat16)
            compiled.vision_backbone.forward = torch.compile(compiled.vision_backbone.forward)
            lever = Lever(name, Policy(compiled))
            with torch._inductor.config.patch(freezing=True):  # weights as constants: oneDNN prepacks the linears
                lever.policy.act(image, INSTRUCTION)  # compiles
        elif name != "fp32":
            raise ValueError(f"unknown lever {name!r}; choose from {LEVERS}")
        else:
            continue
        lever.setup_s = time.perf_counter() - start
        levers.append(lever)
    return levers


def action_tokens(policy: Policy, image: np.ndarray) -> list[int]:
    """The greedy action token ids ``Policy.act`` decodes for ``image`` (for the comparison with OpenVLA)."""
    inputs = policy.processor.inference_batch([policy.preprocess(image)], [INSTRUCTION])
    return policy.model.generate_action_tokens(**inputs, action_dim=policy.action_dim())[0].tolist()


def relative_error(features: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Largest ||f - f_fp32|| / ||f_fp32|| over the cases: how far a lever moves what the LLM sees, which the
    action tokens of random weights (large argmax margins) may not show."""
    return max(float((f - r).norm() / r.norm()) for f, r in zip(features, reference))


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openvla-python", default=os.environ.get("OPENVLA_PYTHON"),
                        help="python of OpenVLA's pinned environment (transformers 4.40.1, timm 0.9.10)")
    parser.add_argument("--openvla-src", default=os.environ.get("OPENVLA_SRC"),
                        help="directory holding OpenVLA's prismatic/extern/hf/modeling_prismatic.py")
    parser.add_argument("--quick", action="store_true", help="tiny vision towers (smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1, help="timed calls per row per round")
    parser.add_argument("--cases", type=int, default=6, help="random images for the same-actions checks")
    parser.add_argument("--levers", nargs="*", default=list(DEFAULT_LEVERS), choices=LEVERS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    baseline = bool(args.openvla_python and args.openvla_src) and not args.quick

    vision = "tiny-dinosiglip-224px" if args.quick else "dinosiglip-224px"
    model = build_model(vision, bench_llm(), Target(torch.device("cpu"), torch.float32)).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(args.cases)]
    levers = build_levers(model, tuple(args.levers), images[0])
    reference = levers[0].policy
    print(f"{vision} + tiny Llama (32064-row vocabulary), random weights, float32, CPU, "
          f"torch.set_num_threads({args.threads}); {load()}")
    for lever in levers:  # warm-up
        with lever.context():
            lever.policy.act(images[0], INSTRUCTION)

    with tempfile.TemporaryDirectory() as workdir:
        worker = None
        if baseline:
            export_dir = export_openvla_hf(model, Path(workdir) / "openvla_hf")
            input_ids = reference.processor.inference_batch([images[0]], [INSTRUCTION])["input_ids"][0]
            if int(input_ids[-1]) != LLAMA2_SPACE_ID:
                raise RuntimeError(f"prompt ids end with {int(input_ids[-1])}, not {LLAMA2_SPACE_ID}: OpenVLA's "
                                   "predict_action would append a token ours does not")
            cases_file = Path(workdir) / "cases.npz"
            np.savez(cases_file, images=np.stack(images), input_ids=input_ids.numpy(),
                     unnorm_key=reference.resolve_unnorm_key(None))
            worker = OpenVLAWorker(args.openvla_python, args.openvla_src, export_dir, cases_file, args.threads)
            print(f"OpenVLA's worker: loaded in {worker.ready['ready']:.1f} s, threads {worker.ready['threads']}")
            worker.ask(do="time", calls=1)  # warm-up
        elif args.quick:
            print("OpenVLA baseline skipped: its code builds the timm towers at their real sizes, not the tiny ones")
        else:
            print("OpenVLA baseline skipped: pass --openvla-python and --openvla-src (or OPENVLA_PYTHON / OPENVLA_SRC)")
        try:
            theirs, their_cpu, their_preprocess = [], [], []
            for round_index in range(args.rounds):
                if worker is not None:
                    timed = worker.ask(do="time", calls=args.calls)
                    theirs += timed["seconds"]
                    their_cpu += timed["cpu"]
                    their_preprocess += timed["preprocess"]
                for lever in levers:
                    with lever.context():
                        for _ in range(args.calls):
                            start, cpu_start = time.perf_counter(), time.process_time()
                            lever.policy.act(images[0], INSTRUCTION)
                            lever.seconds.append(time.perf_counter() - start)
                            lever.cpu_seconds.append(time.process_time() - cpu_start)
                print(f"round {round_index + 1}: " + (f"OpenVLA {median_ms(theirs[-args.calls:]):.0f} ms, " if theirs
                                                      else "") +
                      ", ".join(f"{lv.name} {median_ms(lv.seconds[-args.calls:]):.0f} ms" for lv in levers) +
                      f"; {load()}", flush=True)
            their_cases = worker.ask(do="cases") if worker is not None else None
        finally:
            if worker is not None:
                worker.close()

    for lever in levers:
        hook = lever.policy.model.vision_backbone.register_forward_hook(
            lambda module, inputs, output, lever=lever: lever.features.append(output.float()))
        with lever.context():
            lever.actions = [lever.policy.act(image, INSTRUCTION) for image in images]
        hook.remove()
    ours_ms = median_ms(levers[0].seconds)
    if their_cases is not None:
        our_tokens = [action_tokens(reference, image) for image in images]
        same_tokens = sum(ours == row["tokens"] for ours, row in zip(our_tokens, their_cases))
        same_actions = sum(np.allclose(a, row["actions"], rtol=0, atol=1e-12)
                           for a, row in zip(levers[0].actions, their_cases))
        theirs_ms = median_ms(theirs)
        their_cpu_ms = median_ms(their_cpu)
        print(f"\n| code | ms per call (median of {len(theirs)}) | speed-up vs OpenVLA | CPU ms per call | "
              "CPU-time speed-up | same action tokens |")
        print("|---|---:|---:|---:|---:|---|")
        print(f"| OpenVLA `predict_action` (transformers 4.40.1, timm 0.9.10) | {theirs_ms:.0f} | 1.00x | "
              f"{their_cpu_ms:.0f} | 1.00x | - |")
        for lever in levers:
            same = (f"{same_tokens}/{len(images)} cases (actions equal: {same_actions}/{len(images)})"
                    if lever is levers[0] else "see below")
            print(f"| ours `Policy.act`, {lever.name} | {median_ms(lever.seconds):.0f} | "
                  f"{theirs_ms / median_ms(lever.seconds):.2f}x | {median_ms(lever.cpu_seconds):.0f} | "
                  f"{their_cpu_ms / median_ms(lever.cpu_seconds):.2f}x | {same} |")
        print(f"OpenVLA's image processor (PIL + torchvision) alone: {median_ms(their_preprocess):.1f} ms per call")
    preprocess = []
    for _ in range(20):
        start = time.perf_counter()
        reference.processor.inference_batch([images[0]], [INSTRUCTION])
        preprocess.append(time.perf_counter() - start)
    print(f"our preprocessing + tokenization (224x224 frame) alone: {median_ms(preprocess):.2f} ms per call")

    print(f"\n| lever | ms per call (median of {len(levers[0].seconds)}) | vs fp32 | CPU ms per call | vs fp32 | "
          f"setup s | action tokens differing from fp32 ({len(images)} images x 7) | vision features vs fp32 "
          "(relative error, max over images) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    ours_cpu_ms = median_ms(levers[0].cpu_seconds)
    for lever in levers:
        differing = [int(np.sum(a != b)) for a, b in zip(lever.actions, levers[0].actions)]
        print(f"| {lever.name} | {median_ms(lever.seconds):.0f} | {ours_ms / median_ms(lever.seconds):.2f}x | "
              f"{median_ms(lever.cpu_seconds):.0f} | {ours_cpu_ms / median_ms(lever.cpu_seconds):.2f}x | "
              f"{lever.setup_s:.1f} | {sum(differing)} tokens in {sum(d > 0 for d in differing)} images | "
              f"{relative_error(lever.features, levers[0].features):.1e} |")
    print(load())


if __name__ == "__main__":
    main()
