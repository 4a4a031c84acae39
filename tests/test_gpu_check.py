"""bench/gpu_check.py: its CPU quick mode runs every row (so the GPU script cannot rot between GPU runs),
its shape-only LLMs have the hub models' sizes, and its runs land under one "GPU check" heading."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vla.models import build_vla
from vla.models.llm import LLM_BACKBONES, register_llm_backbone

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "gpu_check.py"
ROWS = ("1a", "1b", "2a", "2b", "3", "3b", "4", "5")


@pytest.fixture(scope="module")
def gpu_check():
    """The script as a module (registered in sys.modules: its dataclasses resolve annotations through it)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_quick_cpu_mode_runs_every_row():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--no-append"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| row ")]
    statuses = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table}
    assert list(statuses) == list(ROWS), proc.stdout
    assert all(statuses[row] == "ok" for row in ROWS), statuses
    assert "ms/step" in proc.stdout and "Hz" in proc.stdout and "req/s" in proc.stdout and "actions/s" in proc.stdout


def test_rows_option_measures_only_the_named_rows():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--no-append", "--rows", "3,4"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| row ")]
    assert rows == ["3", "4"]
    bad = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--rows", "3,9"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--rows 9: unknown" in bad.stderr


def test_shape_only_llms_keep_the_hub_models_parameter_counts(gpu_check, monkeypatch):
    for name, spec in gpu_check.shape_only_backbones().items():
        monkeypatch.setitem(LLM_BACKBONES, name, spec)
    expected = {"qwen25-0_5b-shape": 1_252_496_448, "llama2-7b-shape": 7_541_237_184}  # docs/benchmarks.md, "Model sizes"
    for llm, params in expected.items():
        with torch.device("meta"):
            vla = build_vla("dinosiglip-224px", llm)
        assert sum(p.numel() for p in vla.parameters()) == params


def test_register_llm_backbone_refuses_an_existing_name():
    with pytest.raises(ValueError, match="already registered"):
        register_llm_backbone("tiny-llama", LLM_BACKBONES["tiny-llama"])


def test_runs_are_appended_inside_the_gpu_check_section(gpu_check, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Serving\n\ntext\n")
    gpu_check.append_to_docs(docs, "### run 1\n\n| table |\n")
    docs.write_text(docs.read_text() + "\n## Later section\n\nmore\n")
    gpu_check.append_to_docs(docs, "### run 2\n")
    text = docs.read_text()
    assert text.count("## GPU check") == 1
    order = [text.index(s) for s in ("## Serving", "## GPU check", "### run 1", "### run 2", "## Later section")]
    assert order == sorted(order), text
    assert "\n\n\n" not in text
