"""Closed loop on the built-in sim: does the embedded default learn to follow language?

Usage: python bench/bench_closed_loop.py [--run-dir runs/closed_loop] [--trials 20] [--suite sim_reach] [--objects 3]
                                         [--skip-train] [-- <train.py overrides>]

Trains with ``python train.py`` (the embedded default plus any overrides after ``--``), then rolls the
exported model out on held-out scene seeds of a sim suite. Baseline, measured in the same run on the
same scenes: the same trained model told one fixed instruction (the suite's first task) whatever the
task is, i.e. the same visuomotor skill without language (it succeeds on at most ~1 / n_tasks of
the tasks when the scene alone does not tell the tasks apart); and an untrained model of the same architecture (no skill at all).
The three success rates, with their 95% Wilson intervals, are also drawn to <run-dir>/closed_loop_<suite>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vla.sim import SimTaskSuite
from vla.policy import Policy
from vla.models import VLA, load_checkpoint
from vla.eval.charts import success_chart
from vla.eval.runner import evaluate

REPO = Path(__file__).resolve().parents[1]
UNNORM_KEY = "vla_sim"


class FixedInstructionPolicy:
    """The language-blind baseline: ``policy`` always hears ``instruction``."""

    def __init__(self, policy: Policy, instruction: str):
        self.policy, self.instruction = policy, instruction

    def __call__(self, observation: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        return self.policy(observation, self.instruction)


def sim_policy(vla: VLA) -> Policy:
    """The eval app's sim policy: OpenVLA's eval preprocessing, and the env state mapped into the demo
    data's proprio layout (conf/env/sim.yaml) for models that take proprio."""
    layout = OmegaConf.load(REPO / "conf" / "env" / "sim.yaml").proprio_from_state
    return Policy(vla, preprocessing="openvla-eval", unnorm_key=UNNORM_KEY,
                  proprio_from_state=list(layout) if vla.config.proprio_dim else None)


def train(run_dir: Path, overrides: list[str]) -> float:
    """Run train.py into ``run_dir``; returns its wall time in seconds (data generation included if it ran)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false",
                    *overrides], cwd=REPO, env=env, check=True)
    return time.perf_counter() - start


def run_config(run_dir: Path) -> dict:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return {"demos": cfg.data.embedded.episodes if cfg.data.get("embedded") else None,
            "max_steps": cfg.trainer.max_steps, "batch_size": cfg.data.datamodule.batch_size,
            "lr": cfg.module.learning_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "closed_loop")
    parser.add_argument("--suite", default="sim_reach")
    parser.add_argument("--objects", type=int, default=3, help="blocks per scene (as data.embedded.n_objects)")
    parser.add_argument("--trials", type=int, default=20, help="held-out scenes per task")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing <run-dir>/export")
    parser.add_argument("--open-loop-steps", type=int, help="chunk models: actions run per query (default: the chunk)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args()

    train_s = None if args.skip_train else train(args.run_dir, args.overrides)
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    vla = load_checkpoint(args.run_dir / "export")
    policy = sim_policy(vla)
    suite = SimTaskSuite(args.suite, n_objects=args.objects, n_init_states=args.trials)
    blind = FixedInstructionPolicy(policy, suite.get_task(0).language)
    torch.manual_seed(0)
    untrained = sim_policy(VLA(vla.config, norm_stats=vla.norm_stats).eval())
    rows = {}
    for name, candidate in (("trained", policy), ("language-blind", blind), ("untrained", untrained)):
        start = time.perf_counter()
        results = evaluate(suite, candidate, args.run_dir / f"closed_loop_{args.suite}_{name}",
                           num_trials_per_task=args.trials, num_steps_wait=0, progress=False,
                           num_open_loop_steps=args.open_loop_steps,
                           settings={"policy": name, "checkpoint": str(args.run_dir / "export")})
        rows[name] = {**results["suite"], "eval_s": time.perf_counter() - start}

    config = run_config(args.run_dir)
    print(f"\nClosed loop: {args.suite}, {suite.n_objects} object(s), {args.trials} held-out scenes x {suite.n_tasks} tasks "
          f"(a language-blind policy can succeed on at most ~{1 / suite.n_tasks:.0%} of them)")
    print(f"demos {config['demos']} | steps {metrics['global_step']} (batch {config['batch_size']}, lr {config['lr']}) | "
          f"train wall {'-' if train_s is None else f'{train_s:.0f} s'} | "
          f"val action acc {metrics.get('val/action_accuracy', float('nan')):.3f} | val L1 {metrics.get('val/l1', float('nan')):.4f} | "
          f"head {vla.config.action_head} (K={vla.config.chunk_size}), views {list(vla.config.image_views)}, "
          f"proprio {vla.config.proprio_dim}, FiLM {vla.config.film}")
    print("| policy | success | episodes | 95% Wilson CI | mean steps | eval wall s | vs baseline |")
    print("|:--|--:|--:|:--|--:|--:|--:|")
    base = rows["language-blind"]["success_rate"]
    for name, row in rows.items():
        ratio = f"{row['success_rate'] / base:.2f}x" if base else "-"  # undefined against a 0% baseline
        print(f"| {name} | {row['success_rate']:.1%} | {row['episodes']} | [{row['ci95_low']:.1%}, {row['ci95_high']:.1%}] | "
              f"{row['mean_steps']:.1f} | {row['eval_s']:.0f} | {ratio} |")
    chart = success_chart(rows, args.run_dir / f"closed_loop_{args.suite}.png",
                          f"{args.suite}, {suite.n_objects} object(s): {args.trials} held-out scenes x {suite.n_tasks} tasks",
                          reference=(1 / suite.n_tasks, f"language-blind ceiling ~{1 / suite.n_tasks:.0%}"))
    print(f"chart: {chart}")


if __name__ == "__main__":
    main()
