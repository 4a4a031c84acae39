"""CLI: ``python -m data_prep dataset=<name> source=<dir> out=<dir> [num_workers=4 ...]``."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="../conf", config_name="data_prep")
def main(cfg: DictConfig) -> None:
    out = instantiate(cfg.prepare)
    print(f"prepared {cfg.prepare.dataset} -> {out}")


if __name__ == "__main__":
    main()
