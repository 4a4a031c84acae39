"""Colour binding, offline: does the policy's first move depend on *which* block the instruction names?

    python bench/binding_check.py [--head l1] [--chunk-size 4] [--film] [--paired] [--scenes 1000] [--steps 1500]
                                  [--batch-size 32] [--eval-every 250] [--chart binding.png]

The closed loop on the 3-block ``sim_reach`` task fails when the policy reaches *a* block but not the named
one. This check isolates that binding on the first frame of each scene, where the expert's first move in x
(dim 0) points at the named block (the gripper starts above every block's row, so x is the colour-dependent
axis): the platform's model, processor and statistics are trained on (first frame, instruction, expert chunk)
examples of training scenes and scored on held-out scenes with each of their three instructions, twice:

- **told**: the scene's real instruction; **blind**: always "move to the red block" (the closed loop's
  language-blind baseline). A policy that ignores the words scores the same on both.
- x L1 (normalized units) of the first action, and x sign accuracy where the expert moves decisively
  (|x| >= 0.5 normalized). Binding = blind x L1 - told x L1 (0 when the words are ignored).

``--paired`` demonstrates each training scene with all three instructions (same image, other targets);
unpaired uses three times as many scenes, one instruction each (same number of examples).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vla.contract.images import resize_like_openvla
from vla.contract.normalization import normalize
from vla.data.statistics import compute_statistics
from vla.models import VLA, build_vla
from vla.sim import SimTaskSuite
from vla.sim.expert import ScriptedExpert
from vla.sim.suite import EVAL_SEED_BASE
from vla.training.module import warmup_cosine_factor

from probe_sim import shuffled_batches  # bench/ is on the path when this script runs

DECISIVE = 0.5  # |normalized x| at or above which the expert clearly moves one way


def first_frames(suite: SimTaskSuite, scene_seeds: list[int], tasks_per_scene: list[list[int]], chunk_size: int):
    """(images, instructions, task ids, expert chunks [K, 7]) for the first frame of each (scene, task)."""
    images, instructions, task_ids, chunks = [], [], [], []
    for seed, tasks in zip(scene_seeds, tasks_per_scene):
        for task_id in tasks:
            env = suite.make_env(task_id, wrist_image=False)
            observation, _ = env.reset(seed=seed)
            images.append(resize_like_openvla(observation["image"]))
            instructions.append(env.language)
            task_ids.append(task_id)
            expert, chunk = ScriptedExpert(noise_std=0.0), []
            for _ in range(chunk_size):
                chunk.append(expert.act(env.scene, env.task))
                _, _, terminated, truncated, _ = env.step(chunk[-1])
                if terminated or truncated:
                    break
            chunks.append(np.stack(chunk + [chunk[-1]] * (chunk_size - len(chunk))))
    return images, instructions, task_ids, chunks


@torch.no_grad()
def first_move_x(vla: VLA, images: list[np.ndarray], instructions: list[str], batch_size: int = 64) -> np.ndarray:
    """The model's normalized x of the first action for each (image, instruction): the chunk head's first
    step, or the token head's greedy first action token (teacher-forced prompt)."""
    vla.eval()
    processor, values = vla.processor, []
    for start in range(0, len(images), batch_size):
        rows = range(start, min(start + batch_size, len(images)))
        if vla.config.action_head == "tokens":
            unused_action = np.zeros(7)  # only the teacher-forced prompt matters for the first token
            batch = processor.collate([processor.training_sample(images[i], instructions[i], unused_action) for i in rows])
            out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
            per_example = out.logits.shape[0] // len(rows)  # labelled positions: 7 action tokens + stop
            first = out.logits[::per_example].argmax(dim=-1)
            values.append(vla.action_tokenizer.decode_torch(first).float().numpy())
        else:
            batch = processor.inference_batch([images[i] for i in rows], [instructions[i] for i in rows])
            chunk = vla.predict_action_chunk(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                             batch["action_mask"])
            values.append(chunk[:, 0, 0].numpy())
    vla.train()
    return np.concatenate(values)


def score(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(x L1, x sign accuracy where the expert moves decisively)."""
    decisive = np.abs(target) >= DECISIVE
    return float(np.abs(predicted - target).mean()), float((np.sign(predicted[decisive]) == np.sign(target[decisive])).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", choices=("tokens", "l1"), default="l1")
    parser.add_argument("--chunk-size", type=int, default=4, help="K for the l1 head (the token head predicts 1)")
    parser.add_argument("--loss", choices=("l1", "mse"), default="l1", help="the chunk head's regression loss")
    parser.add_argument("--film", action="store_true", help="FiLM the vision blocks with the instruction (OFT+)")
    parser.add_argument("--paired", action="store_true", help="each training scene with all three instructions")
    parser.add_argument("--objects", type=int, default=3, help="blocks per scene (1: a control that needs no binding)")
    parser.add_argument("--scenes", type=int, default=1000, help="training scenes when paired (x3 unpaired)")
    parser.add_argument("--held-out", type=int, default=100, help="held-out scenes (each with all three instructions)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--vision", default="tiny-dinosiglip-112px")
    parser.add_argument("--llm", default="tiny-llama")
    parser.add_argument("--chart", default=None, help="write the told/blind x L1 curves to this PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    chunk_size = args.chunk_size if args.head == "l1" else 1

    suite = SimTaskSuite("sim_reach", n_objects=args.objects)
    tasks = list(range(suite.n_tasks))
    n_train = args.scenes if args.paired else args.scenes * suite.n_tasks
    train_seeds = [int(s) for s in rng.choice(EVAL_SEED_BASE, size=n_train, replace=False)]
    train_tasks = [tasks] * n_train if args.paired else [[int(rng.integers(suite.n_tasks))] for _ in range(n_train)]
    start = time.perf_counter()
    images, instructions, _, chunks = first_frames(suite, train_seeds, train_tasks, chunk_size)
    held_seeds = [EVAL_SEED_BASE + 10_000 + i for i in range(args.held_out)]
    test_images, test_instructions, _, test_chunks = first_frames(suite, held_seeds, [tasks] * args.held_out, chunk_size)
    statistics = compute_statistics(chunks, None)
    targets = [normalize(c, statistics["action"]) for c in chunks]
    test_x = np.array([normalize(c, statistics["action"])[0, 0] for c in test_chunks])
    blind = [suite.get_task(0).language] * len(test_images)
    print(f"{len(images)} training examples ({'paired' if args.paired else 'unpaired'}), {len(test_images)} held-out; "
          f"{time.perf_counter() - start:.0f} s to generate", flush=True)

    vla = build_vla(args.vision, args.llm, norm_stats={"vla_sim": statistics}, action_head=args.head,
                    chunk_size=chunk_size, film=args.film).train()
    processor = vla.processor
    samples = [processor.training_sample(i, t, a if args.head == "l1" else a[0])
               for i, t, a in zip(images, instructions, targets)]
    optimizer = torch.optim.AdamW(vla.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_factor(args.steps, warmup_ratio=0.05))
    batches, curve = shuffled_batches(processor, samples, args.batch_size, rng), []
    print("| step | told: x L1 | blind: x L1 | binding (blind - told) | told: x sign acc | blind: x sign acc | s/step |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = next(batches)
        chunk = {"action_mask": batch["action_mask"], "actions": batch["actions"], "regression_loss": args.loss} \
            if args.head == "l1" else {}
        loss = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"], **chunk).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vla.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            told = score(first_move_x(vla, test_images, test_instructions), test_x)
            deaf = score(first_move_x(vla, test_images, blind), test_x)
            curve.append((step, told, deaf))
            print(f"| {step} | {told[0]:.3f} | {deaf[0]:.3f} | {deaf[0] - told[0]:+.3f} | {told[1]:.2f} | {deaf[1]:.2f} | "
                  f"{(time.perf_counter() - start) / step:.2f} |", flush=True)
    if args.chart:
        head = f"l1 head, K={chunk_size}, {args.loss} loss" if args.head == "l1" else "token head"
        write_chart(curve, args.chart, f"{head}{' + FiLM' if args.film else ''}, {'paired' if args.paired else 'unpaired'}")


def write_chart(curve: list, path: str, title: str) -> None:
    """Told vs blind x L1 against the step: the gap between the lines is the binding."""
    figure = Figure(figsize=(5, 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    steps = [c[0] for c in curve]
    axes.plot(steps, [c[1][0] for c in curve], marker="o", label="told the named colour")
    axes.plot(steps, [c[2][0] for c in curve], marker="o", label='blind (always "red")')
    axes.set(title=title, xlabel="optimizer step", ylabel="held-out first-move x L1")
    axes.grid(alpha=0.3)
    axes.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)


if __name__ == "__main__":
    main()
