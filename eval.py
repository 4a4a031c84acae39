"""Evaluate a VLA: closed loop (`python eval.py checkpoint=<ckpt> env=sim|libero`) or offline on shards (`mode=offline data=sim`)."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from vla.eval.app import run_eval

    run_eval(cfg)


if __name__ == "__main__":
    main()
