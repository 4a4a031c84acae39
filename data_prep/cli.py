"""Console commands of the RLDS side: ``vla-prep`` (RLDS -> shards) and ``vla-sim`` (sim demos -> RLDS)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from vla import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="data_prep", version_base="1.3")
def prep(cfg: DictConfig) -> Path:
    out = instantiate(cfg.prepare)
    print(f"prepared {cfg.prepare.dataset} -> {out}")
    return out


@hydra.main(config_path=str(CONFIG_DIR), config_name="sim_demos", version_base="1.3")
def sim(cfg: DictConfig) -> Path:
    out = instantiate(cfg.generate)
    print(f"vla_sim written to {out}")
    return out
