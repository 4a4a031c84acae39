"""Serving throughput/latency: 1 vs 8 concurrent clients, micro-batching on vs off.

Starts the real server (``serve.py`` in its own process, uvicorn on loopback) with a tiny random
exported VLA and drives it with the real client from this process, so client threads do not share
the server's GIL. Ratios are against the 1-client, batching-off baseline measured in the same run.

    python bench/bench_serve.py [--requests-per-client 12] [--max-batch-size 8] [--max-wait-ms 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vla.models import build_vla, save_vla  # noqa: E402
from vla.client import PolicyClient  # noqa: E402
from vla.serve.server import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

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
            client.act(images[(index + step) % len(images)], "pick up the red screw")
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
    with tempfile.TemporaryDirectory() as workdir:
        export_dir = str(Path(workdir) / "export")
        save_vla(build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=STATS), export_dir)
        for batching in (False, True):
            process, url = start_server(export_dir, args.max_batch_size if batching else 1,
                                        args.max_wait_ms if batching else 0, workdir)
            try:
                run_load(url, 2, 2, images)  # warm-up: threads, allocator, connections
                for clients in (1, 8):
                    latencies, wall = run_load(url, clients, args.requests_per_client, images)
                    results.append((clients, batching, latencies, len(latencies) / wall))
            finally:
                process.terminate()
                process.wait(timeout=60)

    base_p50, base_rps = np.median(results[0][2]), results[0][3]
    print(f"tiny-dinosiglip-224px + tiny-llama, CPU threads={torch.get_num_threads()}, "
          f"{args.requests_per_client} requests/client, max_batch_size={args.max_batch_size}, "
          f"max_wait_ms={args.max_wait_ms}")
    print(f"{'clients':>7} {'batching':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'req/s x':>8} {'p50 x':>6}")
    for clients, batching, latencies, rps in sorted(results, key=lambda r: (r[0], r[1])):
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"{clients:>7} {'on' if batching else 'off':>8} {1000 * p50:>8.1f} {1000 * p99:>8.1f} {rps:>7.2f} "
              f"{rps / base_rps:>8.2f} {p50 / base_p50:>6.2f}")


if __name__ == "__main__":
    main()
