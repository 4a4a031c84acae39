"""Training data loader throughput (samples/s) at 224 px, batch 32, 2 workers, on the Bridge sample.

Rows, all measured in this run on the same images, at equal cores (2 loader workers / 2 parallel calls):
  (b) the baselines: OpenVLA's tf.data image path over the original RLDS TFRecords (JPEG decode +
      lanczos3 resize with antialias to uint8), without and with OpenVLA's augmentation (dlimp's
      ``augment_image`` ops with OpenVLA's parameters, seeded per sample); each is 1.00x of its kind;
  (a) ``VLADataModule`` over data_prep shards: decode + resize + prompt/action tokens + padded collate,
      without augmentation, with it in the workers (``augment_on=worker``, numpy), and with it on the
      device (``augment_on=device``): the loader part alone (workers draw the parameters), and the
      loader plus the device step (``on_after_batch_transfer``, batched torch) in the main process.
      The device step runs on ``--device`` (CUDA when present); without a GPU it runs on the same CPU
      cores, so the "loader + device" row is then the fair number;
  (c) the raw limit: PIL JPEG decode + bicubic resize in a plain single-process loop.
A second table splits (a)'s per-sample cost into its stages, timed in one process, then times the whole
no-augmentation loader in that process (the stages plus the stream: shuffle buffer, action checks, ...), and the
augmentation alone (numpy per sample vs the batched torch step). Each row runs ``--rounds`` times,
interleaved, and keeps its best round, because the machine is shared; the load average is printed
before and after. Besides samples/s (wall clock), each row reports samples per CPU-second (its own
and its workers' CPU time): on a machine other jobs share, how much CPU each pipeline wins depends
on how many threads it runs, so the CPU-time ratio is the fairer "equal cores" comparison. The loader part's ratio is in
parentheses: it leaves out the device step, i.e. what the loader gives when that step runs on a GPU.
Usage: ``python bench/bench_loader.py [--source DIR] [--samples N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch
from PIL import Image

from vla.contract.images import lanczos_resize
from vla.data import VLADataModule
from vla.data.augmentation import OpenVLAAugmentation, augment_pixel_values
from vla.data.datamodule import Shard, iter_raw_samples
from vla.data.shards import iter_shard, load_prepared, read_array, read_image, read_text
from vla.models import build_vla

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "rlds" / "octo_bridge_debug"
RLDS_NAME = "bridge_dataset"
PRIMARY_RLDS_KEY = "image_0"
SIZE, BATCH, WORKERS = 224, 32, 2
# OpenVLA's image_augment_kwargs (prismatic/vla/datasets/datasets.py), applied by dlimp's augment_image in this order.
OPENVLA_AUG = {"scale": 0.9, "ratio": 1.0, "brightness": 0.2, "contrast": (0.8, 1.2), "saturation": (0.8, 1.2), "hue": 0.05}
TF_AUG, TF_PLAIN = "(b) tf.data, decode+resize + OpenVLA aug", "(b) tf.data, decode+resize"
DM_PLAIN, DM_WORKER = "(a) VLADataModule, no aug", "(a) VLADataModule, aug in workers (numpy)"
DM_LOADER, DM_DEVICE = "(a) VLADataModule, aug on device: loader part", "(a) VLADataModule, aug on device: loader + device"
RAW = "(c) raw PIL decode+resize, 1 process"


def prepare_shards(source: Path, out: Path) -> Path:
    from data_prep.pipeline import prepare  # the module path also works under a stale editable install

    return prepare(dataset=RLDS_NAME, source=source, out=out / RLDS_NAME)


def make_datamodule(data_root: Path, processor, samples: int, image_aug: bool, augment_on: str = "worker",
                    num_workers: int = WORKERS) -> VLADataModule:
    return VLADataModule(data_root, mixture={RLDS_NAME: 1.0}, batch_size=BATCH, num_workers=num_workers, shuffle_buffer=256,
                         image_aug=image_aug, augment_on=augment_on, samples_per_epoch=samples, processor=processor)


def datamodule_run(data_root: Path, processor, samples: int, image_aug: bool, augment_on: str = "worker",
                   device: torch.device | None = None) -> Callable[[], int]:
    """One epoch of the training loader; with ``device``, each batch's tensors also move there and get the
    post-transfer hook (the device step), as Lightning does."""
    def run() -> int:
        dm = make_datamodule(data_root, processor, samples, image_aug, augment_on)
        count = 0
        for batch in dm.train_dataloader():
            if device is not None:
                moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                batch = dm.on_after_batch_transfer(moved, 0)
            count += batch["pixel_values"].shape[0]
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        return count
    return run


def tf_openvla_augment(image, seed):
    """dlimp's ``augment_image`` with OpenVLA's kwargs, from the ops' documented behaviour: uint8 -> float in
    [0, 1], random resized crop (scale 0.9, ratio 1: a sqrt(0.9) box at a random offset, bilinear back to
    the full size), then brightness, contrast, saturation, hue, clipping to [0, 1] after each op, -> uint8."""
    import tensorflow as tf

    a = OPENVLA_AUG
    x = tf.image.convert_image_dtype(image, tf.float32)
    scale = tf.random.stateless_uniform((1,), seed, a["scale"], a["scale"])
    ratio = tf.exp(tf.random.stateless_uniform((1,), seed, math.log(a["ratio"]), math.log(a["ratio"])))
    height, width = tf.clip_by_value(tf.sqrt(scale / ratio), 0, 1), tf.clip_by_value(tf.sqrt(scale * ratio), 0, 1)
    top = tf.random.stateless_uniform((1,), seed, 0, 1 - height)
    left = tf.random.stateless_uniform((1,), seed, 0, 1 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    x = tf.clip_by_value(tf.image.crop_and_resize(x[None], boxes, tf.range(1), (SIZE, SIZE))[0], 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_brightness(x, a["brightness"], seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_contrast(x, *a["contrast"], seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_saturation(x, *a["saturation"], seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_hue(x, a["hue"], seed), 0, 1)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True)


def tf_data_run(source: Path, samples: int, augment: bool) -> Callable[[], int]:
    import tensorflow as tf  # only the baseline rows use TensorFlow
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    builder = tfds.builder_from_directory(str(source / RLDS_NAME / "1.0.0"))

    def run() -> int:
        steps = builder.as_dataset(split="train", decoders={"steps": {"observation": {PRIMARY_RLDS_KEY: tfds.decode.SkipDecoding()}}})
        steps = steps.flat_map(lambda episode: episode["steps"]).repeat()

        def decode_resize(index, step):
            image = tf.io.decode_jpeg(step["observation"][PRIMARY_RLDS_KEY], channels=3)
            resized = tf.image.resize(image, (SIZE, SIZE), method="lanczos3", antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
            if augment:
                image = tf_openvla_augment(image, tf.stack([tf.constant(7, tf.int64), index]))
            return image

        options = tf.data.Options()
        options.threading.private_threadpool_size = WORKERS
        dataset = steps.shuffle(256).enumerate().map(decode_resize, num_parallel_calls=WORKERS).batch(BATCH)
        dataset = dataset.take(samples // BATCH).prefetch(2).with_options(options)
        return sum(int(batch.shape[0]) for batch in dataset.as_numpy_iterator())
    return run


def raw_limit_run(jpegs: list[bytes], samples: int) -> Callable[[], int]:
    def run() -> int:
        for i in range(samples):
            with Image.open(io.BytesIO(jpegs[i % len(jpegs)])) as jpeg:
                np.asarray(jpeg.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        return samples
    return run


def cpu_seconds() -> float:
    """CPU time of this process (all its threads: tf.data's) and of its reaped children (the loader's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _ms_per(samples: int, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) / samples * 1e3


def stage_breakdown(prepared: Path, processor, samples: int) -> dict[str, float]:
    """Milliseconds per sample of each stage of (a), and of the augmentation both ways, in a single process."""
    path = load_prepared(prepared).shard_paths("train")[0]
    shard = Shard(path, sum(1 for _ in iter_shard(path)))
    start = time.perf_counter()
    unique = list(iter_raw_samples(shard, RLDS_NAME))
    read = (time.perf_counter() - start) / len(unique) * 1e3
    raws = [unique[i % len(unique)] for i in range(samples)]
    decoded = [read_image(raw["image_primary.jpg"]) for raw in raws]
    images = [lanczos_resize(image, SIZE) for image in decoded]
    actions = [read_array(raw["action.npy"]) for raw in raws]
    instructions = [read_text(raw["instruction.txt"]) for raw in raws]
    tokenized = [processor.training_sample(image, text, action) for image, text, action in zip(images, instructions, actions)]
    batches = [processor.collate(tokenized[i:i + BATCH]) for i in range(0, samples - BATCH + 1, BATCH)]
    augmentation = OpenVLAAugmentation()
    params = [torch.from_numpy(np.stack([augmentation.sample(np.random.default_rng(i)).as_array()
                                         for i in range(j, j + BATCH)])) for j in range(0, len(batches) * BATCH, BATCH)]
    batched = len(batches) * BATCH

    def whole_loader() -> None:
        for _ in make_datamodule(prepared.parent, processor, samples, image_aug=False, num_workers=0).train_dataloader():
            pass

    stages = {
        "read tar members": read,
        "JPEG decode (simplejpeg)": _ms_per(samples, lambda: [read_image(raw["image_primary.jpg"]) for raw in raws]),
        "lanczos3 resize to 224 (TF-exact)": _ms_per(samples, lambda: [lanczos_resize(image, SIZE) for image in decoded]),
        "uint8 CHW tensor + prompt/action tokens": _ms_per(samples, lambda: [
            processor.training_sample(image, text, action) for image, text, action in zip(images, instructions, actions)]),
        "collate (stack + pad)": _ms_per(batched, lambda: [processor.collate(tokenized[i:i + BATCH])
                                                           for i in range(0, batched, BATCH)]),
        "whole no-aug loader, 1 process (stages + stream)": _ms_per(samples, whole_loader),
        "OpenVLA aug, numpy, per image (worker)": _ms_per(samples, lambda: [
            augmentation(image, np.random.default_rng(i)) for i, image in enumerate(images)]),
        "OpenVLA aug, batched torch on CPU (device step)": _ms_per(batched, lambda: [
            augment_pixel_values(batch["pixel_values"], p) for batch, p in zip(batches, params)]),
    }
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="RLDS root holding bridge_dataset/1.0.0")
    parser.add_argument("--samples", type=int, default=1024, help="samples per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the device step runs (default: cuda if present)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)  # like a DataLoader worker; the pipelines parallelize across workers instead
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_shards(args.source, Path(tmp))
        jpegs = [s["image_primary.jpg"] for path in load_prepared(prepared).shard_paths("train") for s in iter_shard(path)]
        height, width = np.asarray(Image.open(io.BytesIO(jpegs[0]))).shape[:2]
        processor = build_vla("tiny-dinosiglip-224px", "tiny-llama").processor
        root, n = prepared.parent, args.samples
        rows = {
            TF_PLAIN: tf_data_run(args.source, n, augment=False),
            TF_AUG: tf_data_run(args.source, n, augment=True),
            DM_PLAIN: datamodule_run(root, processor, n, image_aug=False),
            DM_WORKER: datamodule_run(root, processor, n, image_aug=True, augment_on="worker"),
            DM_LOADER: datamodule_run(root, processor, n, image_aug=True, augment_on="device"),
            DM_DEVICE: datamodule_run(root, processor, n, image_aug=True, augment_on="device", device=device),
            RAW: raw_limit_run(jpegs, n),
        }
        best = {name: 0.0 for name in rows}
        best_cpu = {name: 0.0 for name in rows}
        stages = stage_breakdown(prepared, processor, min(n, 256))
        for _ in range(args.rounds):
            for name, run in rows.items():
                start, cpu_start = time.perf_counter(), cpu_seconds()
                count = run()
                best[name] = max(best[name], count / (time.perf_counter() - start))
                best_cpu[name] = max(best_cpu[name], count / (cpu_seconds() - cpu_start))

    print(f"source images {width}x{height} JPEG -> {SIZE}x{SIZE}; batch {BATCH}; {WORKERS} workers; device step on {device}; {n} samples "
          f"x best of {args.rounds}; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs")
    print(f"| {'pipeline':<52} | {'samples/s':>9} | {'vs (b)':>7} | {'samples/CPU-s':>13} | {'vs (b)':>7} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 9}|{'-' * 15}|{'-' * 9}|")
    for name in rows:
        baseline = TF_PLAIN if name in (TF_PLAIN, DM_PLAIN, RAW) else TF_AUG  # each row against (b) of its kind
        ratio, cpu_ratio = f"{best[name] / best[baseline]:.2f}x", f"{best_cpu[name] / best_cpu[baseline]:.2f}x"
        if name == DM_LOADER:
            ratio, cpu_ratio = f"({ratio})", f"({cpu_ratio})"
        print(f"| {name:<52} | {best[name]:>9.1f} | {ratio:>7} | {best_cpu[name]:>13.1f} | {cpu_ratio:>7} |")
    print(f"\n| {'stage, 1 process':<52} | {'ms/sample':>9} |")
    print(f"|{'-' * 54}|{'-' * 11}|")
    for name, ms in stages.items():
        print(f"| {name:<52} | {ms:>9.2f} |")


if __name__ == "__main__":
    main()
