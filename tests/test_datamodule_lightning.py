"""Resuming from a Lightning checkpoint continues the training stream where it stopped."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from test_datamodule import make_dm, write_prepared


class _RecordBatches(pl.LightningModule):
    """Trains nothing useful: records which samples each step saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch["sample_key"]))
        return (self.weight * batch["pixel_values"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(root: Path, processor, max_steps: int, ckpt_dir: Path, ckpt_path: str | None = None) -> list[list[str]]:
    module = _RecordBatches()
    saver = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[saver])
    dm = make_dm(root, processor, shuffle_buffer=5, mixture={"vla_sim": 1.0, "bridge_orig": 1.0}, samples_per_epoch=20)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


def test_lightning_resume_mid_epoch_replays_nothing_and_skips_nothing(tmp_path, tiny_vla):
    write_prepared(tmp_path / "data", "vla_sim", {"train": (3, 4, 2), "val": (1, 2, 1)}, seed=0)
    write_prepared(tmp_path / "data", "bridge_orig", {"train": (2, 4, 1), "val": (1, 2, 1)}, seed=1)
    processor = tiny_vla.processor
    reference = _fit(tmp_path / "data", processor, max_steps=8, ckpt_dir=tmp_path / "ref")  # 5 batches per epoch
    assert len(reference) == 8
    checkpoint = tmp_path / "ref" / "epoch=0-step=3.ckpt"
    assert checkpoint.is_file()
    resumed = _fit(tmp_path / "data", processor, max_steps=8, ckpt_dir=tmp_path / "resumed", ckpt_path=str(checkpoint))
    assert resumed == reference[3:]
