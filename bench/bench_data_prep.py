"""RLDS episode reading speed: steps batched inside tf.data (data_prep) vs iterated step by step in Python.

Usage: ``python bench/bench_data_prep.py [--source DIR] [--dataset NAME] [--repeats N]``.
Defaults to the shared Bridge sample. Both readers return the same step-batched episodes (checked);
the ratio is against the step-by-step baseline measured in the same run. Also times one full
``data_prep.prepare`` (scan + write) of the source for scale.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import prepare, rlds_reader

SHARED_BRIDGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "rlds" / "octo_bridge_debug"


def read_step_by_step(builder: tfds.core.DatasetBuilder, split: str, n: int) -> list[dict]:
    """Baseline: iterate each episode's nested steps dataset in Python and stack the steps."""
    dataset = builder.as_dataset(
        split=f"{split}[0:{n}]",
        decoders=rlds_reader._skip_image_decoding(builder.info.features),
        shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1),
    )
    episodes = []
    for record in tfds.as_numpy(dataset):
        steps = list(record["steps"])
        episodes.append({"action": np.stack([s["action"] for s in steps]), "n": len(steps)})
    return episodes


def read_batched(builder: tfds.core.DatasetBuilder, split: str, n: int) -> list[dict]:
    return [{"action": ep["action"], "n": len(ep["action"])} for _, ep in rlds_reader.read_episodes(builder, split, 0, n)]


def best_time(fn, repeats: int) -> tuple[float, list[dict]]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SHARED_BRIDGE)
    parser.add_argument("--dataset", default="bridge_dataset")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    builder = rlds_reader.open_builder(args.source, args.dataset)
    n = rlds_reader.split_sizes(builder)["train"]
    base_s, base = best_time(lambda: read_step_by_step(builder, "train", n), args.repeats)
    fast_s, fast = best_time(lambda: read_batched(builder, "train", n), args.repeats)
    assert [e["n"] for e in base] == [e["n"] for e in fast]
    assert all(np.array_equal(a["action"], b["action"]) for a, b in zip(base, fast, strict=True))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        prepare(dataset=args.dataset, source=args.source, out=Path(out) / args.dataset)
        prep_s = time.perf_counter() - start

    print(f"{args.dataset} train: {n} episodes, best of {args.repeats}")
    print("| reader | s | episodes/s | speed vs baseline |")
    print("|:--|--:|--:|--:|")
    print(f"| steps iterated in Python (baseline) | {base_s:.3f} | {n / base_s:.1f} | 1.00 |")
    print(f"| steps batched in tf.data (data_prep) | {fast_s:.3f} | {n / fast_s:.1f} | {base_s / fast_s:.2f} |")
    print(f"full prepare (all splits, scan + write, num_workers=0): {prep_s:.1f} s")


if __name__ == "__main__":
    main()
