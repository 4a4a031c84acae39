"""Evaluate a VLA: closed loop (`python eval.py checkpoint=<ckpt> env=sim|libero`) or offline on shards (`mode=offline data=sim`); = `vla-eval`."""

from vla.cli import evaluate

if __name__ == "__main__":
    evaluate()
