"""The study runner: suites of (image, instruction) cases against a server or a local checkpoint."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hydra.errors import InstantiationException
from PIL import Image
from test_serve import export_tiny_vla, random_images

from vla.serve.app import ServeSettings, create_app
from vla.policy import load_policy
from vla.serve.server import BackgroundServer
from tests.conftest import compose_cli
from vla.cli import study as study_cli
from vla.eval.study import load_suite, run_study

INSTRUCTIONS = ["pick up the screw", "pick up the red screw", "push the screw left"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_export_study")
    export_tiny_vla(out)
    return out


@pytest.fixture
def suite_file(tmp_path):
    table, shelf = random_images(2, seed=5)
    Image.fromarray(table).save(tmp_path / "table.png")
    np.save(tmp_path / "shelf.npy", shelf)
    cases = [{"id": f"table{i}", "image": "table.png", "instruction": text} for i, text in enumerate(INSTRUCTIONS)]
    cases.append({"id": "shelf", "image": "shelf.npy", "instruction": "pick up the screw"})
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "screws", "repeats": 2, "cases": cases}))
    return path


def test_study_against_server_writes_json_and_csv(checkpoint, suite_file, tmp_path):
    local = load_policy(checkpoint)
    with BackgroundServer(create_app(local, ServeSettings(max_batch_size=4, max_wait_ms=2))) as server:
        out = study_cli(compose_cli("study", f"suite={suite_file}", f"server={server.url}", "repeats=3", f"out_dir={tmp_path / 'out'}"))
    report = json.loads((out / "study.json").read_text())
    assert report["repeats"] == 3 and report["source"] == server.url and len(report["cases"]) == 4
    table = load_suite(suite_file).root / "table.png"
    expected = local.act(np.asarray(Image.open(table).convert("RGB")), INSTRUCTIONS[1])
    second = report["cases"][1]
    assert len(second["actions"]) == 3
    np.testing.assert_allclose(second["mean_action"], expected)
    assert second["max_deviation"] == 0.0  # greedy decoding is deterministic
    assert second["latency_ms"]["p50"] > 0
    pairs = {(p["case_a"], p["case_b"]): p["l2"] for p in report["pairs"]}
    assert set(pairs) == {("table0", "table1"), ("table0", "table2"), ("table1", "table2")}  # not across images
    means = {c["id"]: np.array(c["mean_action"]) for c in report["cases"]}
    assert pairs[("table0", "table1")] == pytest.approx(np.linalg.norm(means["table0"] - means["table1"]))
    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["table0", "table1", "table2", "shelf"]
    assert float(rows[1]["action_6"]) == pytest.approx(expected[6])
    with open(out / "pairs.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_study_runs_on_a_local_checkpoint(checkpoint, suite_file):
    report = run_study(load_policy(checkpoint), load_suite(suite_file), repeats=1)
    assert [c["id"] for c in report["cases"]] == ["table0", "table1", "table2", "shelf"]
    assert all(np.isfinite(c["mean_action"]).all() and len(c["mean_action"]) == 7 for c in report["cases"])


def test_bad_suites_and_options_are_refused(tmp_path, suite_file):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cases": [{"image": "x.png", "instruction": " "}]}))
    with pytest.raises(ValueError, match="empty instruction"):
        load_suite(bad)
    bad.write_text(json.dumps({"cases": []}))
    with pytest.raises(ValueError, match="non-empty 'cases'"):
        load_suite(bad)
    with pytest.raises(InstantiationException, match="exactly one of"):  # Hydra's wrapper names vla.eval.study.run
        study_cli(compose_cli("study", f"suite={suite_file}"))
