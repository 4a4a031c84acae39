"""What ``python train.py`` does, given a composed Hydra config.

Order: validate the config -> delete killed writers' partial files -> pick the checkpoint to resume
from -> (embedded default) make the sim data -> DataModule (statistics) -> model with those
statistics -> LightningModule (freeze stage / LoRA) -> Trainer (strategy, precision, checkpoints,
logs continued on resume) -> fit (optionally resumed) -> export + summary.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import get_method, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vla.sim.demos import DATASET_NAME, METADATA_FILE, VERSION, recorded_params
from vla.atomic import write_json_atomic
from vla.models import load_training_checkpoint, save_vla
from vla.training.checkpoint_io import AtomicCheckpointIO
from vla.training.curves import read_curves, write_training_curves
from vla.training.config_checks import STRATEGIES, check_train_config
from vla.training.loggers import ResumableCSVLogger
from vla.training.sharding import FSDPPlan, devices_per_node
from vla.training.resume import LAST, ResumePoint, remove_stale_temporaries, resolve_resume

WRITTEN_DIRS = ("", "checkpoints", "logs", "export")  # where a run writes files atomically, under its run dir
GENERATION_KEYS = ("episodes", "seed", "image_size", "suite", "n_objects", "noise_std", "paired")  # data.embedded -> sim generator


def ensure_embedded_data(embedded: DictConfig) -> None:
    """Generate the built-in sim demos (RLDS) and prepare them, each only if missing.

    Runs as subprocesses: RLDS writing/reading needs TensorFlow, which the training process
    itself never imports. Data made earlier with other generation parameters is never reused
    silently: the sim writer records them, and a mismatch is an error naming another ``data.root``.
    """
    prepared, rlds = Path(embedded.prepared_dir), Path(embedded.rlds_dir)
    wanted = {key: embedded[key] for key in GENERATION_KEYS}
    version_dir = rlds / DATASET_NAME / VERSION
    if (version_dir / METADATA_FILE).is_file():
        existing = {key: recorded_params(version_dir).get(key) for key in GENERATION_KEYS}
        if existing != wanted:
            raise ValueError(f"{rlds} holds sim demos generated with {existing}, not the requested {wanted}; "
                             "pass another data.root (e.g. data.root=data/generated/<name>) or delete it")
    if (prepared / "manifest.json").exists():
        return
    print(f"Embedded default data missing: generating {embedded.episodes} sim demos -> {rlds}, then preparing -> {prepared}")
    subprocess.run([sys.executable, "-m", "data_prep.sim_rlds", f"out={rlds}", "progress=true",
                    *(f"{key}={value}" for key, value in wanted.items())], check=True)
    subprocess.run([sys.executable, "-m", "data_prep", "dataset=vla_sim", f"source={rlds}", f"out={prepared}"], check=True)


def build_model(model: DictConfig, dataset_statistics: dict[str, Any]) -> Any:
    """The VLA ``model`` describes, knowing the data's statistics.

    Targets taking ``norm_stats`` (``build_vla``, ``load_openvla``) get them at build time, since the ``l1`` head
    and the proprio projector are sized from them; a model imported from a checkpoint keeps its datasets'
    statistics and gains this data's.
    """
    takes_stats = "norm_stats" in inspect.signature(get_method(model._target_)).parameters
    vla = instantiate(model, _convert_="all", **({"norm_stats": dataset_statistics} if takes_stats else {}))
    vla.norm_stats = {**vla.norm_stats, **dataset_statistics}
    return vla


def build_strategy(strategy: DictConfig | None, world_size: int = 1) -> Any:
    """``auto`` / ``ddp`` / ``fsdp`` (FSDP2 ``fully_shard`` via ModelParallelStrategy: GPU and CPU).

    Under ``fsdp`` Lightning's 2-D mesh is ``data_parallel`` = ``world_size`` x ``tensor_parallel`` = 1: every
    rank is a data-parallel rank. (Lightning's ``auto`` sizes, nodes x devices per node, would leave the ranks
    of a node in the tensor-parallel dim, which nothing here uses: unsharded and never synchronised.) HSDP's
    replicate x shard mesh is built from that one in ``configure_model`` (:class:`vla.training.sharding.FSDPPlan`).
    """
    name = (strategy or {}).get("name", "auto")
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}")
    if name == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=world_size, tensor_parallel_size=1, save_distributed_checkpoint=False)
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(checkpoint_io=AtomicCheckpointIO())
    return "auto"


class StepCheckpoint(ModelCheckpoint):
    """``step<N>.ckpt`` every n steps plus a full ``last.ckpt``; ``trainable_only``: step files without frozen weights."""

    def __init__(self, *args: Any, trainable_only: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trainable_only = trainable_only

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, so the callback state of checkpoints written before this subclass still loads."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        module.save_trainable_only = self.trainable_only and Path(filepath).name != LAST
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            module.save_trainable_only = False


def build_checkpoint_callback(checkpoint_dir: Path, every_n_steps: int, keep_last: int | None,
                              trainable_only: bool = False) -> StepCheckpoint:
    """Step checkpoints every ``every_n_steps``; ``keep_last`` N: only the N newest (by global step) stay, null: all.

    ``last.ckpt`` is always written in full and never counted or deleted.
    """
    common = dict(dirpath=checkpoint_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                  every_n_train_steps=every_n_steps, save_last=True, trainable_only=trainable_only)
    if keep_last is None:
        return StepCheckpoint(save_top_k=-1, **common)
    return StepCheckpoint(save_top_k=keep_last, monitor="step", mode="max", **common)


def train(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Run one training job; returns the final metrics (also written to <run dir>/metrics.json).

    ``callbacks`` are added to the Trainer's (e.g. monitoring hooks of a caller).
    """
    check_train_config(cfg)
    run_dir = Path(cfg.run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    remove_stale_temporaries(run_dir / name for name in WRITTEN_DIRS)
    resume = resolve_resume(cfg.resume, checkpoint_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.data.get("embedded"):
        ensure_embedded_data(cfg.data.embedded)

    datamodule = instantiate(cfg.data.datamodule, _convert_="all")  # image_views as a plain list
    vla = build_model(cfg.model, datamodule.dataset_statistics)
    datamodule.attach_processor(vla.processor)
    strategy_cfg = cfg.get("strategy") or {}
    fsdp = FSDPPlan.from_config(strategy_cfg, cfg.trainer.num_nodes, cfg.trainer.devices) if strategy_cfg.get("name") == "fsdp" else None
    module = instantiate(cfg.module, vla=vla, lora=OmegaConf.to_container(cfg.module.lora) if cfg.module.lora else None,
                         fsdp=fsdp, _convert_="object")  # "object": the FSDPPlan arrives as itself, not a DictConfig

    checkpoints = build_checkpoint_callback(checkpoint_dir, cfg.checkpoint_every_n_steps, cfg.get("checkpoint_keep_last"),
                                            bool(cfg.get("checkpoint_trainable_only", False)))
    strategy = build_strategy(strategy_cfg, cfg.trainer.num_nodes * devices_per_node(cfg.trainer.devices) if fsdp else 1)
    plugins = [AtomicCheckpointIO()] if strategy == "auto" else []
    trainer: pl.Trainer = instantiate(cfg.trainer, strategy=strategy, callbacks=[checkpoints, *callbacks], plugins=plugins)
    if resume:
        _continue_logs(trainer, resume)
    overrides = _task_overrides()
    module.run_info = {"data": cfg.data.name, "mixture": datamodule.sampling_weights, "stage": cfg.stage.name,
                       "image_aug": bool(cfg.data.datamodule.get("image_aug", False)),
                       "command": " ".join(["vla-train", *overrides])}
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume.path) if resume else None)

    # A final full-state checkpoint (consolidated under FSDP: every rank takes part), exported below.
    final = checkpoint_dir / "last.ckpt"
    trainer.save_checkpoint(final, weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["global_step"] = trainer.global_step
    metrics["overrides"] = overrides
    metrics.update({f"data/{name}": count for name, count in datamodule.integrity_counts.items()})
    if trainer.is_global_zero:
        if cfg.export:
            model = load_training_checkpoint(final)  # carries the run's record and step (training_info)
            training = {**model.training_info, "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)}}
            metrics["export_dir"] = str(save_vla(model, run_dir / "export", training=training))
        curves = _write_curves(trainer, run_dir)
        if curves is not None:
            metrics["curves"] = str(curves)
        write_json_atomic(run_dir / "metrics.json", metrics)
        _print_summary(run_dir, checkpoint_dir, metrics)
    return metrics


def _write_curves(trainer: pl.Trainer, run_dir: Path) -> Path | None:
    """``<run dir>/curves.png`` from the CSV log (other loggers draw their own curves); None when a run too
    short for ``trainer.log_every_n_steps`` logged nothing to draw."""
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            metrics_csv = Path(logger.log_dir) / "metrics.csv"
            curves = read_curves(metrics_csv) if metrics_csv.is_file() else {}
            if curves:
                return write_training_curves(metrics_csv, run_dir / "curves.png", curves)
    return None


def _continue_logs(trainer: pl.Trainer, resume: ResumePoint) -> None:
    """metrics.csv keeps the interrupted run's rows (Lightning's CSVLogger would delete them).

    TensorBoard keeps them anyway (a new event file next to the old ones, so steps logged after the
    checkpoint show twice); W&B starts a new run.
    """
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.continue_from(resume.step)


def _task_overrides() -> list[str]:
    """The command-line overrides of this job (what a sweep varies), when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _print_summary(run_dir: Path, checkpoint_dir: Path, metrics: dict[str, Any]) -> None:
    lines = [
        "", "Training finished",
        f"  steps:            {metrics['global_step']}",
        *(f"  {key + ':':<17} {metrics[key]:.4f}" for key in ("train/loss_epoch", "train/loss_step", "train/action_accuracy_step",
                                                               "val/loss", "val/action_accuracy", "val/l1") if key in metrics),
        f"  run dir:          {run_dir}",
        f"  checkpoints:      {checkpoint_dir} (last.ckpt)",
        f"  metrics:          {run_dir / 'metrics.json'} and {run_dir / 'logs'}",
    ]
    if "curves" in metrics:
        lines.append(f"  curves:           {metrics['curves']}")
    if "export_dir" in metrics:
        lines.append(f"  exported model:   {metrics['export_dir']} (README.md: its model card)")
    skipped = metrics.get("data/skipped_shards")
    if skipped:
        lines.append(f"  skipped data:     {skipped} corrupt shards, {metrics.get('data/skipped_samples', 0)} samples "
                     "(on_corrupt_shard=skip)")
    print("\n".join(lines))
