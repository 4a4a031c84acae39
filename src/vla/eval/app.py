"""What ``eval.py`` runs: closed-loop rollouts (``mode=closed_loop``) or offline scores on shards (``mode=offline``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vla.eval.offline import data_layout, evaluate_offline, print_offline_table, write_offline_results
from vla.eval.records import EpisodeRecord
from vla.eval.report import CHART_FILE
from vla.eval.runner import evaluate
from vla.models import VLA, load_checkpoint
from vla.policy import Policy, resolve_suite_unnorm_key

MODES = ("closed_loop", "offline")


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Dispatch on ``cfg.mode``; returns what was written to ``results.json`` / ``offline_metrics.json``."""
    if cfg.mode not in MODES:
        raise ValueError(f"Unknown eval mode {cfg.mode!r}; choose one of {MODES}")
    return run_offline(cfg) if cfg.mode == "offline" else run_closed_loop(cfg)


def run_offline(cfg: DictConfig) -> dict[str, Any]:
    """Loss / action-token accuracy / L1 of ``cfg.checkpoint`` on split ``cfg.split`` of ``cfg.data``."""
    vla = load_checkpoint(cfg.checkpoint, device=cfg.device)
    layout = data_layout(vla)  # the data the model reads: chunk size, camera views, proprio
    datamodule = instantiate(cfg.data.datamodule, val_split=cfg.split, **layout,
                             **({"batch_size": cfg.batch_size} if cfg.batch_size else {}))
    metrics = evaluate_offline(vla, datamodule, device=cfg.device, precision=cfg.precision, limit_batches=cfg.limit_batches)
    settings = {"mode": "offline", "checkpoint": str(Path(cfg.checkpoint).resolve()), "data": cfg.data.name,
                "data_root": str(datamodule.data_root.resolve()), "split": cfg.split,
                "batch_size": datamodule.batch_size, "limit_batches": cfg.limit_batches, "precision": cfg.precision}
    if layout != {"chunk_size": 1, "image_views": ("primary",), "proprio": False}:  # OpenVLA's layout goes unsaid
        settings.update({**layout, "image_views": list(layout["image_views"])})
    write_offline_results(cfg.out_dir, metrics, settings)
    if cfg.progress:
        print_offline_table(metrics, title=f"Offline eval: {cfg.data.name}, split {cfg.split}")
    return {"metrics": metrics, "settings": settings}


def run_closed_loop(cfg: DictConfig) -> dict[str, Any]:
    """Roll the policy out on every (task, trial) of the env's suite; success rates with CIs."""
    suite = instantiate(cfg.env.suite, name=cfg.task_suite or cfg.env.default_suite)
    model = load_checkpoint(cfg.checkpoint, device=cfg.device)
    unnorm_key = cfg.unnorm_key or cfg.env.default_unnorm_key or resolve_suite_unnorm_key(model.norm_stats, suite.name)
    center_crop, center_crop_source = resolve_center_crop(cfg.center_crop, model)
    policy = Policy(model, unnorm_key=unnorm_key, preprocessing="openvla-eval", center_crop=center_crop,
                    proprio_from_state=cfg.env.get("proprio_from_state"), compile_decoding=cfg.compile_decoding,
                    vision_dtype=cfg.vision_dtype)
    num_steps_wait = cfg.env.num_steps_wait if cfg.num_steps_wait is None else cfg.num_steps_wait
    # Validated for every model (a token model asked for several steps is an error); recorded for chunk models only.
    open_loop_steps = policy.open_loop_steps(cfg.num_open_loop_steps)
    settings = {"env": cfg.env.name, "checkpoint": str(Path(cfg.checkpoint).resolve()),
                "unnorm_key": policy.unnorm_key, "center_crop": center_crop, "center_crop_source": center_crop_source}
    if policy.proprio_dim:  # how the env's state reaches the model is part of what the run measures
        settings["proprio_from_state"] = policy.proprio_from_state
    wandb_run = _start_wandb(cfg, settings) if cfg.wandb.enabled else None
    results = evaluate(
        suite, policy, cfg.out_dir, num_trials_per_task=cfg.num_trials_per_task, num_steps_wait=num_steps_wait,
        seed=cfg.seed, task_ids=cfg.task_ids, videos_per_task=cfg.videos_per_task, max_steps=cfg.max_steps,
        settings=settings,
        on_episode=(lambda record: _log_episode(wandb_run, record, cfg.out_dir)) if wandb_run else None,
        progress=cfg.progress, num_open_loop_steps=open_loop_steps if policy.is_chunked else None,
    )
    if wandb_run is not None:
        suite_row = results["suite"]
        wandb_run.summary.update({"success_rate": suite_row["success_rate"], "episodes": suite_row["episodes"],
                                  "ci95_low": suite_row["ci95_low"], "ci95_high": suite_row["ci95_high"]})
        for task in results["tasks"]:
            wandb_run.summary[f"task_{task['task_id']:02d}/success_rate"] = task["success_rate"]
        import wandb

        wandb_run.log({"success_by_task": wandb.Image(str(Path(cfg.out_dir) / CHART_FILE))})
        wandb_run.finish()
    return results


def resolve_center_crop(setting: bool | None, model: VLA) -> tuple[bool, str]:
    """``center_crop`` to use and where it came from: ``config`` (explicit true/false wins), ``checkpoint``
    (null: OpenVLA's rule, center crop iff the policy was trained with image augmentation) or ``default``
    (null and the checkpoint does not say, e.g. OpenVLA's HF releases: false)."""
    if setting is not None:
        return bool(setting), "config"
    image_aug = model.training_info.get("image_aug")
    return (False, "default") if image_aug is None else (bool(image_aug), "checkpoint")


def _start_wandb(cfg: DictConfig, settings: dict[str, Any]):
    try:
        import wandb
    except ImportError as err:
        raise ImportError("wandb.enabled=true needs wandb: pip install -e '.[loggers]'") from err
    return wandb.init(project=cfg.wandb.project, mode=cfg.wandb.mode, dir=cfg.out_dir, job_type="eval",
                      config={**settings, "suite": cfg.task_suite or cfg.env.default_suite})


def _log_episode(run, record: EpisodeRecord, out_dir: str) -> None:
    """One row per episode; its rollout video too when one was recorded."""
    row = {"episode/task_id": record.task_id, "episode/trial": record.trial, "episode/success": float(record.success),
           "episode/steps": record.steps, "episode/error": float(record.error is not None)}
    if record.video is not None:
        import wandb

        row["episode/video"] = wandb.Video(str(Path(out_dir) / record.video), format="mp4")
    run.log(row)
