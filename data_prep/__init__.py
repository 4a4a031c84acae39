"""One-time conversion of RLDS datasets into normalized WebDataset shards (``python -m data_prep``)."""

from data_prep.pipeline import prepare

__all__ = ["prepare"]
