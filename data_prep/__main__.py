"""``python -m data_prep dataset=<name> source=<dir> out=<dir> [num_workers=4 ...]`` (same as ``vla-prep``)."""

from data_prep.cli import prep

if __name__ == "__main__":
    prep()
