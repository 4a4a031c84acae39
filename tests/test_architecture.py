"""The package layers of docs/architecture.md hold: import-linter contracts, and a contract layer without modules."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import subprocess

import pytest
from torch import nn

import vla.contract
from tests.conftest import REPO_ROOT


def test_import_linter_contracts_are_kept():
    """Layers, no cycles, a torch-free client and robot loop, TensorFlow only in data_prep (pyproject's [tool.importlinter])."""
    command = shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    done = subprocess.run([command, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "6 kept" in done.stdout, done.stdout


def test_contract_layer_holds_no_nn_modules():
    """OpenVLA's I/O contract is plain transforms: models and data both use it, neither owns it."""
    modules = [importlib.import_module(m.name) for m in pkgutil.iter_modules(vla.contract.__path__, "vla.contract.")]
    assert len(modules) >= 5
    offenders = [f"{module.__name__}.{name}" for module in modules for name, obj in vars(module).items()
                 if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__]
    assert offenders == []
