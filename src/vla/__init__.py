"""vla: train, evaluate and serve OpenVLA-class Vision-Language-Action policies."""

__version__ = "0.1.0"
