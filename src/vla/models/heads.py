"""Action heads: how a VLA turns the LLM's output into actions (docs/action-chunks.md).

``tokens`` is OpenVLA's: the LLM's own output layer over 256-bin action tokens, decoded greedily one
token at a time. ``l1`` is OpenVLA-OFT's: K x D placeholder positions decoded in one parallel pass, an MLP
(:class:`L1RegressionActionHead`) on their final hidden states regressing the normalized K x D chunk.
Module and parameter names follow OpenVLA-OFT's ``prismatic/models/action_heads.py`` so its released
``action_head`` checkpoints map onto ours directly.

The regression head trains with L1 as OFT does, or with MSE (:data:`REGRESSION_LOSSES`): from scratch, L1's
constant-size gradient left the tiny sim policy's first move at the targets' median for 1500 steps while MSE
learnt it, and the colour binding, in under 1000 (docs/benchmarks.md, "Binding check").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """Pre-LayerNorm feed-forward block with a residual connection (OFT's layout: ``ffn`` = LN, Linear, ReLU)."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> Linear -> ReLU -> residual blocks -> LN -> Linear (OFT's ``MLPResNet``)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """OFT's L1 head: the D hidden states of each chunk step, concatenated, -> that step's D actions.

    Reads ``[B, K*D, H]`` placeholder hidden states (step-major: step k's D positions are consecutive),
    returns ``[B, K, D]``.
    """

    def __init__(self, llm_dim: int, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.model = MLPResNet(num_blocks=2, input_dim=llm_dim * action_dim, hidden_dim=llm_dim, output_dim=action_dim)

    def predict_action(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` [B, K*D, H] -> actions [B, K, D]."""
        batch, positions, _ = hidden.shape
        if positions % self.action_dim:
            raise ValueError(f"{positions} placeholder positions per row are not a whole number of "
                             f"{self.action_dim}-dimensional actions")
        return self.model(hidden.reshape(batch, positions // self.action_dim, -1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predict_action(hidden)


@dataclass(frozen=True)
class ActionHeadSpec:
    """What a head needs from the config and which module (if any) it adds to the VLA."""

    description: str
    chunked: bool  # predicts K >= 1 steps per pass (False: chunk_size must be 1)
    needs_action_dim: bool  # its module's shape depends on D
    build: Callable[[int, int], nn.Module] | None  # (llm_dim, action_dim) -> the VLA's `action_head`; None: none


def _l1(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return (predicted - actions).abs().mean()


def _mse(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return (predicted - actions).square().mean()


# The chunk head's training loss over every K x D value (OFT's chunks repeat the last action past an episode's end).
REGRESSION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": _l1, "mse": _mse}


ACTION_HEADS: dict[str, ActionHeadSpec] = {
    "tokens": ActionHeadSpec("OpenVLA: 256-bin action tokens, greedy autoregressive decoding", chunked=False,
                             needs_action_dim=False, build=None),
    "l1": ActionHeadSpec("OpenVLA-OFT: parallel decoding of K x D placeholders, MLP head, L1 loss", chunked=True,
                         needs_action_dim=True, build=L1RegressionActionHead),
}
