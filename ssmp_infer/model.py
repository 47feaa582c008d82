"""The SSMP encoder: a bidirectional Transformer over [movie shots ; trailer slots].

Movie shots are the prompt and are never masked; trailer slots hold either a chosen movie shot's
feature or the learnable mask placeholder MP (a vector in the input space R^D). For every slot the
encoder predicts a feature v̂_j in R^D; `score_logits` turns it into cos(v̂_j, m_i) / tau over the
movie, the logits of P = softmax_i. With `shot_prior` a learned per-shot logit b_i, read from the
movie token's last state (plus, with `context_prior`, a small MLP's read of the shot against its movie:
ssmp_infer/context_prior.py), is added: the movie's context says which shots are trailer material,
the slot's prediction says which of them fits this slot (see ModelConfig.shot_prior). With
`position_keys` slots are scored against k_i, the shot's feature plus a learned map of its position,
instead of m_i (`SSMPEncoder.shot_keys`), so a prediction can say where its shot lies. Batches of
movies with different I and J are padded; padded tokens are removed from every attention key set, so
they never change a real token's output.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .context_prior import ContextPrior

# Fourier features of a token's relative position (i / I, j / J): the trailer's order relates to
# where a shot sits in the movie's arc, not to its absolute index.
NUM_FRACTION_FREQS = 16
# Sine/cosine features of a token's absolute index (local neighbourhoods: the shots of one scene).
NUM_INDEX_FEATURES = 32


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sine/cosine table for integer positions: no maximum length (8192+ shots work)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = positions.to(torch.float32)[..., None] * freqs  # (..., half)
    table = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(table, (0, dim - 2 * half))


def fraction_features(valid: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) validity -> (B, T, 2F) Fourier features of index / (length - 1) in [0, 1].

    `window` (B, 2) int64: each row is a crop of a longer sequence, (index of its first token there,
    that sequence's length); the fractions are then those of the whole sequence (see `position_features`).
    """
    index = torch.cumsum(valid.to(torch.float32), dim=1) - 1.0  # padded tokens come after the real ones
    length = valid.sum(dim=1, keepdim=True).to(torch.float32)
    if window is not None:
        index = index + window[:, :1].to(torch.float32)
        length = window[:, 1:].to(torch.float32)
    frac = (index / (length - 1.0).clamp(min=1.0)).clamp(0.0, 1.0)  # (B, T)
    k = torch.arange(1, NUM_FRACTION_FREQS + 1, device=valid.device, dtype=torch.float32)
    angles = math.pi * frac[..., None] * k
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def position_features(valid: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) validity -> (B, T, P) unit-norm features of a token's index and of its fraction of the length.

    Both parts are fixed functions with no maximum length; a learned linear map turns them into the
    position embedding. Each part has norm 1/sqrt(2), so the whole vector has norm 1.

    `window` (B, 2) int64, for rows that are crops of longer movies (training's `--crop-shots`): the
    crop's first shot's index in its movie and the movie's shot count. A cropped shot then gets the
    features it has in the whole movie, so a crop teaches what the whole movie would.
    """
    positions = torch.arange(valid.shape[1], device=valid.device)
    if window is not None:
        positions = positions[None, :] + window[:, :1]  # (B, T)
    index = sinusoidal(positions, NUM_INDEX_FEATURES) / math.sqrt(NUM_INDEX_FEATURES)  # norm 1
    index = index.expand(valid.shape[0], -1, -1)
    frac = fraction_features(valid, window) / math.sqrt(2 * NUM_FRACTION_FREQS)  # norm 1/sqrt(2)
    return torch.cat([index, frac], dim=-1)


NUM_POSITION_FEATURES = NUM_INDEX_FEATURES + 2 * NUM_FRACTION_FREQS


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, prefix_kv=None, slot_room: int = 0):
        """(output (B, T, d), this sequence's own (keys, values), each (B, H, T, hd)).

        `prefix_kv`: keys and values of tokens that come before `x` and are not recomputed (the cached
        movie under prefix attention); `x` reads them as well as itself. With `slot_room` T, their last T
        rows are free (`MovieCache.with_slot_room`): `x`'s own keys and values are written there.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 × (B, H, T, hd)
        own = (k, v)
        if prefix_kv is not None and slot_room:
            prefix_kv[0][:, :, -T:].copy_(k)
            prefix_kv[1][:, :, -T:].copy_(v)
            k, v = prefix_kv
        elif prefix_kv is not None:
            k, v = torch.cat([prefix_kv[0], k], dim=2), torch.cat([prefix_kv[1], v], dim=2)
        # Bidirectional (no causal mask); `attn_mask` (B, 1, T or 1, keys) removes padded keys and, under
        # prefix attention, the slots from the movie tokens' key set.
        if torch.onnx.is_in_onnx_export():
            # ONNX's Attention op (opset 23, which ONNX Runtime runs as one fused kernel) does not
            # broadcast the mask over queries: give it one row per query.
            attn_mask = attn_mask.expand(B, 1, T, k.shape[2])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), own


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, prefix_kv=None, slot_room: int = 0):
        y, own_kv = self.attn(self.ln1(x), attn_mask, prefix_kv, slot_room)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.ln2(x))), own_kv


@dataclass
class MovieCache:
    """What a prefix-attention model keeps of a movie: per layer, its shots' keys and values.

    Under prefix attention movie tokens never read the slots, so these are exact for every round of
    every trailer of this movie.
    """

    keys: list[torch.Tensor]  # n_layers × (B, H, I + slot_room, hd)
    values: list[torch.Tensor]  # n_layers × (B, H, I + slot_room, hd)
    movie_valid: torch.Tensor  # (B, I) bool
    shot_prior: torch.Tensor | None = None  # (B, I) float32 logit b_i, or None (model without a shot prior)
    slot_room: int = 0  # free rows after the movie's in every key/value tensor (`with_slot_room`)
    # held while a step writes and reads the slot rows: copies of a kept state share these buffers
    room_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _map(self, fn) -> "MovieCache":
        prior = None if self.shot_prior is None else fn(self.shot_prior)
        return MovieCache([fn(t) for t in self.keys], [fn(t) for t in self.values], fn(self.movie_valid), prior,
                           self.slot_room)

    def with_slot_room(self, slots: int) -> "MovieCache":
        """These states in buffers with `slots` free rows after the movie's, where each step writes its
        slots' keys and values. Without them every step of every layer concatenates a fresh copy of
        the movie's I rows (measured: ~4% of a CMTD-sized topk trailer on the CPU); the values and the
        attention are the same either way."""
        def grow(t: torch.Tensor) -> torch.Tensor:
            I = self.movie_valid.shape[1]
            room = torch.empty(*t.shape[:2], I + slots, t.shape[3], dtype=t.dtype, device=t.device)
            room[:, :, :I] = t[:, :, :I]
            return room

        return MovieCache([grow(t) for t in self.keys], [grow(t) for t in self.values], self.movie_valid,
                           self.shot_prior, slots)

    def select(self, rows: torch.Tensor) -> "MovieCache":
        """The states of movies `rows` (B',) only: a batch drops the movies that are done."""
        return self._map(lambda t: t.index_select(0, rows))

    def repeat_interleave(self, k: int) -> "MovieCache":
        """Each movie k times in a row: several slot sets (views, candidates) read one movie pass."""
        return self._map(lambda t: t.repeat_interleave(k, dim=0))


def attention_mask(movie_valid: torch.Tensor, slot_valid: torch.Tensor, movie_attention: str) -> torch.Tensor:
    """Which keys each query reads: (B, 1, 1, I + J) for full attention, (B, 1, I + J, I + J) for prefix.

    Padded keys are never read. Under "prefix" a movie token reads only movie tokens, so its states
    are a function of the movie alone; a slot reads everything.
    """
    key_valid = torch.cat([movie_valid, slot_valid], dim=1)  # (B, I + J)
    if movie_attention == "full":
        return key_valid[:, None, None, :]
    I, T = movie_valid.shape[1], key_valid.shape[1]
    is_movie = torch.arange(T, device=key_valid.device) < I
    reads = ~(is_movie[:, None] & ~is_movie[None, :])  # (T, T): query row, key column
    return (key_valid[:, None, :] & reads)[:, None]


# The position embedding starts this many times smaller than the content embedding (both have unit
# inputs), so the first layer reads mostly what a shot shows, not where it sits; training can grow it.
POSITION_INIT_SHRINK = 4.0


class SSMPEncoder(nn.Module):
    """Token input = in_proj(unit feature or MP) + type embedding + position embedding.

    Positions: movie shots and trailer slots have their own learned linear maps of the same fixed
    features (sin/cos of the absolute index and Fourier features of index / length). The features
    are defined for any length, so a movie longer than any seen in training (8192 shots) still gets
    distinct, bounded positions; the relative (fraction) part means a long movie's arc looks like a
    short one's. Movie shot i and trailer slot j = i get different vectors (different maps).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.randn(cfg.feature_dim) / math.sqrt(cfg.feature_dim))  # MP
        self.in_proj = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.type_emb = nn.Embedding(2, cfg.d_model)  # 0: movie shot, 1: trailer slot
        self.movie_pos = nn.Linear(NUM_POSITION_FEATURES, cfg.d_model, bias=False)
        self.slot_pos = nn.Linear(NUM_POSITION_FEATURES, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.feature_dim)
        # b_i from the movie token's last state; starts at zero so P starts as the paper's cos/tau.
        self.shot_head = nn.Linear(cfg.d_model, 1) if cfg.shot_prior else None
        self.context_prior = ContextPrior(cfg.feature_dim, NUM_POSITION_FEATURES, cfg.local_context, cfg.context_hidden,
                                          cfg.context_novelty, cfg.context_dropout, cfg.context_profile
                                          ) if cfg.context_prior else None
        self.key_position = nn.Linear(NUM_POSITION_FEATURES, cfg.feature_dim, bias=False) if cfg.position_keys else None
        self.apply(self._init_weights)
        if self.shot_head is not None:
            nn.init.zeros_(self.shot_head.weight)
        if self.context_prior is not None:
            self.context_prior.reset_output()
        if self.key_position is not None:
            nn.init.zeros_(self.key_position.weight)
        # Unit input features map to content vectors of norm ~0.02·sqrt(d); these unit-norm position
        # features map to vectors POSITION_INIT_SHRINK times shorter.
        for pos in (self.movie_pos, self.slot_pos):
            nn.init.normal_(pos.weight, std=0.02 / POSITION_INIT_SHRINK)

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def embed(self, feats: torch.Tensor, valid: torch.Tensor, token_type: int, window=None) -> torch.Tensor:
        """(B, T, D) unit features -> (B, T, d) token states before the first block (`window`: see
        `position_features`)."""
        position = self.movie_pos if token_type == 0 else self.slot_pos
        return self.in_proj(feats) + self.type_emb.weight[token_type] + position(position_features(valid, window))

    def forward(
        self,
        movie: torch.Tensor,  # (B, I, D) shot features, any scale; padded rows are ignored
        movie_valid: torch.Tensor,  # (B, I) bool, real shots first
        slots: torch.Tensor,  # (B, J, D) features of the shots locked into the slots
        slot_masked: torch.Tensor,  # (B, J) bool: the slot holds MP instead of `slots`
        slot_valid: torch.Tensor,  # (B, J) bool, real slots first
    ) -> torch.Tensor:
        """Predicted slot features v̂, (B, J, D)."""
        return self.forward_with_states(movie, movie_valid, slots, slot_masked, slot_valid)[0]

    def forward_with_states(self, movie, movie_valid, slots, slot_masked, slot_valid, window=None, *,
                            movie_is_unit: bool = False) -> tuple[torch.Tensor, MovieCache]:
        """`forward`, and the movie tokens' per-layer keys and values of this pass.

        Under prefix attention those states are exact for any slots; under full attention they saw
        these slots, and a decoder that reuses them for later rounds accepts an approximation.
        `window`: the movie rows are crops of longer movies (training; see `position_features`).
        `movie_is_unit`: the caller (a backend's state) already holds the L2-normalised movie.
        """
        I = movie.shape[1]
        # Cosine is scale-free, so the encoder reads unit vectors: features of any norm look alike.
        movie = movie.float() if movie_is_unit else F.normalize(movie.float(), dim=-1)
        h = torch.cat([self.embed(movie, movie_valid, 0, window), self.slot_tokens(slots, slot_masked, slot_valid)], dim=1)
        h = self.drop(h)
        mask = attention_mask(movie_valid, slot_valid, self.cfg.movie_attention)
        keys, values = [], []
        for block in self.blocks:
            h, (k, v) = block(h, mask)
            keys.append(k[:, :, :I])
            values.append(v[:, :, :I])
        states = MovieCache(keys, values, movie_valid, self.prior_logits(h[:, :I], movie, movie_valid, window))
        return self.out_proj(self.ln_f(h[:, I:])), states  # (B, J, D)

    def prior_logits(self, movie_h: torch.Tensor, movie_unit: torch.Tensor, movie_valid: torch.Tensor,
                     window=None) -> torch.Tensor | None:
        """(B, I) b_i from the movie tokens' last states, plus the context branch's logit when the model
        has one (-inf on padding), or None without a shot prior."""
        if self.shot_head is None:
            return None
        prior = self.shot_head(self.ln_f(movie_h)).squeeze(-1).float()
        if self.context_prior is not None:
            prior = prior + self.context_prior(movie_unit, movie_valid, position_features(movie_valid, window)).float()
        return prior.masked_fill(~movie_valid, float("-inf"))

    def shot_keys(self, movie_unit: torch.Tensor, movie_valid: torch.Tensor, window=None) -> torch.Tensor:
        """(B, I, D) unit rows that slots are scored against and that locked slots read.

        Without `position_keys` these are the unit shot features themselves (the paper). With it,
        k_i = normalize(m_i + W_k·pos_i): a shot's feature plus a learned map of its position (the
        features the embeddings read). Cosine scoring is linear in k, so a slot's prediction can then
        say *where* its shot lies as well as what it shows, and a locked slot tells the encoder where
        its shot sits. Why: when locations and cast recur through a film, what a shot shows does not
        say when it comes, and the trailer's order follows the movie's in part. W_k starts at zero
        (the keys start as the paper's). Padded rows keep whatever they held: they are never scored.
        """
        if self.key_position is None:
            return movie_unit
        keys = F.normalize(movie_unit.float() + self.key_position(position_features(movie_valid, window)), dim=-1)
        return torch.where(movie_valid[..., None], keys, movie_unit.float())

    def slot_tokens(self, slots: torch.Tensor, slot_masked: torch.Tensor, slot_valid: torch.Tensor) -> torch.Tensor:
        """(B, J, D) slot inputs -> (B, J, d): unit features, or MP where masked, embedded."""
        slots = F.normalize(slots.float(), dim=-1)
        slots = torch.where(slot_masked[..., None], self.mask_token.to(slots.dtype), slots)
        return self.embed(slots, slot_valid, 1)

    def prepare(self, movie: torch.Tensor, movie_valid: torch.Tensor, window=None, *,
                movie_is_unit: bool = False) -> MovieCache:
        """One pass over the movie alone (prefix attention only): its per-layer keys and values.
        (`window`: the rows are crops of longer movies, in training; see `position_features`.
        `movie_is_unit`: as in `forward_with_states`.)"""
        if self.cfg.movie_attention != "prefix":
            raise ValueError("movie states are exact only under prefix attention; this model reads full attention")
        movie = movie.float() if movie_is_unit else F.normalize(movie.float(), dim=-1)
        h = self.drop(self.embed(movie, movie_valid, 0, window))  # (B, I, d)
        mask = movie_valid[:, None, None, :]
        keys, values = [], []
        for block in self.blocks:
            h, (k, v) = block(h, mask)
            keys.append(k)
            values.append(v)
        return MovieCache(keys, values, movie_valid, self.prior_logits(h, movie, movie_valid, window))

    def step(self, states: MovieCache, slots, slot_masked, slot_valid) -> torch.Tensor:
        """Predicted slot features (B, J, D) from cached movie states: only the J slot rows are computed.

        Equals `forward` on the same movie under prefix attention (tested).
        """
        h = self.drop(self.slot_tokens(slots, slot_masked, slot_valid))  # (B, J, d)
        mask = torch.cat([states.movie_valid, slot_valid], dim=1)[:, None, None, :]
        room = states.slot_room if states.slot_room == h.shape[1] else 0  # room for other J: concatenate
        for block, k, v in zip(self.blocks, states.keys, states.values):
            if states.slot_room and not room:  # the movie's rows only
                k, v = k[:, :, : states.movie_valid.shape[1]], v[:, :, : states.movie_valid.shape[1]]
            h, _ = block(h, mask, prefix_kv=(k, v), slot_room=room)
        return self.out_proj(self.ln_f(h))


def score_logits(
    pred: torch.Tensor, movie: torch.Tensor, movie_valid: torch.Tensor, temperature: float, shot_prior=None
) -> torch.Tensor:
    """cos(v̂_j, m_i) / tau (+ b_i), (B, J, I); padded shots get -inf so they never get probability.

    The full J×I matrix is what training's cross-entropy needs; decoding uses `kernels.score_slots`,
    which reduces each row without keeping the matrix.
    """
    return unit_score_logits(pred, F.normalize(movie.float(), dim=-1), movie_valid, temperature, shot_prior)


def unit_score_logits(pred, movie_unit, movie_valid, temperature: float, shot_prior=None, basis=None) -> torch.Tensor:
    """`score_logits` for a movie already L2-normalised (decoding normalises it once, not every round).

    `movie_valid` None: every shot is real (nothing to mask).

    With `basis` (D, r), orthonormal columns spanning every `pred` (`output_basis`), `movie_unit` is
    given in those coordinates, (B, I, r): cos(v̂, m) = (Qᵀv̂)·(Qᵀm) when v̂ = QQᵀv̂, so the J×I
    product runs over r instead of D, equal up to float rounding.
    """
    pred_unit = F.normalize(pred.float(), dim=-1)
    if basis is not None:
        pred_unit = pred_unit @ basis
    cos = pred_unit @ movie_unit.float().transpose(1, 2)
    logits = cos / temperature
    if shot_prior is not None:
        logits = logits + shot_prior[:, None, :]
    return logits if movie_valid is None else logits.masked_fill(~movie_valid[:, None, :], float("-inf"))


def output_basis(model: SSMPEncoder) -> torch.Tensor | None:
    """(D, d + 1) orthonormal columns spanning every feature the model predicts, or None when that
    would not shrink the scoring product (d + 1 > D / 2).

    v̂ = W·ln_f(h) + c lies in the span of W's d columns and c, whatever h is: a decoder that holds the
    movie in these coordinates scores each round over d + 1 numbers per pair instead of D (demo preset:
    193 against 1024). Computed in float64 so the columns are orthonormal to float32 precision.
    """
    W, c = model.out_proj.weight.detach(), model.out_proj.bias.detach()
    if 2 * (W.shape[1] + 1) > W.shape[0]:
        return None
    q, _ = torch.linalg.qr(torch.cat([W, c[:, None]], dim=1).double())  # reduced: (D, d + 1)
    return q.to(W.dtype).contiguous()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
