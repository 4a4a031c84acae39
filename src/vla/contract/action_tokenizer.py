"""OpenVLA's 256-bin action tokenizer, bit-exact in numpy and in torch.

Continuous normalized actions in [-1, 1] are discretized with ``np.digitize`` over 256 uniform bin
edges and mapped onto the *last* 256 ids of the LLM's base vocabulary (``vocab_size - idx``).
Decoding maps a token back to the centre of its bin. The torch path compares in float64 so that
float32 inputs lying exactly on a bin edge get the same ids as OpenVLA's float64 ``np.digitize``.
"""

from __future__ import annotations

import numpy as np
import torch


class ActionTokenizer:
    """Maps normalized continuous actions <-> LLM token ids (OpenVLA semantics).

    ``vocab_size`` is the tokenizer's *base* vocabulary (32000 for Llama-2), not the padded
    embedding size.
    """

    def __init__(self, vocab_size: int = 32000, n_bins: int = 256, min_action: float = -1.0, max_action: float = 1.0):
        if n_bins < 2 or n_bins >= vocab_size:
            raise ValueError(f"n_bins must be in [2, vocab_size); got n_bins={n_bins}, vocab_size={vocab_size}")
        if not min_action < max_action:
            raise ValueError(f"min_action ({min_action}) must be < max_action ({max_action})")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.min_action = float(min_action)
        self.max_action = float(max_action)
        self.bins = np.linspace(min_action, max_action, n_bins)  # float64 edges, as OpenVLA
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0  # n_bins - 1 values
        # Ids strictly greater than this are action tokens (OpenVLA's `action_token_begin_idx`).
        self.action_token_begin_idx = int(self.vocab_size - (self.n_bins + 1))
        self._torch_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- numpy (reference semantics)
    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalized actions (any shape) -> int64 token ids of the same shape. NaN -> like +inf."""
        clipped = np.clip(np.asarray(actions), self.min_action, self.max_action)
        # np.digitize compares in float64 (float32 inputs are upcast); NaN lands past the last edge.
        idx = np.digitize(clipped, self.bins)
        return (self.vocab_size - idx).astype(np.int64)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids (any shape) -> float64 normalized actions at the bin centres (ids are clipped)."""
        idx = self.vocab_size - np.asarray(token_ids, dtype=np.int64) - 1
        idx = np.clip(idx, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[idx]

    # ---------------------------------------------------------------- torch (batches on device)
    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._torch_cache:
            self._torch_cache[device] = (
                torch.as_tensor(self.bins, dtype=torch.float64, device=device),
                torch.as_tensor(self.bin_centers, dtype=torch.float64, device=device),
            )
        return self._torch_cache[device]

    def encode_torch(self, actions: torch.Tensor) -> torch.Tensor:
        """Torch twin of :meth:`encode`; agrees exactly with the numpy version."""
        bins, _ = self._tables(actions.device)
        x = actions.to(torch.float64).clamp(self.min_action, self.max_action)
        # bucketize(right=True) == np.digitize(right=False): bins[i-1] <= x < bins[i].
        idx = torch.bucketize(x, bins, right=True)
        idx = torch.where(torch.isnan(x), torch.full_like(idx, self.n_bins), idx)
        return self.vocab_size - idx

    def decode_torch(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Torch twin of :meth:`decode` (float64 output)."""
        _, centers = self._tables(token_ids.device)
        idx = (self.vocab_size - token_ids.long() - 1).clamp(0, centers.shape[0] - 1)
        return centers[idx]

    def is_action_token(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Mask of positions holding action tokens (OpenVLA's accuracy mask: id > begin idx)."""
        return token_ids > self.action_token_begin_idx

    def __repr__(self) -> str:
        return f"ActionTokenizer(vocab_size={self.vocab_size}, n_bins={self.n_bins}, range=[{self.min_action}, {self.max_action}])"
