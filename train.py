"""Train a VLA: `python train.py [model=...] [data=...] [stage=...] [key=value ...]` (= `vla-train`; see conf/train.yaml)."""

from vla.cli import train_command

if __name__ == "__main__":
    train_command()
