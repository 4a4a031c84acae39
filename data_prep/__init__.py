"""One-time conversion of RLDS datasets into normalized WebDataset shards (``python -m data_prep``)."""

from data_prep.prepare import prepare

__all__ = ["prepare"]
