"""The SSMP encoder: a bidirectional Transformer over [movie shots ; trailer slots].

Movie shots are the prompt and are never masked; trailer slots hold either a chosen movie shot's
feature or the learnable mask placeholder MP (a vector in the input space R^D). For every slot the
encoder predicts a feature v̂_j in R^D; `score_logits` turns it into cos(v̂_j, m_i) / tau over the
movie, the logits of P = softmax_i. Batches of movies with different I and J are padded; padded
tokens are removed from every attention key set, so they never change a real token's output.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

# Fourier features of a token's relative position (i / I, j / J): the trailer's order relates to
# where a shot sits in the movie's arc, not to its absolute index.
NUM_FRACTION_FREQS = 16


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sine/cosine table for integer positions: no maximum length (8192+ shots work)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = positions.to(torch.float32)[..., None] * freqs  # (..., half)
    table = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(table, (0, dim - 2 * half))


def fraction_features(valid: torch.Tensor) -> torch.Tensor:
    """(B, T) validity -> (B, T, 2F) Fourier features of index / (length - 1) in [0, 1]."""
    index = torch.cumsum(valid.to(torch.float32), dim=1) - 1.0  # padded tokens come after the real ones
    length = valid.sum(dim=1, keepdim=True).to(torch.float32)
    frac = (index / (length - 1.0).clamp(min=1.0)).clamp(0.0, 1.0)  # (B, T)
    k = torch.arange(1, NUM_FRACTION_FREQS + 1, device=valid.device, dtype=torch.float32)
    angles = math.pi * frac[..., None] * k
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 × (B, H, T, hd)
        # Bidirectional (no causal mask): every token sees every real token. KV-free: nothing is cached.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_valid))
        return x + self.drop(self.mlp(self.ln2(x)))


class SSMPEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.randn(cfg.feature_dim) / math.sqrt(cfg.feature_dim))  # MP
        self.in_proj = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.type_emb = nn.Embedding(2, cfg.d_model)  # 0: movie shot, 1: trailer slot
        self.frac_proj = nn.Linear(2 * NUM_FRACTION_FREQS, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.feature_dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def embed(self, feats: torch.Tensor, valid: torch.Tensor, token_type: int) -> torch.Tensor:
        """(B, T, D) unit features -> (B, T, d) token states before the first block."""
        positions = torch.arange(feats.shape[1], device=feats.device)
        return (
            self.in_proj(feats)
            + self.type_emb.weight[token_type]
            + sinusoidal(positions, self.cfg.d_model)
            + self.frac_proj(fraction_features(valid))
        )

    def forward(
        self,
        movie: torch.Tensor,  # (B, I, D) shot features, any scale; padded rows are ignored
        movie_valid: torch.Tensor,  # (B, I) bool, real shots first
        slots: torch.Tensor,  # (B, J, D) features of the shots locked into the slots
        slot_masked: torch.Tensor,  # (B, J) bool: the slot holds MP instead of `slots`
        slot_valid: torch.Tensor,  # (B, J) bool, real slots first
    ) -> torch.Tensor:
        """Predicted slot features v̂, (B, J, D)."""
        I = movie.shape[1]
        # Cosine is scale-free, so the encoder reads unit vectors: features of any norm look alike.
        movie = F.normalize(movie.float(), dim=-1)
        slots = F.normalize(slots.float(), dim=-1)
        slots = torch.where(slot_masked[..., None], self.mask_token.to(slots.dtype), slots)
        h = torch.cat([self.embed(movie, movie_valid, 0), self.embed(slots, slot_valid, 1)], dim=1)  # (B, I + J, d)
        h = self.drop(h)
        key_valid = torch.cat([movie_valid, slot_valid], dim=1)  # (B, I + J)
        for block in self.blocks:
            h = block(h, key_valid)
        return self.out_proj(self.ln_f(h[:, I:]))  # (B, J, D)


def score_logits(pred: torch.Tensor, movie: torch.Tensor, movie_valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """cos(v̂_j, m_i) / tau, (B, J, I); padded shots get -inf so they never get probability.

    The full J×I matrix is what training's cross-entropy needs; decoding uses `kernels.score_slots`,
    which reduces each row without keeping the matrix.
    """
    return unit_score_logits(pred, F.normalize(movie.float(), dim=-1), movie_valid, temperature)


def unit_score_logits(pred: torch.Tensor, movie_unit: torch.Tensor, movie_valid: torch.Tensor, temperature: float):
    """`score_logits` for a movie already L2-normalised (decoding normalises it once, not every round)."""
    cos = F.normalize(pred.float(), dim=-1) @ movie_unit.float().transpose(1, 2)
    return (cos / temperature).masked_fill(~movie_valid[:, None, :], float("-inf"))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
