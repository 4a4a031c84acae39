"""Console commands: every entry point is a Hydra app over the repository's ``conf/`` tree.

``vla-train`` / ``vla-eval`` / ``vla-serve`` / ``vla-export`` / ``vla-study`` / ``vla-robot``
(``python train.py``, ``eval.py`` and ``serve.py`` call the first three); data preparation and sim demos live with the
other RLDS code: ``vla-prep`` / ``vla-sim`` (:mod:`data_prep.cli`). Each function only composes the
config and hands it to the package that does the work, importing that package late so ``--help``
and config errors come back fast.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from vla import CONFIG_DIR


# Config choices that need a Hydra plugin from an extra: (override prefix, plugin module, extra).
SWEEP_PLUGINS = (
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("launcher=submitit", "hydra_plugins.hydra_submitit_launcher", "sweep"),
)


def require_plugins(overrides: Sequence[str]) -> None:
    """Stop before any work when a chosen sweeper/launcher's plugin is missing, naming the extra to install
    (Hydra itself only says that ``hydra/sweeper/optuna`` cannot be found)."""
    for override in overrides:
        for prefix, module, extra in SWEEP_PLUGINS:
            if override.startswith(prefix) and importlib.util.find_spec(module) is None:
                raise SystemExit(f"{override} needs the Hydra plugin {module.split('.')[-1]}, which is not installed: "
                                 f"pip install -e '.[{extra}]'")


def require_known_choices(overrides: Sequence[str], config_dir: Path = CONFIG_DIR) -> None:
    """Stop when a config-group choice names no file in ``conf/<group>/``, listing the choices.

    Hydra lists them for an unknown name, but a number (``precision=64``) fails inside its override
    parser with a traceback and no list.
    """
    for override in overrides:
        group, sep, value = override.partition("=")
        if not sep or group.startswith(("+", "~", "hydra")) or "@" in group or not (config_dir / group).is_dir():
            continue
        choices = sorted(path.stem for path in (config_dir / group).glob("*.yaml"))
        unknown = [choice for choice in value.split(",") if choice not in (*choices, "null")]
        if unknown:
            raise SystemExit(f"{override}: {', '.join(unknown)} is not a {group} config; choose one of {choices}")


def train_command() -> None:
    """``vla-train`` / ``python train.py``: :func:`train` after checking group choices and plugins."""
    require_known_choices(sys.argv[1:])
    require_plugins(sys.argv[1:])
    train()


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Train (and by default export) a VLA; returns val/loss for Hydra sweepers."""
    from vla.training.run import train as run_training

    return run_training(cfg).get("val/loss")


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def evaluate(cfg: DictConfig) -> None:
    """Closed-loop rollouts (``env=sim|libero``) or offline scores on prepared shards (``mode=offline``)."""
    from vla.eval.app import run_eval

    run_eval(cfg)


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve", version_base="1.3")
def serve(cfg: DictConfig) -> None:
    """Load a policy and answer ``POST /act`` until interrupted."""
    port = _port(cfg.port)  # before torch is even imported: a typo should not cost a minute
    import uvicorn

    from vla.serve.server import uvicorn_options

    policy = instantiate(cfg.policy)
    app = instantiate(cfg.app, policy=policy)
    uvicorn.run(app, host=cfg.host, port=port, **uvicorn_options(app))


def _port(port: object) -> int:
    """``port`` as an int in 1..65535, or an error naming the key and the value."""
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return int(port)


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base="1.3")
def export(cfg: DictConfig) -> Path:
    """A checkpoint -> a standalone model directory (LoRA merged) in our layout or, with ``format=openvla|oft``,
    OpenVLA's / OpenVLA-OFT's; returns the directory."""
    return instantiate(cfg.export)


@hydra.main(config_path=str(CONFIG_DIR), config_name="study", version_base="1.3")
def study(cfg: DictConfig) -> Path:
    """Instruction-sensitivity study of a served or local policy over a suite of cases; returns the report dir."""
    return instantiate(cfg.study)


@hydra.main(config_path=str(CONFIG_DIR), config_name="robot", version_base="1.3")
def robot(cfg: DictConfig) -> list[Path]:
    """Drive a robot (``robot=sim|widowx``) from a policy server's ``POST /act``; returns the episode recordings."""
    return instantiate(cfg.deploy)
