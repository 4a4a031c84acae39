"""GPU check: training step time and memory, QLoRA memory, predict latency and serve throughput, in one command.

    python bench/gpu_check.py                        # full shapes on one CUDA GPU (under 8 minutes)
    python bench/gpu_check.py --device cpu --quick   # tiny shapes through every code path (CI smoke run)

Rows: (1) bf16 full fine-tune step of the 1.25B DinoSigLIP + Qwen2.5-0.5B shape and of the 7B DinoSigLIP +
Llama-2 shape, with activation checkpointing and FSDP2; (2) QLoRA and LoRA step peak memory at 7B;
(3) ``Policy.act`` latency at 7B; (4) the action-chunk head's actions/s at 7B (OFT's LIBERO layout: K=8,
primary + wrist views, proprio, one forward pass per chunk); (5) serve requests/s with and
without micro-batching at 8 concurrent clients. Weights are random (nothing is downloaded): the LLMs are
shape-only registry variants that use the offline SentencePiece tokenizer. The table is printed and,
unless ``--no-append``, appended to docs/benchmarks.md under "GPU check". Exit status 1 if any row failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import os
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import transformers  # noqa: E402
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh  # noqa: E402

from vla.atomic import atomic_write  # noqa: E402
from vla.client import PolicyClient  # noqa: E402
from vla.models import VLA, build_vla  # noqa: E402
from vla.models.llm import LLM_BACKBONES, LLMSpec, get_llm_spec, register_llm_backbone  # noqa: E402
from vla.policy import Policy  # noqa: E402
from vla.serve.app import ServeSettings, create_app  # noqa: E402
from vla.serve.server import BackgroundServer, free_port  # noqa: E402
from vla.training.module import VLATrainingModule  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_HEADING = "## GPU check"
INSTRUCTION = "pick up the red screw"
CHUNK_SIZE = 8  # OFT's LIBERO chunk
CHUNK_GOAL_HZ = 100.0  # OFT reports ~110 actions/s at 7B
PROPRIO_DIM = 8  # OFT's LIBERO state: eef position, axis-angle, two gripper joints
QLORA_GOAL_GB = 16.0  # OpenVLA's LoRA fine-tuning needs about 27 GB
PREDICT_GOAL_HZ = 10.0  # OpenVLA reports ~6 Hz on an RTX 4090
STATS = {"sim": {"action": {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0], "min": [-0.1] * 6 + [0.0],
                            "max": [0.1] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.02] * 6 + [0.5],
                            "mask": [True] * 6 + [False]},
                 "proprio": {"q01": [-1.0] * PROPRIO_DIM, "q99": [1.0] * PROPRIO_DIM, "min": [-1.0] * PROPRIO_DIM,
                             "max": [1.0] * PROPRIO_DIM, "mean": [0.0] * PROPRIO_DIM, "std": [1.0] * PROPRIO_DIM}}}


def shape_only_backbones() -> dict[str, LLMSpec]:
    """The hub LLMs' architectures (vocab sizes included) with the offline tokenizer: no download needed.

    The SentencePiece tokenizer has 32000 pieces and no pad token, so a ``<PAD>`` is added as for Llama-2;
    the embedding matrices keep their real sizes (32064 and 151936 rows), and so the parameter counts.
    Qwen's space token is its byte-level "Ġ"; the SentencePiece one is "▁".
    """
    return {
        "qwen25-0_5b-shape": dataclasses.replace(get_llm_spec("qwen25-0_5b"), hf_id=None, tokenizer="mistral-sp",
                                                 space_token="▁"),
        "llama2-7b-shape": dataclasses.replace(get_llm_spec("llama2-7b"), hf_id=None, tokenizer="mistral-sp"),
    }


@dataclass(frozen=True)
class Plan:
    """What a run measures: model shapes, batch sizes and how many timed repetitions per row."""

    vision: str
    small_llm: str
    big_llm: str
    small_batch: int
    big_batch: int
    warmup: int
    steps: int
    predict_warmup: int
    predict_calls: int
    clients: int
    requests_per_client: int


FULL = Plan("dinosiglip-224px", "qwen25-0_5b-shape", "llama2-7b-shape", small_batch=8, big_batch=2, warmup=3, steps=10,
            predict_warmup=5, predict_calls=30, clients=8, requests_per_client=8)
QUICK = Plan("tiny-dinosiglip-224px", "tiny-llama", "tiny-llama", small_batch=2, big_batch=2, warmup=1, steps=1,
             predict_warmup=1, predict_calls=2, clients=8, requests_per_client=1)


@dataclass(frozen=True)
class Target:
    """Where the models run: the device and the weight dtype (bf16 on GPU, float32 on CPU)."""

    device: torch.device
    dtype: torch.dtype

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        """Wait for queued kernels, so wall-clock timings cover the work."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


@dataclass
class Row:
    """One line of the table; ``status`` is ``ok``, ``skipped: <reason>`` or ``failed: <error>``."""

    key: str
    what: str
    model: str = ""
    batch: str = ""
    result: str = ""
    memory: str = ""
    goal: str = ""
    status: str = "ok"


# ----------------------------------------------------------------------------- models and measurements
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(vision: str, llm: str, target: Target, **head: object) -> VLA:
    """Random weights created on the target device in the target dtype: a 7B model never sits in host fp32.

    ``head``: build_vla's action-head options (``action_head``, ``chunk_size``, ``image_views``, ...)."""
    torch.manual_seed(0)
    with torch.device(target.device), default_dtype(target.dtype):
        return build_vla(vision, llm, norm_stats=STATS, **head)


def describe(vla: VLA) -> str:
    params = sum(p.numel() for p in vla.parameters())
    size = f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.1f} M"
    return f"{vla.config.vision_backbone} + {vla.config.llm_backbone} ({size} params)"


def training_batch(vla: VLA, batch_size: int, target: Target) -> dict[str, torch.Tensor]:
    """A collated batch of random images and actions, as the DataModule makes them."""
    rng = np.random.default_rng(0)
    size = vla.vision_backbone.image_size
    samples = [vla.processor.training_sample(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), INSTRUCTION,
                                             rng.uniform(-1, 1, 7)) for _ in range(batch_size)]
    return {key: value.to(target.device) for key, value in vla.processor.collate(samples).items()}


def free_memory(target: Target) -> None:
    """Collect garbage, empty the CUDA cache and reset the peak: a peak then counts only what comes after."""
    gc.collect()
    if target.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(target.device)


def peak_allocated_gb(target: Target) -> float:
    return torch.cuda.max_memory_allocated(target.device) / 1e9


def peak_memory(target: Target) -> str:
    """Peak allocated since the last reset (and reserved: closer to what nvidia-smi shows); n/a on CPU, where
    the RSS of a process that also holds the server and the tokenizers says little about one step."""
    if not target.cuda:
        return "n/a (CPU)"
    return f"{peak_allocated_gb(target):.1f} GB ({torch.cuda.max_memory_reserved(target.device) / 1e9:.1f} reserved)"


def goal_text(goal: str, met: bool | None) -> str:
    """``met`` None: the goal is about the full shapes, not the tiny quick-mode model."""
    return f"{goal}: {'n/a (quick)' if met is None else 'met' if met else 'missed'}"


def timed_training_steps(vla: VLA, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], plan: Plan,
                         target: Target) -> list[float]:
    """Seconds per step (forward, backward, AdamW step) for the ``plan.steps`` steps after the warm-up."""
    times = []
    for step in range(plan.warmup + plan.steps):
        target.sync()
        start = time.perf_counter()
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        target.sync()
        if step >= plan.warmup:
            times.append(time.perf_counter() - start)
    return times


def step_result(times: list[float], batch_size: int) -> str:
    median = statistics.median(times)
    return f"{1000 * median:.0f} ms/step, median of {len(times)} ({batch_size / median:.1f} samples/s)"


@contextlib.contextmanager
def single_process_mesh(target: Target) -> Iterator[DeviceMesh]:
    """A world-size-1 process group (nccl on GPU, gloo on CPU) and its mesh, so FSDP2 runs on one device."""
    options = {"device_id": target.device} if target.cuda else {}
    dist.init_process_group("nccl" if target.cuda else "gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                            rank=0, world_size=1, **options)
    try:
        yield init_device_mesh(target.device.type, (1,), mesh_dim_names=("data_parallel",))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- rows
def full_finetune_row(llm: str, batch_size: int, plan: Plan, target: Target) -> dict[str, str]:
    """Row 1: full fine-tune (stage vla-full-train, AdamW) with activation checkpointing and FSDP2."""
    vla = build_model(plan.vision, llm, target)
    model = describe(vla)
    batch = training_batch(vla, batch_size, target)
    with single_process_mesh(target) as mesh:
        module = VLATrainingModule(vla, stage="vla-full-train", activation_checkpointing=True)
        module._device_mesh = mesh  # what Lightning's ModelParallelStrategy sets before calling configure_model
        module.configure_model()  # FSDP2 fully_shard: each ViT block, each LLM layer, then the whole VLA
        optimizer = module.configure_optimizers()
        free_memory(target)
        times = timed_training_steps(module.vla, optimizer, batch, plan, target)
    return {"model": model, "batch": str(batch_size), "result": step_result(times, batch_size),
            "memory": peak_memory(target)}


def adapter_row(stage: str, plan: Plan, target: Target, quick: bool) -> dict[str, str]:
    """Row 2: a QLoRA or LoRA step at the 7B shape (OpenVLA's r=32 on every LLM linear; no FSDP)."""
    vla = build_model(plan.vision, plan.big_llm, target)
    model = describe(vla)
    batch = training_batch(vla, plan.big_batch, target)
    lora = {"compute_dtype": str(target.dtype).removeprefix("torch.")} if stage == "qlora" else {}
    module = VLATrainingModule(vla, stage=stage, lora=lora, activation_checkpointing=True)  # qlora: vla.training.peft.apply_qlora on the bf16 model
    optimizer = module.configure_optimizers()
    free_memory(target)  # the bf16 decoder weights that QLoRA replaced are gone before the peak is reset
    times = timed_training_steps(module.vla, optimizer, batch, plan, target)
    row = {"model": model, "batch": str(plan.big_batch), "result": step_result(times, plan.big_batch),
           "memory": peak_memory(target)}
    if stage == "qlora":
        met = None if quick else peak_allocated_gb(target) <= QLORA_GOAL_GB
        row["goal"] = goal_text(f"<= {QLORA_GOAL_GB:.0f} GB", met)
    return row


def build_policy(plan: Plan, target: Target, compile_decoding: bool = False) -> Policy:
    return Policy(build_model(plan.vision, plan.big_llm, target).eval().requires_grad_(False),
                  compile_decoding=compile_decoding)


def random_images(count: int, size: int = 224) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def predict_row(plan: Plan, target: Target, quick: bool, compile_decoding: bool = False) -> dict[str, str]:
    """Row 3: one ``Policy.act`` call (preprocess, prefill, 7 greedy action tokens, un-normalize); 3b with the
    static-cache decoder whose decode step is compiled (CUDA graphs; its first calls, in the warm-up, compile)."""
    policy = build_policy(plan, target, compile_decoding)
    (image,) = random_images(1)
    free_memory(target)
    times = []
    for call in range(plan.predict_warmup + plan.predict_calls):
        start = time.perf_counter()
        policy.act(image, INSTRUCTION)  # returns numpy: the GPU work is done when it returns
        if call >= plan.predict_warmup:
            times.append(time.perf_counter() - start)
    hz = 1.0 / statistics.median(times)
    return {"model": describe(policy.model), "batch": "1",
            "result": f"{1000 / hz:.1f} ms, median of {len(times)} ({hz:.1f} Hz)", "memory": peak_memory(target),
            "goal": goal_text(f">= {PREDICT_GOAL_HZ:.0f} Hz", None if quick else hz >= PREDICT_GOAL_HZ)}


def chunk_row(plan: Plan, target: Target, quick: bool) -> dict[str, str]:
    """Row 4: ``Policy.act`` of the L1 chunk head (primary + wrist image, proprio) -> a [K, 7] chunk per call."""
    vla = build_model(plan.vision, plan.big_llm, target, action_head="l1", chunk_size=CHUNK_SIZE,
                      image_views=("primary", "wrist"), use_proprio=True)
    policy = Policy(vla.eval().requires_grad_(False))
    primary, wrist = random_images(2)
    observation = {"image": primary, "wrist_image": wrist, "state": np.zeros(PROPRIO_DIM, dtype=np.float32)}
    free_memory(target)
    times = []
    for call in range(plan.predict_warmup + plan.predict_calls):
        start = time.perf_counter()
        chunk = policy.act(observation, INSTRUCTION)
        if call >= plan.predict_warmup:
            times.append(time.perf_counter() - start)
    if chunk.shape != (CHUNK_SIZE, 7):
        raise RuntimeError(f"the chunk head returned shape {chunk.shape}, expected ({CHUNK_SIZE}, 7)")
    latency = statistics.median(times)
    rate = CHUNK_SIZE / latency
    return {"model": describe(policy.model) + ", l1 head, 2 views + proprio", "batch": "1",
            "result": f"{rate:.0f} actions/s ({1000 * latency:.1f} ms per {CHUNK_SIZE}-action chunk, median of "
                      f"{len(times)})",
            "memory": peak_memory(target),
            "goal": goal_text(f">= {CHUNK_GOAL_HZ:.0f} actions/s", None if quick else rate >= CHUNK_GOAL_HZ)}


def serve_requests_per_s(policy: Policy, max_batch_size: int, plan: Plan) -> float:
    """Requests/s of ``plan.clients`` threads, each posting its requests back to back to a loopback server."""
    images = random_images(plan.clients)

    def one_client(index: int, requests: int) -> None:
        client = PolicyClient(server.url)
        for _ in range(requests):
            client.act(images[index], INSTRUCTION)
        client.close()

    def load(requests: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(plan.clients) as pool:
            list(pool.map(one_client, range(plan.clients), [requests] * plan.clients))
        return time.perf_counter() - start

    with BackgroundServer(create_app(policy, ServeSettings(max_batch_size=max_batch_size))) as server:
        load(1)  # warm-up: connections, and the kernels for every batch size up to the number of clients
        return plan.clients * plan.requests_per_client / load(plan.requests_per_client)


def serve_row(plan: Plan, target: Target) -> dict[str, str]:
    """Row 5: the real server and client, micro-batching on (max_batch_size=8) and off (1)."""
    policy = build_policy(plan, target)
    batched = serve_requests_per_s(policy, 8, plan)
    unbatched = serve_requests_per_s(policy, 1, plan)
    return {"model": describe(policy.model), "batch": f"{plan.clients} clients x {plan.requests_per_client} req",
            "result": f"batched {batched:.2f} req/s, unbatched {unbatched:.2f} req/s: {batched / unbatched:.2f}x"}


def run_row(key: str, what: str, measure: Callable[[], dict[str, str]], target: Target) -> Row:
    """Measure one row; an error fails this row only (its traceback goes to stderr)."""
    print(f"[gpu_check] {key} {what} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        row = Row(key, what, **measure())
    except Exception as err:  # any failure of one row must not hide the others
        traceback.print_exc()
        message = " ".join(f"{type(err).__name__}: {err}".split())
        row = Row(key, what, status=f"failed: {message[:300]}")
    free_memory(target)  # after the except block, so a failed row's frames no longer hold its tensors
    print(f"[gpu_check] {key} {row.status} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return row


ROW_KEYS = ("1a", "1b", "2a", "2b", "3", "3b", "4", "5")


def measure_all(plan: Plan, target: Target, quick: bool, keys: tuple[str, ...] = ROW_KEYS) -> list[Row]:
    """The rows named in ``keys``, in table order; each builds (and frees) its own model."""
    rows = {
        "1a": ("full fine-tune step, 1.25B shape", lambda: full_finetune_row(plan.small_llm, plan.small_batch, plan, target)),
        "1b": ("full fine-tune step, 7B shape", lambda: full_finetune_row(plan.big_llm, plan.big_batch, plan, target)),
        "2a": ("QLoRA step, 7B shape", lambda: adapter_row("qlora", plan, target, quick)),
        "2b": ("LoRA step, 7B shape", lambda: adapter_row("lora", plan, target, quick)),
        "3": ("predict_action (Policy.act), 7B shape", lambda: predict_row(plan, target, quick)),
        "3b": ("predict_action, compiled static-cache decoding, 7B shape",
               lambda: predict_row(plan, target, quick, compile_decoding=True)),
        "4": ("action-chunk head actions/s, 7B shape", lambda: chunk_row(plan, target, quick)),
        "5": (f"serve throughput, {plan.clients} clients", lambda: serve_row(plan, target)),
    }
    measured = []
    for key in ROW_KEYS:
        if key not in keys:
            continue
        what, measure = rows[key]
        measured.append(run_row(key, what, measure, target))
    return measured


# ----------------------------------------------------------------------------- report
def cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def table(rows: list[Row]) -> str:
    lines = ["| row | what | model | batch | result | peak memory | goal | status |",
             "|---|---|---|---:|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(v) for v in dataclasses.astuple(row)) + " |" for row in rows]
    return "\n".join(lines)


def notes(plan: Plan, target: Target, quick: bool) -> list[str]:
    """What the numbers mean (and do not mean): printed under the table and kept with it in the docs."""
    precision = ("bf16 weights, gradients and AdamW states (no fp32 master copy)" if target.dtype == torch.bfloat16
                 else f"{str(target.dtype).removeprefix('torch.')} weights, gradients and AdamW states")
    lines = [
        "Random weights (nothing downloaded). " + (
            "Quick mode: every row runs the tiny model (tiny-dinosiglip-224px + tiny-llama); goals do not apply."
            if quick else
            "LLMs are shape-only registry variants (qwen25-0_5b-shape, llama2-7b-shape) with the offline 32000-piece "
            "SentencePiece tokenizer + <PAD>; architectures and embedding sizes are the hub models' (151936 and "
            "32064 rows), so parameter counts match; prompts tokenize slightly differently from the hub tokenizers."),
        f"Training rows: {precision}; {plan.warmup} warm-up step(s), then the median of {plan.steps}; "
        "a step is forward + backward + optimizer step on one fixed batch (224 px images, OpenVLA prompt, 7 action tokens).",
        "Activation checkpointing: VLATrainingModule(activation_checkpointing=True) (train.py's "
        "module.activation_checkpointing): HF activation_checkpointing_enable(use_reentrant=False) on the LLM, timm "
        "set_grad_checkpointing(True) on both ViTs.",
        "FSDP2 (rows 1a/1b): VLATrainingModule.configure_model's fully_shard on a world-size-1 process group "
        f"({'nccl' if target.cuda else 'gloo'}): this measures the FSDP2 code path, not sharding gains.",
        "QLoRA/LoRA (rows 2a/2b): VLATrainingModule stage qlora/lora (vla.training.peft; r=32 on every LLM linear, "
        "projector trains, vision frozen), no FSDP; QLoRA quantizes the decoder linears of the model built in "
        "the same dtype to NF4. Reference: OpenVLA's LoRA fine-tune needs about 27 GB.",
        "Peak memory: torch.cuda.max_memory_allocated over warm-up and timed steps (weights, gradients, optimizer "
        "states, activations), GB = 1e9 bytes; reserved is the caching allocator's peak." if target.cuda else
        "Peak memory: n/a on CPU.",
        f"predict_action: Policy.act on one 224x224 image, {plan.predict_warmup} warm-up call(s), median of "
        f"{plan.predict_calls}; OpenVLA reports ~6 Hz on an RTX 4090. Row 3b: Policy(compile_decoding=True) "
        "(vla.models.decoding: StaticCache + the decode step under torch.compile, mode reduce-overhead on CUDA).",
        f"Chunk head (row 4): Policy.act on a primary + wrist image and {PROPRIO_DIM}-D proprio, one forward pass "
        f"returning {CHUNK_SIZE} x 7 actions; actions/s = {CHUNK_SIZE} / latency. OFT reports ~110 actions/s at 7B.",
        f"Serve: create_app + BackgroundServer (uvicorn, 127.0.0.1, in this process, so the client threads share "
        f"the GIL with the server) and vla.client.PolicyClient; {plan.clients} client threads x "
        f"{plan.requests_per_client} request(s) after 1 warm-up request each; max_batch_size 8 vs 1.",
    ]
    return lines


def device_name(target: Target) -> str:
    if target.cuda:
        return torch.cuda.get_device_name(target.device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def report(rows: list[Row], plan: Plan, target: Target, quick: bool, command: str, seconds: float) -> str:
    """The markdown block printed and appended: run heading, provenance, table, notes."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick, tiny shapes" if quick else "full"
    lines = [
        f"### {when}: {device_name(target)} ({mode})",
        "",
        f"`{command}`; torch {torch.__version__}, transformers {transformers.__version__}; ran {seconds:.0f} s.",
        "",
        table(rows),
        "",
        *[f"- {note}" for note in notes(plan, target, quick)],
    ]
    return "\n".join(lines) + "\n"


def append_to_docs(docs: Path, block: str) -> None:
    """Add ``block`` at the end of the "GPU check" section (created at the end of the file if missing)."""
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    if DOCS_HEADING not in lines:
        lines += ["", DOCS_HEADING, "",
                  "`python bench/gpu_check.py` (one CUDA GPU, under 8 minutes) appends a run here: bf16 training step "
                  "time and peak memory (1.25B and 7B shapes), QLoRA/LoRA step memory at 7B, predict_action "
                  "latency, serve throughput with and without micro-batching. `python bench/gpu_check.py --device "
                  "cpu --quick` runs the same code on tiny shapes (tests/test_gpu_check.py, in CI)."]
    start = lines.index(DOCS_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section_end = end
    while section_end > start + 1 and not lines[section_end - 1].strip():
        section_end -= 1  # insert after the section's text, before its trailing blank lines
    new = lines[:section_end] + ["", *block.rstrip("\n").split("\n")] + ([""] if end < len(lines) else []) + lines[end:]
    atomic_write(docs, lambda tmp: tmp.write_text("\n".join(new) + "\n"))


# ----------------------------------------------------------------------------- entry point
def parse_args() -> tuple[argparse.Namespace, Plan, Target]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 1-3 repetitions per row (CPU smoke run)")
    parser.add_argument("--no-append", action="store_true", help="do not append the table to --docs")
    parser.add_argument("--rows", default=",".join(ROW_KEYS),
                        help=f"comma-separated rows to measure (default all: {','.join(ROW_KEYS)})")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--batch-size-1b", type=int, help="batch of row 1a (default 8; quick 2)")
    parser.add_argument("--batch-size-7b", type=int, help="batch of rows 1b, 2a, 2b (default 2)")
    parser.add_argument("--steps", type=int, help="timed training steps per row (default 10; quick 1)")
    parser.add_argument("--warmup", type=int, help="untimed training steps first (default 3; quick 1)")
    parser.add_argument("--predict-calls", type=int, help="timed Policy.act calls (default 30; quick 2)")
    parser.add_argument("--requests-per-client", type=int, help="serve requests per client and setting (default 8; quick 1)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available (torch.cuda.is_available() is False): the full check needs one GPU; "
                     "`--device cpu --quick` runs the tiny CPU smoke version")
    args.rows = tuple(key.strip() for key in args.rows.split(",") if key.strip())
    unknown = sorted(set(args.rows) - set(ROW_KEYS))
    if unknown or not args.rows:
        parser.error(f"--rows {','.join(unknown) or '(none)'}: unknown; choose from {','.join(ROW_KEYS)}")
    if args.device == "cpu" and not args.quick:
        parser.error("full shapes on CPU would take hours; add --quick (tiny shapes) or use --device cuda")
    overrides = {"small_batch": args.batch_size_1b, "big_batch": args.batch_size_7b, "steps": args.steps,
                 "warmup": args.warmup, "predict_calls": args.predict_calls,
                 "requests_per_client": args.requests_per_client}
    plan = dataclasses.replace(QUICK if args.quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
    if args.device == "cuda":
        return args, plan, Target(torch.device("cuda", 0), torch.bfloat16)
    return args, plan, Target(torch.device("cpu"), torch.float32)


def main() -> int:
    args, plan, target = parse_args()
    if target.cuda:
        torch.cuda.set_device(target.device)
    for name, spec in shape_only_backbones().items():
        if LLM_BACKBONES.get(name) != spec:
            register_llm_backbone(name, spec)
    gc.freeze()  # the imports left ~10^6 long-lived objects: keep them out of every row's gc.collect
    start = time.perf_counter()
    rows = measure_all(plan, target, args.quick, args.rows)
    block = report(rows, plan, target, args.quick, shlex.join(["python", *sys.argv]), time.perf_counter() - start)
    print(block)
    if not args.no_append:
        append_to_docs(args.docs, block)
        print(f"Appended to {args.docs}", file=sys.stderr)
    return 1 if any(row.status.startswith("failed") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
