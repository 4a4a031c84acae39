"""Resuming from a Lightning checkpoint continues the training stream where it stopped."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch

from test_chunk_data import write_views_dataset
from test_datamodule import make_dm, write_prepared
from vla.data import VLADataModule


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


def _fit(root: Path, processor, max_steps: int, ckpt_dir: Path, ckpt_path: str | None = None,
         module: _RecordBatches | None = None, datamodule: Callable[[], VLADataModule] | None = None) -> list[list[str]]:
    module = module or _RecordBatches()
    saver = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[saver])
    dm = datamodule() if datamodule else make_dm(root, processor, shuffle_buffer=5,
                                                 mixture={"vla_sim": 1.0, "bridge_orig": 1.0}, samples_per_epoch=20)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


class _RecordChunks(_RecordBatches):
    """Also records the chunk targets, pad masks and proprio each step saw."""

    def __init__(self):
        super().__init__()
        self.tensors: list[tuple[torch.Tensor, ...]] = []

    def training_step(self, batch, batch_idx):
        self.tensors.append((batch["pixel_values"], batch["actions"], batch["action_pad_mask"], batch["proprio"]))
        return super().training_step(batch, batch_idx)


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


def test_lightning_resume_with_action_chunks_views_and_proprio(tmp_path, tiny_vla):
    write_views_dataset(tmp_path / "data")
    processor = dataclasses.replace(tiny_vla.processor, action_head="l1", chunk_size=4, action_dim=7)

    def datamodule() -> VLADataModule:
        return VLADataModule(tmp_path / "data", batch_size=4, num_workers=2, shuffle_buffer=5, seed=3, image_aug=True,
                             samples_per_epoch=20, processor=processor, chunk_size=4, image_views=["primary", "wrist"],
                             proprio=True)

    reference, resumed = _RecordChunks(), _RecordChunks()
    _fit(tmp_path / "data", processor, 8, tmp_path / "ref", module=reference, datamodule=datamodule)
    assert len(reference.seen) == 8
    checkpoint = tmp_path / "ref" / "epoch=0-step=3.ckpt"
    _fit(tmp_path / "data", processor, 8, tmp_path / "resumed", str(checkpoint), module=resumed, datamodule=datamodule)
    assert resumed.seen == reference.seen[3:]
    for got, want in zip(resumed.tensors, reference.tensors[3:]):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
