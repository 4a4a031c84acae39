"""Training data loader throughput (samples/s) at 224 px, batch 32, 2 workers, on the Bridge sample.

Rows, all measured in this run on the same images:
  (a) ``VLADataModule`` over data_prep shards: JPEG decode + resize + normalize + prompt/action
      tokens + padded collate (with and without OpenVLA's augmentation);
  (b) a tf.data pipeline over the original RLDS TFRecords doing the same JPEG decode + resize
      (OpenVLA's resize: lanczos3 with antialias), 2 parallel calls, batch 32;
  (c) the raw limit: PIL JPEG decode + bicubic resize in a plain single-process loop.
Ratios are against (c). A second table splits (a)'s per-sample cost into its stages, timed in one
process over the same shards, to show where the loader's time goes. Each row runs ``--rounds`` times, interleaved, and keeps its best round,
because the machine is shared. Usage: ``python bench/bench_loader.py [--source DIR]``.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch
from PIL import Image

from vla.data import VLADataModule
from vla.data.datamodule import Shard, iter_raw_samples
from vla.data.shards import iter_shard, load_prepared
from vla.models import build_vla

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "rlds" / "octo_bridge_debug"
RLDS_NAME = "bridge_dataset"
PRIMARY_RLDS_KEY = "image_0"
SIZE, BATCH, WORKERS = 224, 32, 2


def prepare_shards(source: Path, out: Path) -> Path:
    from data_prep.pipeline import prepare  # the module path also works under a stale editable install

    return prepare(dataset=RLDS_NAME, source=source, out=out / RLDS_NAME)


def datamodule_run(data_root: Path, processor, samples: int, image_aug: bool) -> Callable[[], int]:
    def run() -> int:
        dm = VLADataModule(data_root, mixture={RLDS_NAME: 1.0}, batch_size=BATCH, num_workers=WORKERS, shuffle_buffer=256,
                           image_aug=image_aug, samples_per_epoch=samples, processor=processor)
        return sum(batch["pixel_values"].shape[0] for batch in dm.train_dataloader())
    return run


def tf_data_run(source: Path, samples: int) -> Callable[[], int]:
    import tensorflow as tf  # only this benchmark row uses TensorFlow, as the baseline being compared against
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    builder = tfds.builder_from_directory(str(source / RLDS_NAME / "1.0.0"))

    def run() -> int:
        steps = builder.as_dataset(split="train", decoders={"steps": {"observation": {PRIMARY_RLDS_KEY: tfds.decode.SkipDecoding()}}})
        steps = steps.flat_map(lambda episode: episode["steps"]).repeat()

        def decode_resize(step):
            image = tf.io.decode_jpeg(step["observation"][PRIMARY_RLDS_KEY], channels=3)
            resized = tf.image.resize(image, (SIZE, SIZE), method="lanczos3", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

        options = tf.data.Options()
        options.threading.private_threadpool_size = WORKERS
        dataset = steps.shuffle(256).map(decode_resize, num_parallel_calls=WORKERS).batch(BATCH).take(samples // BATCH)
        dataset = dataset.prefetch(2).with_options(options)
        return sum(int(batch.shape[0]) for batch in dataset.as_numpy_iterator())
    return run


def raw_limit_run(jpegs: list[bytes], samples: int) -> Callable[[], int]:
    def run() -> int:
        for i in range(samples):
            with Image.open(io.BytesIO(jpegs[i % len(jpegs)])) as jpeg:
                np.asarray(jpeg.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        return samples
    return run


def stage_breakdown(prepared: Path, processor, samples: int) -> dict[str, float]:
    """Milliseconds per sample for each cumulative stage of (a), in a single process."""
    path = load_prepared(prepared).shard_paths("train")[0]
    shard = Shard(path, sum(1 for _ in iter_shard(path)))
    start = time.perf_counter()
    unique = list(iter_raw_samples(shard, RLDS_NAME))
    read = (time.perf_counter() - start) / len(unique)
    raws = [unique[i % len(unique)] for i in range(samples)]
    images, tokenized = [], []
    start = time.perf_counter()
    for raw in raws:
        with Image.open(io.BytesIO(raw["image_primary.jpg"])) as jpeg:
            images.append(np.asarray(processor.image_transform.resize(jpeg.convert("RGB"))))
    decode = (time.perf_counter() - start) / samples
    start = time.perf_counter()
    for raw, image in zip(raws, images):
        action = np.load(io.BytesIO(raw["action.npy"]), allow_pickle=False)
        tokenized.append(processor.training_sample(image, raw["instruction.txt"].decode(), action))
    process = (time.perf_counter() - start) / samples
    start = time.perf_counter()
    for i in range(0, samples - BATCH + 1, BATCH):
        processor.collate(tokenized[i:i + BATCH])
    collate = (time.perf_counter() - start) / (samples // BATCH * BATCH)
    return {"read tar members": read * 1e3, "JPEG decode + resize to 224": decode * 1e3,
            "uint8 CHW tensor + prompt/action tokens": process * 1e3, "collate (stack + pad)": collate * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="RLDS root holding bridge_dataset/1.0.0")
    parser.add_argument("--samples", type=int, default=1024, help="samples per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # like a DataLoader worker; the pipelines parallelize across workers instead

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_shards(args.source, Path(tmp))
        jpegs = [s["image_primary.jpg"] for path in load_prepared(prepared).shard_paths("train") for s in iter_shard(path)]
        height, width = np.asarray(Image.open(io.BytesIO(jpegs[0]))).shape[:2]
        processor = build_vla("tiny-dinosiglip-224px", "tiny-llama").processor
        rows = {
            "(a) VLADataModule, shards, no aug": datamodule_run(prepared.parent, processor, args.samples, image_aug=False),
            "(a) VLADataModule, shards, OpenVLA aug": datamodule_run(prepared.parent, processor, args.samples, image_aug=True),
            "(b) tf.data over RLDS TFRecords, decode+resize": tf_data_run(args.source, args.samples),
            "(c) raw JPEG decode+resize, 1 process": raw_limit_run(jpegs, args.samples),
        }
        best = {name: 0.0 for name in rows}
        stages = stage_breakdown(prepared, processor, min(args.samples, 256))
        for _ in range(args.rounds):
            for name, run in rows.items():
                start = time.perf_counter()
                count = run()
                best[name] = max(best[name], count / (time.perf_counter() - start))

    limit = best["(c) raw JPEG decode+resize, 1 process"]
    print(f"source images {width}x{height} JPEG -> {SIZE}x{SIZE}; batch {BATCH}; {WORKERS} workers; {args.samples} samples "
          f"x best of {args.rounds}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"| {'pipeline':<48} | {'samples/s':>9} | {'vs (c)':>6} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 8}|")
    for name, rate in best.items():
        print(f"| {name:<48} | {rate:>9.1f} | {rate / limit:>5.2f}x |")
    print(f"\n| {'stage of (a), 1 process':<48} | {'ms/sample':>9} |")
    print(f"|{'-' * 50}|{'-' * 11}|")
    for name, ms in stages.items():
        print(f"| {name:<48} | {ms:>9.2f} |")


if __name__ == "__main__":
    main()
