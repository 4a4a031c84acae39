"""Train a VLA: `python train.py [model=...] [data=...] [stage=...] [key=value ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from vla.training.run import train

    metrics = train(cfg)
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
