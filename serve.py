"""Serve an exported VLA over HTTP: ``python serve.py checkpoint=<dir> host=127.0.0.1 port=8000``."""

import hydra
import uvicorn
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    policy = instantiate(cfg.policy)
    app = instantiate(cfg.app, policy=policy)
    uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
