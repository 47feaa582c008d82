"""Autoregressive generation: the TGT family (Trailer Generation Transformer) SSMP is compared with.

An encoder reads the movie's shots (bidirectional). A causal decoder reads the trailer so far, a
learned start token followed by the features of the shots already placed, cross-attends to the
encoded movie, and predicts the next shot's feature v̂_j. Its distribution over the movie is scored
as SSMP scores: P = softmax_i(cos(v̂_j, m_i) / tau), trained with cross-entropy of g_j under teacher
forcing (the decoder reads the movie shots m_{g_1..g_{j-1}}, which is exactly what generation feeds it).

Generation is left to right, one shot per step: the most probable movie shot not used yet is placed
and its feature fed back. Nothing is revised once placed: that is what SSMP's self-correction is
compared against.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import movie_windows, pad_batch, pad_targets, slot_inputs
from ..model import NUM_POSITION_FEATURES, position_features, unit_score_logits
from .common import BaselineConfig, MovieEncoder, init_weights


def heads(proj_kv: nn.Linear, kv_in: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `kv_in` (B, S, d), each (B, H, S, hd)."""
    B, S, d = kv_in.shape
    k, v = proj_kv(kv_in).view(B, S, 2, n_heads, d // n_heads).permute(2, 0, 3, 1, 4)
    return k, v


def attend(q_in, kv, proj_q, proj_out, n_heads: int, mask, dropout: float):
    """Multi-head attention of `q_in` (B, T, d) over keys and values `kv`; `mask` (B, 1, T or 1, S) bool."""
    B, T, d = q_in.shape
    q = proj_q(q_in).view(B, T, n_heads, d // n_heads).transpose(1, 2)  # (B, H, T, hd)
    y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask, dropout_p=dropout)
    return proj_out(y.transpose(1, 2).reshape(B, T, d))


class DecoderBlock(nn.Module):
    """Pre-norm Transformer decoder block: causal self-attention, cross-attention to the movie, MLP."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.ln1, self.self_q, self.self_kv, self.self_out = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ln2, self.cross_q, self.cross_kv, self.cross_out = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, movie_kv, self_mask, cross_mask):
        """`movie_kv`: this block's keys and values of the encoded movie (`cross_kv`), computed once."""
        p = self.dropout if self.training else 0.0
        x = self.ln1(h)
        h = h + self.drop(attend(x, heads(self.self_kv, x, self.n_heads), self.self_q, self.self_out, self.n_heads, self_mask, p))
        h = h + self.drop(attend(self.ln2(h), movie_kv, self.cross_q, self.cross_out, self.n_heads, cross_mask, p))
        return h + self.drop(self.mlp(self.ln3(h)))


class Autoregressive(nn.Module):
    METHOD = "autoregressive"

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = MovieEncoder(cfg)
        self.start = nn.Parameter(torch.randn(cfg.d_model) * 0.02)  # the first step's input
        self.shot_in = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.slot_pos = nn.Linear(NUM_POSITION_FEATURES, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.feature_dim)
        self.apply(init_weights)

    def movie_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every decoder block's keys and values of the encoded movie (B, I, d): once per trailer, not per step."""
        return [heads(block.cross_kv, memory, self.cfg.n_heads) for block in self.blocks]

    def decode(self, movie_kv, movie_valid, previous: torch.Tensor, slot_valid: torch.Tensor, upto: int | None = None):
        """Predicted features (B, T, D) of slots 0..T-1 (T = `upto`, default all J) from `previous` (B, J, D):
        slot j reads slots < j only, so the first T slots' predictions need only the first T slots.

        `previous[:, j]` is the feature of the shot placed in slot j; slot 0 reads the start token, slot
        j the shot of slot j − 1. The trailer's length J is known (as SSMP knows it), so slots carry the
        same index and fraction-of-length position features as SSMP's.
        """
        B, J, _ = previous.shape
        T = J if upto is None else upto
        placed = self.shot_in(F.normalize(previous[:, : T - 1].float(), dim=-1))  # (B, T - 1, d)
        where = self.slot_pos(position_features(slot_valid)[:, :T])  # fractions of the whole trailer's length
        h = self.drop(torch.cat([self.start.expand(B, 1, -1), placed], dim=1) + where)
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        self_mask = (causal[None] & slot_valid[:, None, :T])[:, None]  # (B, 1, T, T)
        cross_mask = movie_valid[:, None, None, :]
        for block, kv in zip(self.blocks, movie_kv):
            h = block(h, kv, self_mask, cross_mask)
        return self.out_proj(self.ln_f(h))

    def loss(self, examples) -> torch.Tensor:
        device = next(self.parameters()).device
        movie, movie_valid = pad_batch([e.movie for e in examples], device)
        targets = pad_targets([e.targets for e in examples], device)
        slot_valid = targets >= 0
        movie_kv = self.movie_kv(self.encoder(movie, movie_valid, movie_windows(examples, device)))
        pred = self.decode(movie_kv, movie_valid, slot_inputs(movie, targets), slot_valid)  # teacher forcing
        logits = unit_score_logits(pred, F.normalize(movie, dim=-1), movie_valid, self.cfg.temperature)
        return F.cross_entropy(logits[slot_valid], targets[slot_valid])

    @torch.no_grad()
    def generate(self, movie: torch.Tensor, movie_valid: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """(B, max J) movie shot indices in trailer order, -1 after each trailer's end.

        One decoder pass over slots 0..j per step (no cache of the slots' own keys: J is tens of
        shots); the movie's keys and values are computed once.
        """
        B, J = len(lengths), max(lengths)
        lengths_t = torch.tensor(lengths, device=movie.device)
        slot_valid = torch.arange(J, device=movie.device)[None] < lengths_t[:, None]
        movie_kv = self.movie_kv(self.encoder(movie, movie_valid))
        movie_unit = F.normalize(movie.float(), dim=-1)
        shots = torch.full((B, J), -1, dtype=torch.long, device=movie.device)
        used = ~movie_valid.clone()
        rows = torch.arange(B, device=movie.device)
        for j in range(J):
            pred = self.decode(movie_kv, movie_valid, slot_inputs(movie, shots), slot_valid, upto=j + 1)[:, j : j + 1]
            logits = unit_score_logits(pred, movie_unit, movie_valid, self.cfg.temperature)[:, 0]  # (B, I)
            pick = logits.masked_fill(used, -math.inf).argmax(dim=-1)  # the most probable unused shot
            live = j < lengths_t
            shots[:, j] = torch.where(live, pick, -1)
            used[rows[live], pick[live]] = True
        return shots
