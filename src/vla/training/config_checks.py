"""Start-up checks of the train config: a bad value fails at once, naming the key, the value and what is allowed.

Without them a typo surfaces minutes later, after data generation and model building, as the error of
whatever first touches the value ("'<=' not supported between instances of 'str' and 'int'"), or is
accepted silently (``trainer.max_steps=0`` exports an untrained model, ``checkpoint_every_n_steps=0``
writes no checkpoint until the end). ``resume=`` is checked by :func:`vla.training.resume.resolve_resume`.
Values that are only wrong together (a ``tokens`` head with chunks, ``step-decay`` without its step) are checked
by :data:`COMBINATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vla.data.registry import IMAGE_VIEWS
from vla.models.heads import ACTION_HEADS, REGRESSION_LOSSES
from vla.training.module import LR_SCHEDULES
from vla.training.sharding import MIXED_PRECISION_POLICIES, fsdp_config_problem
from vla.training.stages import STAGES

STRATEGIES = ("auto", "ddp", "fsdp")  # strategy.name, built by vla.training.run.build_strategy
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")  # the values of conf/precision/*.yaml
_ABSENT = object()


class ConfigError(ValueError):
    """A config value train.py cannot run with; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """A value passes when its type is one of ``types`` (``bool`` only when listed) and ``ok(value)`` holds."""

    types: tuple[type, ...]
    ok: Callable[[Any], bool]
    allowed: str

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:  # True is an int to isinstance
            return False
        return isinstance(value, self.types) and self.ok(value)


def integer(low: int, high: int | None = None) -> Rule:
    if high is None:
        return Rule((int,), lambda v: v >= low, f"an integer >= {low}")
    return Rule((int,), lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


def number(ok: Callable[[float], bool], allowed: str, optional: bool = False) -> Rule:
    types = (int, float, type(None)) if optional else (int, float)
    return Rule(types, lambda v: v is None or ok(v), allowed + (" or null" if optional else ""))


def one_of(choices: Sequence[str]) -> Rule:
    return Rule((str,), lambda v: v in choices, "one of " + ", ".join(choices))


FLAG = Rule((bool,), lambda v: True, "true or false")
VIEWS = Rule((ListConfig, list, tuple), lambda v: len(v) > 0 and len(set(v)) == len(v) and all(x in IMAGE_VIEWS for x in v),
             "a non-empty list of distinct views from " + ", ".join(IMAGE_VIEWS))


RULES: dict[str, Rule] = {
    "seed": integer(0, 2**32 - 1),
    "resume": Rule((str, type(None)), lambda v: True, "null, auto or the path of a .ckpt file written by train.py"),
    "checkpoint_every_n_steps": integer(1),
    "checkpoint_keep_last": Rule((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null (keep all)"),
    "checkpoint_trainable_only": FLAG,
    "export": FLAG,
    "head.name": one_of(tuple(ACTION_HEADS)),
    "head.chunk_size": integer(1),
    "head.loss": one_of(tuple(REGRESSION_LOSSES)),
    "data.image_views": VIEWS,
    "data.proprio": FLAG,
    "model.film": FLAG,
    "module.stage": one_of(STAGES),
    "module.learning_rate": number(lambda v: v > 0, "a number > 0"),
    "module.weight_decay": number(lambda v: v >= 0, "a number >= 0"),
    "module.lr_schedule": one_of(LR_SCHEDULES),
    "module.warmup_ratio": number(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "module.lr_decay_after_steps": Rule((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "module.lr_decay_factor": number(lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "module.activation_checkpointing": FLAG,
    "data.datamodule.batch_size": integer(1),
    "data.datamodule.num_workers": integer(0),
    "data.datamodule.shuffle_buffer": integer(0),
    "trainer.max_steps": integer(1),
    "trainer.val_check_interval": integer(1),
    "trainer.limit_val_batches": number(lambda v: v >= 0 and (isinstance(v, int) or v <= 1),
                                        "an integer >= 0 (batches) or a fraction in [0, 1]"),
    "trainer.log_every_n_steps": integer(1),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.gradient_clip_val": number(lambda v: v >= 0, "a number >= 0", optional=True),
    "trainer.precision": one_of(PRECISIONS),
    "trainer.num_nodes": integer(1),
    "strategy.name": one_of(STRATEGIES),
    "strategy.reshard_after_forward": FLAG,
    "strategy.mixed_precision": Rule((str, type(None)), lambda v: v is None or v in MIXED_PRECISION_POLICIES,
                                     "null or one of " + ", ".join(MIXED_PRECISION_POLICIES)),
    "strategy.hybrid": FLAG,
    "strategy.replicate_degree": Rule((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "strategy.shard_degree": Rule((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null"),
}


def _head_chunk_size(cfg: DictConfig) -> str | None:
    head, size = OmegaConf.select(cfg, "head.name"), OmegaConf.select(cfg, "head.chunk_size")
    if head in ACTION_HEADS and not ACTION_HEADS[head].chunked and size != 1:
        chunked = [name for name, spec in ACTION_HEADS.items() if spec.chunked]
        return (f"head.chunk_size={size!r}: the {head} head predicts one action per pass, expected 1 "
                f"(chunks need head={' or head='.join(chunked)})")
    return None


def _head_for_data(cfg: DictConfig) -> str | None:
    """A head preset made for one dataset (``head.only_for_data``: the embedded default's ``sim-chunk``) refuses the
    others, so an OpenVLA run that forgets ``head=tokens`` fails at once instead of training the sim's chunk head."""
    only_for, data = OmegaConf.select(cfg, "head.only_for_data"), OmegaConf.select(cfg, "data.name")
    if only_for is not None and data != only_for:
        return (f"head.only_for_data={only_for!r}: this head preset is for data {only_for!r}, not {data!r}; choose "
                "head=tokens (OpenVLA's action tokens) or head=l1 (OpenVLA-OFT's chunks)")
    return None


def _lr_decay_step(cfg: DictConfig) -> str | None:
    if OmegaConf.select(cfg, "module.lr_schedule") == "step-decay" and OmegaConf.select(cfg, "module.lr_decay_after_steps") is None:
        return "module.lr_decay_after_steps=None: expected an integer >= 1 with module.lr_schedule='step-decay'"
    return None


def _strategy_options(cfg: DictConfig) -> str | None:
    """FSDP2 options only with ``strategy.name=fsdp``; its mesh must fit the devices, its precision policy the
    trainer's (see :mod:`vla.training.sharding`)."""
    strategy = OmegaConf.select(cfg, "strategy")
    if strategy is None:
        return None
    return fsdp_config_problem(strategy, OmegaConf.select(cfg, "trainer.precision"),
                               OmegaConf.select(cfg, "trainer.num_nodes", default=1), OmegaConf.select(cfg, "trainer.devices", default=1))


COMBINATIONS: tuple[Callable[[DictConfig], str | None], ...] = (_head_chunk_size, _head_for_data, _lr_decay_step,
                                                                _strategy_options)


def config_problems(cfg: DictConfig) -> list[str]:
    """One ``key=value: expected ...`` line per value of ``cfg`` that breaks its rule (absent keys pass), then one
    per broken :data:`COMBINATIONS` check, run once every value passed its own rule."""
    problems = []
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not rule.accepts(value):
            problems.append(f"{key}={value!r}: expected {rule.allowed}")
    if not problems:
        problems = [problem for check in COMBINATIONS if (problem := check(cfg)) is not None]
    return problems


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every bad value, before any data or model is touched."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("Invalid train config (fix these overrides):\n  " + "\n  ".join(problems))
