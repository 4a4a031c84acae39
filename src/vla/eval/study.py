"""Instruction-sensitivity studies: run a suite of (image, instruction) cases against a policy.

``vla-study suite=<suite.json> server=http://127.0.0.1:8000 repeats=5`` (or
``checkpoint=<exported dir>`` to load the model locally) writes ``study.json``, ``cases.csv`` and
``pairs.csv`` to ``out_dir``: per-case actions, latency, repeatability (largest spread of any action
dimension across repeats) and the L2 distance between the mean actions of every two instructions
asked about the same image (e.g. "pick up the screw" vs "pick up the red screw"). Chunk models answer
[K, D] per query: the statistics then run over every value of the chunk (L2: Frobenius), and the CSV
has one column per chunk step and dimension (``action_<k>_<d>``).

Suite file (image paths are relative to it; ``.png``/``.jpg`` or ``.npy`` uint8 [H, W, 3]); a case may
add a ``wrist_image`` path and a raw ``state`` list for models with a wrist view or proprio::

    {"name": "screws", "repeats": 3, "unnorm_key": null,
     "cases": [{"id": "screw", "image": "table.png", "instruction": "pick up the screw"}, ...]}
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vla.atomic import write_json_atomic
from vla.client import ActionSource, PolicyClient
from vla.policy import load_policy


@dataclass(frozen=True)
class Case:
    case_id: str
    image_path: str
    instruction: str
    wrist_image_path: str | None = None
    state: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    cases: list[Case]
    repeats: int
    unnorm_key: str | None
    root: Path


def load_suite(path: str | Path) -> Suite:
    """Parse and check a suite file; every problem names the case it is in."""
    path = Path(path)
    spec = json.loads(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("cases"), list) or not spec["cases"]:
        raise ValueError(f"{path}: a suite is a JSON object with a non-empty 'cases' list")
    cases = []
    for index, raw in enumerate(spec["cases"]):
        if not isinstance(raw, dict) or not {"image", "instruction"} <= set(raw):
            raise ValueError(f"{path}: case {index} needs 'image' and 'instruction'")
        if not str(raw["instruction"]).strip():
            raise ValueError(f"{path}: case {index} has an empty instruction")
        state = raw.get("state")
        if state is not None and (not isinstance(state, list) or not state
                                  or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in state)):
            raise ValueError(f"{path}: case {index} 'state' must be a non-empty list of numbers, got {state!r}")
        wrist = raw.get("wrist_image")
        cases.append(Case(str(raw.get("id", f"case{index}")), str(raw["image"]), str(raw["instruction"]),
                          None if wrist is None else str(wrist), None if state is None else tuple(float(x) for x in state)))
    ids = [case.case_id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: case ids must be unique, got {ids}")
    repeats = spec.get("repeats", 1)
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"{path}: 'repeats' must be a positive int, got {repeats!r}")
    return Suite(str(spec.get("name", path.stem)), cases, repeats, spec.get("unnorm_key"), path.parent)


def load_image(path: Path) -> np.ndarray:
    """An RGB uint8 [H, W, 3] image from an image file or a plain ``.npy`` array (no pickle)."""
    if path.suffix == ".npy":
        image = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
    return image


def run_study(policy: ActionSource, suite: Suite, repeats: int | None = None) -> dict[str, Any]:
    """Ask ``policy`` every case ``repeats`` times; returns the report written by :func:`write_report`."""
    repeats = repeats or suite.repeats
    paths = {p for case in suite.cases for p in (case.image_path, case.wrist_image_path) if p is not None}
    images = {p: load_image(suite.root / p) for p in paths}
    rows = []
    for case in suite.cases:
        query = case_observation(case, images)
        actions, latencies_ms = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            actions.append(np.asarray(policy.act(query, case.instruction, suite.unnorm_key), dtype=np.float64))
            latencies_ms.append(1000 * (time.perf_counter() - start))
        stacked = np.stack(actions)
        rows.append({
            "id": case.case_id, "image": case.image_path, "instruction": case.instruction,
            "actions": stacked.tolist(), "mean_action": stacked.mean(axis=0).tolist(),
            "max_deviation": float(np.ptp(stacked, axis=0).max()),
            "latency_ms": {"mean": float(np.mean(latencies_ms)), "p50": float(np.median(latencies_ms)),
                           "max": float(np.max(latencies_ms))},
        })
    return {"suite": suite.name, "repeats": repeats, "unnorm_key": suite.unnorm_key, "cases": rows,
            "pairs": same_image_pairs(rows)}


def case_observation(case: Case, images: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """What the policy is asked with: the image alone, or an observation dict when the case adds a wrist
    image or a state (the policy or client takes from it what its model uses)."""
    if case.wrist_image_path is None and case.state is None:
        return images[case.image_path]
    observation = {"image": images[case.image_path]}
    if case.wrist_image_path is not None:
        observation["wrist_image"] = images[case.wrist_image_path]
    if case.state is not None:
        observation["state"] = np.array(case.state, dtype=np.float64)
    return observation


def same_image_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """L2 between mean actions of every two cases that share an image."""
    pairs = []
    for a, b in itertools.combinations(rows, 2):
        if a["image"] == b["image"]:
            l2 = float(np.linalg.norm(np.subtract(a["mean_action"], b["mean_action"])))
            pairs.append({"image": a["image"], "case_a": a["id"], "case_b": b["id"],
                          "instruction_a": a["instruction"], "instruction_b": b["instruction"], "l2": l2})
    return pairs


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """``study.json`` (everything), ``cases.csv`` (one row per case) and ``pairs.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "study.json", report)
    with open(out / "cases.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "instruction", "repeats", "latency_ms_mean", "latency_ms_p50",
                         "max_deviation", *action_columns(np.shape(report["cases"][0]["mean_action"]))])
        for row in report["cases"]:
            writer.writerow([row["id"], row["image"], row["instruction"], report["repeats"], row["latency_ms"]["mean"],
                             row["latency_ms"]["p50"], row["max_deviation"], *np.ravel(row["mean_action"]).tolist()])
    with open(out / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "case_a", "case_b", "instruction_a", "instruction_b", "l2"])
        writer.writeheader()
        writer.writerows(report["pairs"])
    return out


def action_columns(shape: tuple[int, ...]) -> list[str]:
    """``action_<d>`` for actions [D]; ``action_<k>_<d>`` (chunk step k) for chunks [K, D]."""
    if len(shape) == 1:
        return [f"action_{d}" for d in range(shape[0])]
    return [f"action_{k}_{d}" for k in range(shape[0]) for d in range(shape[1])]


def make_policy(server: str | None = None, checkpoint: str | None = None, api_key: str | None = None,
                device: str = "cpu", dtype: str = "float32", quantize: str | None = None) -> ActionSource:
    """A client of a running server, or the checkpoint loaded in this process (exactly one of them)."""
    if (server is None) == (checkpoint is None):
        raise ValueError("Give exactly one of server=<url> or checkpoint=<exported dir>")
    if server is not None:
        return PolicyClient(server, api_key=api_key)
    return load_policy(checkpoint, device=device, dtype=dtype, quantize=quantize)


def run(suite: str, server: str | None = None, checkpoint: str | None = None, api_key: str | None = None,
        repeats: int | None = None, out_dir: str | None = None, device: str = "cpu", dtype: str = "float32",
        quantize: str | None = None) -> Path:
    """What ``vla-study`` does: load the suite, ask the policy, write the report; returns its directory."""
    loaded = load_suite(suite)
    report = run_study(make_policy(server, checkpoint, api_key, device, dtype, quantize), loaded, repeats)
    report["source"] = server or str(checkpoint)
    out = write_report(report, out_dir or loaded.root / f"{loaded.name}_study")
    print(f"wrote {out / 'study.json'}, {out / 'cases.csv'}, {out / 'pairs.csv'}")
    return out
