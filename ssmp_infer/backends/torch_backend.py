from __future__ import annotations

import torch

from ..model import SSMPEncoder


class TorchBackend:
    """Eager PyTorch: the reference every other backend is compared with."""

    name = "torch"

    def __init__(self, model: SSMPEncoder, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def encode(self, movie, movie_valid, slots, slot_masked, slot_valid):
        return self.model(movie, movie_valid, slots, slot_masked, slot_valid)
