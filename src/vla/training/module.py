"""The LightningModule that trains a VLA: loss, action metrics, optimizer, checkpoints.

Metrics follow the model's action head: ``tokens`` logs the loss, action-token accuracy and L1 of the decoded
bins; ``l1`` (OpenVLA-OFT chunks) logs the loss and the L1 over real (not past-the-episode-end) chunk steps,
in total (``<split>/l1``), per action dimension (``<split>/l1/dim<i>``) and per chunk step
(``<split>/l1/t<k>``: the action k steps ahead), all in normalized action space; the per-dimension and
per-step values are logged as epoch (train) and validation means only.

Everything a checkpoint needs to become a standalone model (the model's ``VLAConfig``, the dataset
statistics, the stage and LoRA settings) is stored in it, next to Lightning's full training state
(weights, optimizer, scheduler, loop position, the DataModule's stream position) plus RNG states and
the running sums of the epoch averages, so a resumed run's ``*_epoch`` metrics cover the whole run.

Step checkpoints may leave out the frozen weights (``checkpoint_trainable_only``, for LoRA/QLoRA runs):
such a file is marked ``trainable_only`` and holds a fingerprint of the frozen weights; resuming from it
takes them from the model the run rebuilt from its config and refuses when they differ from the saved
run's. ``load_checkpoint`` / ``vla-export`` refuse these files (they cannot rebuild the base alone).
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torchmetrics import MeanMetric

from vla.models.checkpoints import TRAINING_CHECKPOINT_KEY
from vla.models.heads import REGRESSION_LOSSES
from vla.models.vla import VLA
from vla.training.peft import apply_lora, apply_qlora
from vla.training.sharding import FSDPPlan
from vla.training.stages import STAGES, apply_stage, trainable_parameter_summary

LR_SCHEDULES = ("constant", "linear-warmup+cosine-decay", "step-decay")


def warmup_cosine_factor(total_steps: int, warmup_ratio: float):
    """LR multiplier per step for ``linear-warmup+cosine-decay`` (Prismatic's schedule), for ``LambdaLR``."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(progress, 1.0))))

    return factor


def step_decay_factor(total_steps: int, warmup_ratio: float, decay_after_steps: int, decay_factor: float):
    """LR multiplier per step for ``step-decay``: OpenVLA-OFT's ``MultiStepLR`` (constant, times ``decay_factor``
    from step ``decay_after_steps`` on), after an optional linear warmup."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        return ramp * (decay_factor if step >= decay_after_steps else 1.0)

    return factor


class VLATrainingModule(pl.LightningModule):
    """Trains ``vla`` in a given freeze ``stage`` (OpenVLA's AdamW, constant LR by default).

    ``lr_decay_after_steps`` / ``lr_decay_factor``: the ``step-decay`` schedule's one LR drop (OFT: 10x after 100K).
    ``regression_loss``: a chunk head's loss (``l1`` as OFT, or ``mse``; ``vla.models.heads.REGRESSION_LOSSES``).
    """

    def __init__(
        self,
        vla: VLA,
        stage: str = "vla-train",
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_ratio: float = 0.0,
        lr_decay_after_steps: int | None = None,
        lr_decay_factor: float = 0.1,
        lora: dict[str, Any] | None = None,
        fsdp: FSDPPlan | None = None,
        activation_checkpointing: bool = False,
        regression_loss: str = "l1",
    ):
        super().__init__()
        self.run_info: dict[str, Any] = {}  # data, mixture, command: set by the run, stored for model cards
        if stage not in STAGES:
            raise ValueError(f"Unknown training stage {stage!r}; allowed stages: {', '.join(STAGES)}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if lr_schedule == "step-decay" and (lr_decay_after_steps is None or lr_decay_after_steps < 1):
            raise ValueError(f"lr_schedule 'step-decay' needs lr_decay_after_steps >= 1, got {lr_decay_after_steps}")
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"Unknown regression_loss {regression_loss!r}; choose one of {tuple(REGRESSION_LOSSES)}")
        if regression_loss != "l1" and vla.config.action_head == "tokens":
            raise ValueError(f"regression_loss={regression_loss!r} applies to chunk heads; the tokens head trains "
                             "with cross-entropy over its action tokens")
        self.regression_loss = regression_loss
        self.vla = vla.train()  # loaders hand out eval-mode models; Lightning keeps the mode it finds
        self.stage = stage
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.lr_schedule, self.warmup_ratio = lr_schedule, warmup_ratio
        self.lr_decay_after_steps, self.lr_decay_factor = lr_decay_after_steps, lr_decay_factor
        self.lora = dict(lora or {})
        self.fsdp = fsdp or FSDPPlan()  # used only under ModelParallelStrategy (configure_model)
        self.activation_checkpointing = activation_checkpointing
        self.save_trainable_only = False  # set by TrainableOnlyCheckpoint around each step checkpoint it writes
        self._apply_stage()
        if activation_checkpointing:  # after LoRA (input grads), before configure_model (FSDP2 wraps the blocks)
            enable_activation_checkpointing(self.vla)
        self.chunked = vla.config.action_head != "tokens"
        self.metrics = torch.nn.ModuleDict()  # "<split>_<metric>" and, for mixtures, "<split>_<metric>@<dataset>"
        for split in ("train", "val"):
            for name in ("loss", "l1") if self.chunked else ("loss", "action_accuracy", "l1"):
                self._metric(f"{split}_{name}")

    def _apply_stage(self) -> None:
        if self.stage == "lora":
            apply_lora(self.vla, **self.lora)
        elif self.stage == "qlora":
            apply_qlora(self.vla, **self.lora)
        else:
            apply_stage(self.vla, self.stage)

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` shard with FSDP2: each ViT block, each LLM layer, then the root.

        Every ``fully_shard`` call gets the plan's mesh (full sharding or HSDP) and mixed-precision policy (see
        :mod:`vla.training.sharding`). A FiLM-wrapped ViT block is sharded as one unit with its ``scale``/``shift``
        linears. The root keeps its parameters (embeddings, projector, output head, action head, proprio
        projector) unsharded after forward: backward needs them first, and the explicit
        ``reshard_after_forward=True`` of older torch releases would free them.
        """
        mesh = getattr(self, "device_mesh", None)
        if mesh is None:
            return
        from torch.distributed.fsdp import fully_shard

        fsdp_mesh = self.fsdp.device_mesh(mesh["data_parallel"])
        mp_policy = self.fsdp.mp_policy()
        blocks = [*self.vla.llm_backbone.layers]
        for vit in self.vla.vision_backbone.featurizers:
            blocks.extend(vit.blocks)
        for block in blocks:
            fully_shard(block, mesh=fsdp_mesh, reshard_after_forward=self.fsdp.reshard_after_forward, mp_policy=mp_policy)
        fully_shard(self.vla, mesh=fsdp_mesh, reshard_after_forward=False, mp_policy=mp_policy)

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            print(f"Stage {self.stage!r}: trainable parameters\n{trainable_parameter_summary(self.vla)}")

    # ------------------------------------------------------------------ steps
    def _metric(self, key: str) -> MeanMetric:
        """The running weighted mean ``key``, created on first use; its sums are saved in checkpoints."""
        if key not in self.metrics:
            metric = MeanMetric()
            metric.persistent(True)
            self.metrics[key] = metric.to(self.device)
        return self.metrics[key]

    def _shared_step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        """Forward with whatever the batch carries (proprio with ``data.proprio``; chunk targets for ``l1``)."""
        chunk_loss = {"regression_loss": self.regression_loss} if self.chunked else {}
        out = self.vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"],
                       proprio=batch.get("proprio"), action_mask=batch.get("action_mask"), actions=batch.get("actions"),
                       **chunk_loss)
        batch_size = batch["input_ids"].shape[0]
        on_step = split == "train"
        if self.chunked:
            self._log_chunk_metrics(out, batch, split, on_step)
            return out.loss
        metrics = self.vla.action_metrics(out.logits, out.targets)
        for name, value, weight in (
            ("loss", out.loss.detach(), batch_size),
            ("action_accuracy", metrics["accuracy"], metrics["count"]),
            ("l1", metrics["l1"].float(), metrics["count"]),
        ):
            self._log_mean(f"{split}/{name}", f"{split}_{name}", value, weight, on_step, prog_bar=name != "l1",
                           batch_size=batch_size, sync_dist=False)
        self._log_per_dataset(out, batch, split, on_step)
        return out.loss

    def _log_chunk_metrics(self, out, batch: dict[str, Any], split: str, on_step: bool) -> None:
        """Loss, then L1 in total, per dimension and per chunk step, each weighted by the real values it averages
        (a step past every row's episode end counts with weight 0); the breakdowns per epoch and validation."""
        batch_size = batch["input_ids"].shape[0]
        metrics = self.vla.chunk_metrics(out, batch["action_pad_mask"])
        steps, action_dim = metrics["count"], out.actions.shape[-1]
        values = [("loss", out.loss.detach(), batch_size), ("l1", metrics["l1"], steps * action_dim)]
        values += [(f"l1/dim{i}", value, steps) for i, value in enumerate(metrics["l1_per_dim"])]
        values += [(f"l1/t{k}", value, count * action_dim)
                   for k, (value, count) in enumerate(zip(metrics["l1_per_step"], metrics["count_per_step"]))]
        for name, value, weight in values:
            # The breakdowns are epoch means: one batch may hold no real value of a late step (0/0).
            self._log_mean(f"{split}/{name}", f"{split}_{name.replace('/', '_')}", value.float(), weight,
                           on_step and "/" not in name, prog_bar=name in ("loss", "l1"), batch_size=batch_size,
                           sync_dist=False)
        self._log_chunk_per_dataset(out, batch, split, on_step)

    def _log_chunk_per_dataset(self, out, batch: dict[str, Any], split: str, on_step: bool) -> None:
        """Per-dataset chunk L1 when the batch mixes several datasets."""
        names = batch.get("dataset_name")
        if not names or len(set(names)) < 2:
            return
        for name in sorted(set(names)):
            rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=out.actions.device)
            subset = type(out)(loss=out.loss, predicted=out.predicted[rows], actions=out.actions[rows])
            metrics = self.vla.chunk_metrics(subset, batch["action_pad_mask"][rows])
            self._log_mean(f"{split}/{name}/l1", f"{split}_l1@{name.replace('.', '_')}", metrics["l1"].float(),
                           metrics["count"] * out.actions.shape[-1], on_step, batch_size=len(rows))

    def _log_per_dataset(self, out, batch: dict[str, Any], split: str, on_step: bool) -> None:
        """Per-dataset action accuracy / L1 when the batch mixes several datasets."""
        names = batch.get("dataset_name")
        if not names or len(set(names)) < 2:
            return
        for name, m in self.vla.action_metrics_by_dataset(out.logits, out.targets, batch["labels"], names).items():
            key = name.replace(".", "_")  # module names hold no "."
            for metric, value in (("action_accuracy", m["accuracy"]), ("l1", m["l1"].float())):
                self._log_mean(f"{split}/{name}/{metric}", f"{split}_{metric}@{key}", value, m["count"], on_step,
                               batch_size=names.count(name))

    def _log_mean(self, name: str, key: str, value: torch.Tensor, weight: Any, on_step: bool, **log_kwargs: Any) -> None:
        """Add ``value`` to the running mean ``key`` and log it as ``name``: the batch's value per step, the mean per epoch."""
        metric = self._metric(key)
        metric(value, weight)  # forward: this batch's value for on_step, accumulated for on_epoch
        self.log(name, metric, on_step=on_step, on_epoch=True, metric_attribute=f"metrics.{key}", **log_kwargs)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        params = [p for p in self.vla.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"Stage {self.stage!r} leaves no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        if self.lr_schedule == "step-decay":
            factor = step_decay_factor(total_steps, self.warmup_ratio, self.lr_decay_after_steps, self.lr_decay_factor)
        else:
            factor = warmup_cosine_factor(total_steps, self.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TRAINING_CHECKPOINT_KEY] = {
            "config": self.vla.config.to_dict(), "norm_stats": self.vla.norm_stats, "stage": self.stage, "lora": self.lora,
            "run": self.run_info,
        }
        checkpoint["rng_states"] = _rng_states()
        if self.save_trainable_only:
            frozen = self.frozen_weight_keys()
            state = checkpoint["state_dict"]
            checkpoint[TRAINING_CHECKPOINT_KEY].update(
                trainable_only=True, frozen_fingerprint=_fingerprint({k: state[k] for k in frozen if k in state}))
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}

    def frozen_weight_keys(self) -> set[str]:
        """State-dict keys (``vla.`` prefixed) of the parameters this stage does not train."""
        return {f"vla.{name}" for name, p in self.vla.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(TRAINING_CHECKPOINT_KEY, {})
        if stored.get("norm_stats"):
            self.vla.norm_stats = stored["norm_stats"]
        if "rng_states" in checkpoint:
            _set_rng_states(checkpoint["rng_states"])
        if stored.get("trainable_only"):
            self._fill_frozen_weights(checkpoint["state_dict"], stored.get("frozen_fingerprint", {}))
        self._match_metric_states(checkpoint["state_dict"])

    def _fill_frozen_weights(self, state_dict: dict[str, Any], fingerprint: dict[str, list[float]]) -> None:
        """A trainable-only checkpoint: the frozen weights come from the model this run built from its config,
        which must be the saved run's base (checked against the fingerprint the checkpoint holds)."""
        own = {k: _full(v) for k, v in self.state_dict().items() if k in self.frozen_weight_keys() and k not in state_dict}
        differing = sorted(k for k, value in _fingerprint(own).items() if k in fingerprint and not _same_print(value, fingerprint[k]))
        missing = sorted(set(fingerprint) - set(own) - set(state_dict))
        if differing or missing:
            raise ValueError(
                "Cannot resume from a trainable-only checkpoint (checkpoint_trainable_only=true): the frozen weights this "
                f"run built from its model config differ from the saved run's ({len(differing)} tensors differ, e.g. "
                f"{(differing or missing)[:3]}; {len(missing)} missing). Resume with the same model/checkpoint/seed "
                "settings, or from the run's last.ckpt (always a full checkpoint).")
        state_dict.update(own)

    def _match_metric_states(self, state_dict: dict[str, Any]) -> None:
        """Create the per-dataset means the checkpoint holds; fresh sums for checkpoints saved without them."""
        for key in state_dict:
            if key.startswith("metrics."):
                self._metric(key.split(".")[1])
        for key, value in self.metrics.state_dict(prefix="metrics.").items():
            state_dict.setdefault(key, value)

    def on_train_start(self) -> None:
        """Strategies that restore checkpoints after moving the model (FSDP) leave loaded sums on the CPU."""
        self.metrics.to(self.device)


def enable_activation_checkpointing(vla: VLA) -> None:
    """Non-reentrant activation checkpointing of every transformer block: each LLM decoder layer (HF's
    ``activation_checkpointing_enable``, which also makes the input embeddings' output require grad, so frozen
    embeddings under LoRA still pass gradients into checkpointed blocks) and each ViT block (timm's
    ``set_grad_checkpointing``, honoured by ``get_intermediate_layers``). Blocks recompute only in training mode."""
    llm = vla.llm_backbone.llm
    llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # + enable_input_require_grads
    for vit in vla.vision_backbone.featurizers:
        vit.set_grad_checkpointing(True)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (DTensor), else the tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _fingerprint(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor: its sum and its sum of absolute values (float64), to tell one set of frozen weights from another."""
    out = {}
    for key, tensor in state.items():
        values = _full(tensor).detach().double()
        out[key] = [float(values.sum()), float(values.abs().sum())]
    return out


def _same_print(a: list[float], b: list[float]) -> bool:
    scale = max(abs(a[1]), abs(b[1]), 1e-12)
    return abs(a[0] - b[0]) <= 1e-6 * scale and abs(a[1] - b[1]) <= 1e-6 * scale


def _rng_states() -> dict[str, Any]:
    """RNG states in tensor/int form, so checkpoints load with ``weights_only=True``."""
    mt_name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": list(random.getstate()[1]),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(states["python"]), None))
