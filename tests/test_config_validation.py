"""Bad train config values fail at start-up, naming the key, the value and what is allowed (no training here).

Each case runs ``train()`` on a config whose data does not exist: a value that slipped through would
fail later with another error (or train), so the match on the message also shows the check came first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.test_training import REPO, compose_train
from vla.training.config_checks import PRECISIONS, ConfigError
from vla.training.run import train


@pytest.mark.parametrize("override,named,allowed", [
    ("module.learning_rate=abc", "module.learning_rate='abc'", "a number > 0"),
    ("module.learning_rate=-1", "module.learning_rate=-1", "a number > 0"),
    ("module.warmup_ratio=1.5", "module.warmup_ratio=1.5", "a number in [0, 1)"),
    ("module.lr_schedule=cosine", "module.lr_schedule='cosine'", "one of constant, linear-warmup+cosine-decay"),
    ("data.datamodule.batch_size=abc", "data.datamodule.batch_size='abc'", "an integer >= 1"),
    ("data.datamodule.batch_size=0", "data.datamodule.batch_size=0", "an integer >= 1"),
    ("data.datamodule.num_workers=-1", "data.datamodule.num_workers=-1", "an integer >= 0"),
    ("seed=abc", "seed='abc'", "an integer in [0, 4294967295]"),
    ("trainer.max_steps=0", "trainer.max_steps=0", "an integer >= 1"),
    ("trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5", "an integer >= 1"),
    ("trainer.precision=64", "trainer.precision=64", "one of " + ", ".join(PRECISIONS)),
    ("checkpoint_every_n_steps=0", "checkpoint_every_n_steps=0", "an integer >= 1"),
    ("export=maybe", "export='maybe'", "true or false"),
    ("resume=3", "resume=3", "null, auto or the path of a .ckpt file written by train.py"),
    ("checkpoint_keep_last=0", "checkpoint_keep_last=0", "an integer >= 1 or null (keep all)"),
    ("checkpoint_keep_last=two", "checkpoint_keep_last='two'", "an integer >= 1 or null (keep all)"),
    ("checkpoint_trainable_only=yes", "checkpoint_trainable_only='yes'", "true or false"),
    ("module.activation_checkpointing=1", "module.activation_checkpointing=1", "true or false"),
])
def test_bad_value_is_named_with_what_is_allowed(tmp_path, override, named, allowed):
    with pytest.raises(ConfigError) as error:
        train(compose_train(tmp_path / "run", tmp_path / "no-data", override))
    assert f"{named}: expected {allowed}" in str(error.value)


def test_every_bad_value_is_listed_at_once(tmp_path):
    with pytest.raises(ConfigError) as error:
        train(compose_train(tmp_path / "run", tmp_path / "no-data", "seed=abc", "trainer.max_steps=0"))
    assert "seed='abc'" in str(error.value) and "trainer.max_steps=0" in str(error.value)


def _foreign_ckpt(tmp_path: Path) -> Path:
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    return tmp_path / "foreign.ckpt"


def _truncated_ckpt(tmp_path: Path) -> Path:
    torch.save({"vla": {}, "global_step": 3, "padding": torch.zeros(1000)}, tmp_path / "cut.ckpt")
    data = (tmp_path / "cut.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.ckpt"


@pytest.mark.parametrize("make_path,problem", [
    (lambda tmp_path: REPO / "README.md", "not a .ckpt file"),
    (lambda tmp_path: tmp_path / "nope.ckpt", "no such file"),
    (_foreign_ckpt, "was not written by train.py"),
    (_truncated_ckpt, "is not a complete PyTorch checkpoint"),
])
def test_resume_must_be_a_train_py_checkpoint(tmp_path, make_path, problem):
    path = str(make_path(tmp_path))
    with pytest.raises(ConfigError) as error:
        train(compose_train(tmp_path / "run", tmp_path / "no-data", f"resume={path}"))
    message = str(error.value)
    assert f"resume={path!r}" in message and problem in message and "null, auto or the path of a .ckpt" in message


def test_precision_choices_are_the_precision_group():
    """trainer.precision is checked against conf/precision (``precision=<name>`` is how it is chosen)."""
    values = {OmegaConf.load(f).precision for f in (REPO / "conf" / "precision").glob("*.yaml")}
    assert values == set(PRECISIONS)
