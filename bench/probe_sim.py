"""Fast recipe search for the sim closed loop: in-memory expert demos -> plain training loop -> rollouts.

    python bench/probe_sim.py [--suite sim_reach] [--objects 3] [--episodes 600] [--steps 2000] [--paired]
                              [--vision tiny-dinosiglip-112px] [--lr 1e-3] [--noise 0.0] [--trials 10] [--eval-every 0]

Skips RLDS/shards (no TensorFlow, no JPEG files) so a recipe can be tried in minutes; the model,
processor (OpenVLA prompt + 256-bin action tokens), statistics, policy wrapper and rollout loop are
the platform's own. A recipe found here is then run for the record through ``train.py`` with
``bench/bench_closed_loop.py``. Baseline, same model and scenes: the policy always told the suite's
first instruction (language-blind); with ``--suite sim_reach --objects 1`` there is one task and the
two coincide.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
import torch

from vla.contract.normalization import normalize
from vla.data.statistics import compute_statistics
from vla.sim import SimTaskSuite
from vla.sim.expert import ScriptedExpert
from vla.sim.scene import Scene
from vla.sim.suite import EVAL_SEED_BASE
from vla.contract.images import resize_like_openvla
from vla.eval.metrics import wilson_interval
from vla.policy import Policy
from vla.eval.rollout import run_episode
from vla.models import VLA, build_vla
from vla.training.module import warmup_cosine_factor

UNNORM_KEY = "vla_sim"


def keep_only_target(scene: Scene, colour: str) -> None:
    """Remove every block but the named one: a scene where reaching needs no language grounding."""
    keep = [scene.block_index(colour)]
    scene.colours = (colour,)
    scene.block_pos, scene.initial_block_pos = scene.block_pos[keep], scene.initial_block_pos[keep]


def demos(suite: SimTaskSuite, episodes: int, noise_std: float, seed: int, single_object_fraction: float = 0.0,
          paired: bool = False):
    """(frames, instructions, per-episode actions) of scripted demos on training scene seeds.

    A ``single_object_fraction`` of the episodes shows only the target block (a curriculum: the
    visuomotor skill without the colour binding). ``paired``: each scene is demonstrated once per
    task (same image, other instruction, other action), instead of one task per scene.
    """
    rng = np.random.default_rng(seed)
    frames, instructions, actions = [], [], []
    for index in range(episodes):
        if not paired or index % suite.n_tasks == 0:
            scene_seed = int(rng.integers(0, EVAL_SEED_BASE))
        env = suite.make_env(index % suite.n_tasks, wrist_image=False)
        expert = ScriptedExpert(noise_std=noise_std, seed=scene_seed)
        observation, _ = env.reset(seed=scene_seed)
        if rng.random() < single_object_fraction:
            keep_only_target(env.scene, env.task.target)
            observation = {"image": env.render()}  # only the primary camera is used here
        episode = []
        for _ in range(env.max_steps):
            action = expert.act(env.scene, env.task)
            frames.append(resize_like_openvla(observation["image"]))  # what VLAPolicy feeds the model at eval
            instructions.append(env.language)
            episode.append(action)
            observation, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        actions.append(np.stack(episode))
    return frames, instructions, actions


def shuffled_batches(processor, samples: list[dict], batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Collated batches forever, each epoch in a new random order (a short last batch of an epoch is skipped)."""
    order, cursor = rng.permutation(len(samples)), 0
    while True:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(samples)), 0
        yield processor.collate([samples[j] for j in order[cursor:cursor + batch_size]])
        cursor += batch_size


def closed_loop(vla: VLA, suite: SimTaskSuite, trials: int) -> dict[str, tuple[int, int]]:
    """(successes, episodes) of the trained policy and of the language-blind baseline on held-out scenes."""
    vla.eval()
    policy = Policy(vla, preprocessing="openvla-eval", unnorm_key=UNNORM_KEY)
    first = suite.get_task(0).language
    candidates = {"trained": policy, "language-blind": lambda image, _: policy(image, first)}
    results = {}
    for name, candidate in candidates.items():
        wins = count = 0
        for task_id in range(suite.n_tasks):
            for scene_seed in suite.get_task_init_states(task_id)[:trials]:
                episode = run_episode(suite.make_env(task_id, wrist_image=False), candidate, suite.get_task(task_id),
                                      scene_seed, num_steps_wait=0)
                wins, count = wins + episode.success, count + 1
        results[name] = (wins, count)
    vla.train()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="sim_reach", help="sim task suite (sim_reach, sim_push, ...)")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vision", default="tiny-dinosiglip-112px")
    parser.add_argument("--llm", default="tiny-llama")
    parser.add_argument("--noise", type=float, default=0.0, help="expert action noise std (m)")
    parser.add_argument("--single-object-fraction", type=float, default=0.0,
                        help="share of demos showing only the target block (curriculum)")
    parser.add_argument("--paired", action="store_true", help="demonstrate every task on each scene")
    parser.add_argument("--trials", type=int, default=10, help="held-out scenes per task")
    parser.add_argument("--eval-every", type=int, default=0, help="also roll out every N steps (a third of the trials)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    suite = SimTaskSuite(args.suite, n_objects=args.objects, n_init_states=args.trials)
    start = time.perf_counter()
    frames, instructions, actions = demos(suite, args.episodes, args.noise, args.seed, args.single_object_fraction, args.paired)
    statistics = compute_statistics(actions, None)
    normalized = normalize(np.concatenate(actions), statistics["action"])
    vla = build_vla(args.vision, args.llm, norm_stats={UNNORM_KEY: statistics}).train()
    processor = vla.processor
    samples = [processor.training_sample(f, i, a) for f, i, a in zip(frames, instructions, normalized)]
    print(f"{args.episodes} demos, {len(samples)} frames, {suite.n_tasks} tasks: {time.perf_counter() - start:.0f} s")

    optimizer = torch.optim.AdamW(vla.parameters(), lr=args.lr, weight_decay=0.0)
    # as conf/recipe/tiny.yaml: 5% linear warm-up, then cosine decay
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_factor(args.steps, warmup_ratio=0.05))
    batches, losses, l1s = shuffled_batches(processor, samples, args.batch_size, np.random.default_rng(args.seed)), [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = next(batches)
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(vla.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(out.loss.item())
        l1s.append(vla.action_metrics(out.logits, out.targets)["l1"].item())
        if step % 100 == 0:
            print(f"step {step}: loss {np.mean(losses[-100:]):.3f}, action L1 {np.mean(l1s[-100:]):.3f}, "
                  f"{(time.perf_counter() - start) / step:.3f} s/step", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            print(f"  step {step} closed loop: {closed_loop(vla, suite, max(1, args.trials // 3))}", flush=True)
    train_s = time.perf_counter() - start

    results = closed_loop(vla, suite, args.trials)
    print(f"\n{args.suite}, {args.objects} object(s): {args.episodes} noise-{args.noise} demos, {args.steps} steps "
          f"(batch {args.batch_size}, lr {args.lr}, {args.vision} + {args.llm}{', paired' if args.paired else ''}), train {train_s:.0f} s")
    print("| policy | success | 95% Wilson CI |\n|:--|--:|:--|")
    for name, (wins, count) in results.items():
        low, high = wilson_interval(wins, count)
        print(f"| {name} | {wins}/{count} = {wins / count:.0%} | [{low:.0%}, {high:.0%}] |")


if __name__ == "__main__":
    main()
