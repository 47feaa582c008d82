from __future__ import annotations

from typing import Protocol

import torch


class Backend(Protocol):
    name: str
    device: torch.device

    def encode(
        self,
        movie: torch.Tensor,  # (B, I, D)
        movie_valid: torch.Tensor,  # (B, I) bool
        slots: torch.Tensor,  # (B, J, D)
        slot_masked: torch.Tensor,  # (B, J) bool
        slot_valid: torch.Tensor,  # (B, J) bool
    ) -> torch.Tensor:  # (B, J, D) predicted slot features
        ...
