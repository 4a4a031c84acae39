"""Training throughput: our Lightning loop vs a plain PyTorch loop over the same model and data.

    python bench/bench_train.py [--steps 40] [--warmup 5] [--batch-size 16] [--workers 2]

Both loops train the tiny DinoSigLIP + Llama VLA (stage vla-full-train, AdamW, grad clip 1.0) on
the built-in sim shards (generated + prepared into a temp dir unless --data-root points at a
prepared root holding vla_sim/). Samples/s are timed after the warm-up steps; the ratio is
Lightning / plain (goal >= 0.95x).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from vla.data import VLADataModule
from vla.models import build_vla
from vla.training.module import VLATrainingModule
from vla.training.stages import apply_stage


def prepared_root(data_root: str | None) -> Path:
    if data_root:
        return Path(data_root)
    from data_prep import prepare
    from data_prep.sim_rlds import generate_rlds

    base = Path(tempfile.mkdtemp(prefix="bench_train_"))
    prepare(dataset="vla_sim", source=generate_rlds(base / "rlds", episodes=60, progress=False), out=base / "prepared" / "vla_sim")
    return base / "prepared"


def datamodule(root: Path, args, vla) -> VLADataModule:
    dm = VLADataModule(root, "vla_sim", batch_size=args.batch_size, num_workers=args.workers, shuffle_buffer=256,
                       samples_per_epoch=args.batch_size * (args.steps + 1), val_split=None, processor=vla.processor)
    dm.setup("fit")
    return dm


def plain_loop(vla, root: Path, args) -> float:
    apply_stage(vla, "vla-full-train")
    vla.train()
    opt = torch.optim.AdamW([p for p in vla.parameters() if p.requires_grad], lr=1e-3)
    start = end = None
    for step, batch in enumerate(datamodule(root, args, vla).train_dataloader()):
        if step == args.warmup:
            start = time.perf_counter()
        if step == args.steps:
            end = time.perf_counter()
            break
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        vla.action_metrics(out.logits, out.targets)  # the same per-step metric work as training
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(vla.parameters(), 1.0)
        opt.step()
    return (args.steps - args.warmup) * args.batch_size / (end - start)


class _Timer(pl.Callback):
    """Times the same window as the plain loop: from step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def lightning_loop(vla, root: Path, args) -> float:
    module = VLATrainingModule(vla, stage="vla-full-train", learning_rate=1e-3)
    timer = _Timer(args.warmup)
    trainer = pl.Trainer(accelerator="cpu", max_steps=args.steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                         callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule(root, args, vla))
    return (args.steps - args.warmup) * args.batch_size / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    root = prepared_root(args.data_root)
    torch.manual_seed(0)
    base = build_vla("tiny-dinosiglip-224px", "tiny-llama")
    plain, light = [], []
    for _ in range(args.rounds):  # interleaved rounds: both loops see the same machine load
        plain.append(plain_loop(copy.deepcopy(base), root, args))
        light.append(lightning_loop(copy.deepcopy(base), root, args))
    p, l = max(plain), max(light)
    print(f"\n| loop | samples/s (best of {args.rounds}) | vs plain |\n|---|---:|---:|")
    print(f"| plain PyTorch (baseline) | {p:.1f} | 1.00x |")
    print(f"| Lightning (VLATrainingModule) | {l:.1f} | {l / p:.2f}x |")
    print(f"\nbatch {args.batch_size}, {args.workers} workers, {args.steps - args.warmup} timed steps, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
