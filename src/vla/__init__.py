"""vla: train, evaluate and serve OpenVLA-class Vision-Language-Action policies."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra config tree every entry point composes (conf/ at the repository root; editable installs).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
