"""Projectors into the LLM's embedding space: vision patches (Prismatic shapes), proprio (OpenVLA-OFT's)."""

from __future__ import annotations

from torch import nn

PROJECTORS = ("linear", "gelu-mlp", "fused-gelu-mlp")


class LinearProjector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)

    def forward(self, x):
        return self.fc1(x)


class MLPProjector(nn.Module):
    """vision_dim -> llm_dim -> llm_dim with a GELU in between."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class FusedMLPProjector(nn.Module):
    """OpenVLA's projector for fused backbones: vision_dim -> 4 vision_dim -> llm_dim -> llm_dim."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class ProprioProjector(nn.Module):
    """OFT's proprio projector: the robot state -> one LLM token (proprio_dim -> llm_dim -> llm_dim, GELU).

    Names (``fc1``, ``act_fn1``, ``fc2``) follow OFT's ``prismatic/models/projectors.py`` so its released
    ``proprio_projector`` checkpoints load directly.
    """

    def __init__(self, llm_dim: int, proprio_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio):
        return self.fc2(self.act_fn1(self.fc1(proprio)))


def build_projector(kind: str, vision_dim: int, llm_dim: int) -> nn.Module:
    classes = {"linear": LinearProjector, "gelu-mlp": MLPProjector, "fused-gelu-mlp": FusedMLPProjector}
    if kind not in classes:
        raise ValueError(f"Unknown projector {kind!r}; choose one of {PROJECTORS}")
    return classes[kind](vision_dim, llm_dim)
