"""Serving throughput/latency: 1 vs 8 concurrent clients, micro-batching on vs off, and where the time goes.

Starts the real server (``serve.py`` in its own process, uvicorn on loopback) with a tiny random
exported VLA and drives it with the real client from this process, so client threads do not share
the server's GIL. Ratios are against the 1-client, batching-off baseline measured in the same run.

Breakdown per request: the server's micro-batcher sums queue waits (submission -> model call, of
which the gathering window) and model-call time (``/info`` ``batching``), read before and after each
load; the rest of the client-side latency is HTTP, JSON (base64 image) encoding/decoding and the
client. The stages inside one model call (preprocessing, model, un-normalization) and the JSON steps
are then timed in this process on the same model, at batch 1 and at ``--max-batch-size``.

    python bench/bench_serve.py [--requests-per-client 12] [--max-batch-size 8] [--max-wait-ms 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vla.client import PolicyClient  # noqa: E402
from vla.models import build_vla, save_vla  # noqa: E402
from vla.policy import Policy  # noqa: E402
from vla.serve.server import free_port  # noqa: E402
from vla.wire import dumps, encode_action, parse_act_payload  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = "pick up the red screw"
BATCHER_SUMS = ("requests_served", "batches_run", "queue_wait_s", "gather_s", "predict_s")

STATS = {"sim": {"action": {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0], "min": [-0.1] * 6 + [0.0],
                            "max": [0.1] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.02] * 6 + [0.5],
                            "mask": [True] * 6 + [False]}}}


def run_load(url: str, clients: int, requests_per_client: int, images: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Per-request latencies (s) and wall time of ``clients`` threads each sending requests back to back."""

    def one_client(index: int) -> list[float]:
        client = PolicyClient(url)
        latencies = []
        for step in range(requests_per_client):
            start = time.perf_counter()
            client.act(images[(index + step) % len(images)], INSTRUCTION)
            latencies.append(time.perf_counter() - start)
        client.close()
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [lat for per_client in pool.map(one_client, range(clients)) for lat in per_client]
    return np.array(latencies), time.perf_counter() - start


def start_server(checkpoint: str, max_batch_size: int, max_wait_ms: float, workdir: str) -> tuple[subprocess.Popen, str]:
    """``python serve.py`` on a free loopback port; returns once ``/health`` answers."""
    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "serve.py"), f"checkpoint={checkpoint}", f"port={port}",
               f"max_batch_size={max_batch_size}", f"max_wait_ms={max_wait_ms}", f"hydra.run.dir={workdir}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = PolicyClient(f"http://127.0.0.1:{port}", timeout_s=2)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            client.health()
            return process, client.url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"serve.py did not come up: {' '.join(command)}")


def batcher_sums(url: str) -> dict[str, float]:
    """The server micro-batcher's running sums (``/info`` ``batching``)."""
    client = PolicyClient(url)
    batching = client.info()["batching"]
    client.close()
    return {key: batching[key] for key in BATCHER_SUMS}


def median_ms(fn, repeats: int = 20) -> float:
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def stage_times(policy: Policy, images: list[np.ndarray], batch: int) -> dict[str, float]:
    """ms of each step of one request's path outside HTTP, for a model call of ``batch`` requests."""
    batch_images = [images[i % len(images)] for i in range(batch)]
    body = dumps({"image": images[0], "instruction": INSTRUCTION}).encode()
    preprocess = median_ms(lambda: policy.processor.inference_batch(batch_images, [INSTRUCTION] * batch))
    call = median_ms(lambda: policy.predict_batch(batch_images, [INSTRUCTION] * batch))
    action = policy.predict_batch(images[:1], [INSTRUCTION])[0]
    return {"client: encode request (json_numpy)": median_ms(lambda: dumps({"image": images[0], "instruction": INSTRUCTION})),
            "server: decode + check request": median_ms(lambda: parse_act_payload(body, 1024)),
            f"model call (batch {batch}): preprocessing + tokenization": preprocess,
            f"model call (batch {batch}): model + un-normalization": call - preprocess,
            "server: encode answer": median_ms(lambda: encode_action(action))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-client", type=int, default=12)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(16)]
    results = []
    start_load = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        export_dir = str(Path(workdir) / "export")
        vla = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=STATS)
        save_vla(vla, export_dir)
        for batching in (False, True):
            process, url = start_server(export_dir, args.max_batch_size if batching else 1,
                                        args.max_wait_ms if batching else 0, workdir)
            try:
                run_load(url, 2, 2, images)  # warm-up: threads, allocator, connections
                for clients in (1, 8):
                    before = batcher_sums(url)
                    latencies, wall = run_load(url, clients, args.requests_per_client, images)
                    after = batcher_sums(url)
                    sums = {key: after[key] - before[key] for key in BATCHER_SUMS}
                    results.append((clients, batching, latencies, len(latencies) / wall, sums))
            finally:
                process.terminate()
                process.wait(timeout=60)
    policy = Policy(vla.eval().requires_grad_(False))
    with torch.inference_mode():
        stages = {batch: stage_times(policy, images, batch) for batch in (1, args.max_batch_size)}

    base_p50, base_rps = np.median(results[0][2]), results[0][3]
    print(f"tiny-dinosiglip-224px + tiny-llama, CPU threads={torch.get_num_threads()}, "
          f"{args.requests_per_client} requests/client, max_batch_size={args.max_batch_size}, "
          f"max_wait_ms={args.max_wait_ms}; load average at start {start_load[0]:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}")
    print(f"{'clients':>7} {'batching':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'req/s x':>8} {'p50 x':>6}")
    ordered = sorted(results, key=lambda r: (r[0], r[1]))
    for clients, batching, latencies, rps, _ in ordered:
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"{clients:>7} {'on' if batching else 'off':>8} {1000 * p50:>8.1f} {1000 * p99:>8.1f} {rps:>7.2f} "
              f"{rps / base_rps:>8.2f} {p50 / base_p50:>6.2f}")

    print("\nWhere a request's time goes (means per request, ms; server sums from /info):")
    print("| clients | batching | latency | queue wait (before its model call) | gathering window per batch | "
          "model call (its batch's) | mean batch | HTTP + JSON + client (rest) |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|")
    for clients, batching, latencies, rps, sums in ordered:
        requests, batches = max(sums["requests_served"], 1), max(sums["batches_run"], 1)
        latency = 1000 * float(np.mean(latencies))
        queue = 1000 * sums["queue_wait_s"] / requests
        gather = 1000 * sums["gather_s"] / batches  # each request in a batch waits out its gathering once
        call = 1000 * sums["predict_s"] / batches
        print(f"| {clients} | {'on' if batching else 'off'} | {latency:.1f} | {queue:.1f} | {gather:.1f} | {call:.1f} | "
              f"{requests / batches:.1f} | {latency - queue - call:.1f} |")
    print("\nSteps timed in this process (ms, median of 20):")
    print("| step | batch 1 | batch " + str(args.max_batch_size) + " |\n|---|---:|---:|")
    for (name, one), many in zip(stages[1].items(), stages[args.max_batch_size].values()):
        print(f"| {name.replace(' (batch 1)', '')} | {one:.2f} | {many:.2f} |")


if __name__ == "__main__":
    main()
