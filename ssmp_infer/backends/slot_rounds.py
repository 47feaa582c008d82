"""The torch backend's rounds on a kept movie: the encoder's slot rows, laid out for small batches of rows.

A round of a warm trailer is `SSMPEncoder.step` over J slot rows (J ~ 15-70) against a movie whose keys
and values are cached. At those sizes a round's time went mostly to overheads, not arithmetic
(measured on this project's 2-core Xeon, 400 shots, J 15: 1.85 ms a step for ~0.6 ms of FLOPs). This is
the same computation with those overheads taken out, and nothing else changed:

- the weights are laid out once as the (in, out) matrices `addmm` multiplies directly (`F.linear` on
  the module's (out, in) weight took ~1.5× as long at these shapes), and no module is called;
- a locked slot's input embedding (`in_proj` of its shot's key) depends on the shot alone, so it is
  computed the first time a shot is read and kept with the movie's states (`ShotEmbeddings`); a round
  gathers them instead of multiplying J rows of D = 1024 (~0.1 ms a round at 400 shots, of ~1);
- the slots' position embeddings (a function of which slots are real) are computed once per pattern of
  real slots, not per round;
- the last block runs only the rows the decoder reads (the masked slots: a locked slot's prediction
  is never used), with every slot's keys and values, and the predictions come back packed that way,
  as the decoder scores them;
- the movie's keys and values are kept with room for the slots' rows (`slot_room_for`), which every
  step writes and reads under the cache's lock, so a warm trailer copies none of the movie's states;
- attention gets no mask when every key is real (one movie, no padding: the usual editor's call),
  where the fused CPU kernel runs ~1.7× as fast;
- the output comes straight in the coordinates of the model's output span (`model.output_basis` Q):
  Qᵀ(W·x + c) = (QᵀW)·x + Qᵀc, so the round neither maps to D (1024) nor back to r (193).

It equals `SSMPEncoder.step` followed by `@ Q` on the masked slots up to float rounding
(tests/test_slot_rounds.py), and every trailer, warm or cold, runs through the same code, so a warm
trailer is still the cold one bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data import default_trailer_length
from ..model import MovieCache, SSMPEncoder, position_features


# Slot rows a movie's states get when prepared: every trailer up to this many slots writes its keys and
# values there, where a longer one copies the movie's rows into buffers of its own, as every trailer
# did before (0.3 ms of a warm trailer at 400 shots, 1.6 ms at 1909, on this project's Xeon). Twice the
# default length, and at least 64.
def slot_room_for(shots: int) -> int:
    return max(64, 2 * default_trailer_length(shots))


KEPT_POSITIONS = 256  # patterns of real slots whose positions are kept (one per trailer length, for one movie)


@dataclass
class ShotEmbeddings:
    """`in_proj(normalize(key_i))` of the shots locked slots have read, (B, I, d), kept with a movie's states.

    Each row is computed alone (one row in, one row out), the first time any decode reads its shot: a
    matrix product rounds a row differently with other rows beside it (measured with MKL: 1, 2, 3 and 7
    rows gave other bits than 64), so a row made alone is the same whichever call makes it, and a warm
    trailer stays the cold one bit for bit. Every handout of a kept state shares these rows; two decodes
    that fill one row at once write the same bits."""

    rows: torch.Tensor  # (B, I, d); a row is meaningful once its shot is in `known`
    known: list[set[int]] = field(default_factory=list)  # per movie, the shots whose rows are filled

    @classmethod
    def empty(cls, movies: int, shots: int, width: int) -> "ShotEmbeddings":
        return cls(torch.empty(movies, shots, width), [set() for _ in range(movies)])

    def select(self, rows: torch.Tensor) -> "ShotEmbeddings":
        picked = rows.tolist()
        return ShotEmbeddings(self.rows.index_select(0, rows), [set(self.known[b]) for b in picked])


class SlotRounds:
    """`step` in output-span coordinates, for an fp32 prefix-attention model with a kept movie cache."""

    def __init__(self, model: SSMPEncoder, basis: torch.Tensor):
        cfg = model.cfg
        self.heads, self.head_dim, self.width = cfg.n_heads, cfg.head_dim, cfg.d_model
        self.model = model  # for the slot position map and MP, read once per decode
        self._positions: dict[tuple, torch.Tensor] = {}  # (shape, bytes) of slot_valid -> (B, J, d) positions

        def packed(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:  # (in, out) and bias
            return linear.weight.detach().t().contiguous(), linear.bias.detach()

        self.in_proj = packed(model.in_proj)
        with torch.inference_mode():  # what a masked slot reads (MP), embedded once
            self.mask_row = torch.addmm(self.in_proj[1], model.mask_token.detach()[None], self.in_proj[0])  # (1, d)
        self.layers = [
            dict(ln1=(b.ln1.weight.detach(), b.ln1.bias.detach()), qkv=packed(b.attn.qkv), proj=packed(b.attn.proj),
                 ln2=(b.ln2.weight.detach(), b.ln2.bias.detach()), fc1=packed(b.mlp[0]), fc2=packed(b.mlp[2]))
            for b in model.blocks
        ]
        self.ln_f = (model.ln_f.weight.detach(), model.ln_f.bias.detach())
        W, c = model.out_proj.weight.detach(), model.out_proj.bias.detach()  # (D, d), (D,)
        self.out = ((basis.t() @ W).t().contiguous(), basis.t() @ c)  # (d, r), (r,)

    def positions(self, slot_valid: torch.Tensor) -> torch.Tensor:
        """(B, J, d): what every slot token adds to its content, the slot type and its position. They depend
        on which slots are real alone, so they are kept per pattern: ~0.4 ms a trailer otherwise."""
        pattern = (tuple(slot_valid.shape), slot_valid.numpy().tobytes())
        rows = self._positions.get(pattern)
        if rows is None:
            rows = self.model.type_emb.weight[1] + self.model.slot_pos(position_features(slot_valid))
            if len(self._positions) < KEPT_POSITIONS:
                self._positions[pattern] = rows
        return rows

    def slot_embeddings(self, embedded: ShotEmbeddings, keys: torch.Tensor, shots: torch.Tensor,
                        slot_masked: torch.Tensor, slot_valid: torch.Tensor) -> torch.Tensor:
        """(B, J, d) `in_proj` of what each slot reads: its shot's key (`keys` (B, I, D) unit rows) where it
        is locked, else MP (a padded slot's row is never attended to). The shots' rows not yet in
        `embedded` are computed now, one at a time."""
        reads = ~slot_masked & slot_valid
        W, bias = self.in_proj
        for b, shots_b in enumerate(torch.where(reads, shots, -1).tolist()):
            known = embedded.known[b]
            for shot in shots_b:
                if shot >= 0 and shot not in known:
                    unit = F.normalize(keys[b, shot:shot + 1].float(), dim=-1)
                    embedded.rows[b, shot] = torch.addmm(bias, unit, W)[0]
                    known.add(shot)
        rows = embedded.rows.gather(1, shots.clamp(min=0)[..., None].expand(-1, -1, self.width))
        return torch.where(reads[..., None], rows, self.mask_row)

    @torch.inference_mode()
    def __call__(self, cache: MovieCache, embedded: ShotEmbeddings, keys: torch.Tensor, shots: torch.Tensor,
                 slot_masked: torch.Tensor, slot_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(predictions (B, W, r) in output-span coordinates, pick (B, W) or None): row w of a movie is
        the prediction of its masked slot pick[b, w] (the masked slots in slot order, W the largest
        count of a movie; a movie with fewer fills its last rows with locked slots, whose rows the
        decoder never reads), or of slot w when pick is None (W = J). The decoder reads only masked
        slots' predictions, so the last block runs only those rows. `shots` (B, J) the shot each slot
        holds (read where the slot is not masked) among `keys` (B, I, D), the rows locked slots read;
        `cache` has room for at least J slot rows (`MovieCache.with_slot_room`)."""
        B, J = shots.shape
        I, d = cache.movie_valid.shape[1], self.width
        assert cache.slot_room >= J, "the cache needs room for these slots' keys and values"
        x = self.slot_embeddings(embedded, keys, shots, slot_masked, slot_valid) + self.positions(slot_valid)
        x = x.view(B * J, d)
        key_valid = torch.cat([cache.movie_valid, slot_valid], dim=1)
        mask = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        read = slot_masked & slot_valid
        width = int(read.sum(dim=1).max())
        # the masked slots first (stable: slot order), cut to the widest row's count; None: every slot
        pick = torch.argsort((~read).to(torch.int8), dim=1, stable=True)[:, :width] if width < J else None
        last = len(self.layers) - 1
        with cache.room_lock:  # the slot rows are written, then read, within this step
            for n, (layer, keys, values) in enumerate(zip(self.layers, cache.keys, cache.values)):
                # the movie's rows and these slots' (a room may have more rows: attention reads the view,
                # with the same bits as from a buffer of exactly I + J rows)
                keys, values = keys[:, :, :I + J], values[:, :, :I + J]
                a = F.layer_norm(x, (d,), *layer["ln1"])
                qkv = torch.addmm(layer["qkv"][1], a, layer["qkv"][0]).view(B, J, 3, self.heads, self.head_dim)
                q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 × (B, H, J, hd)
                keys[:, :, I:].copy_(k)
                values[:, :, I:].copy_(v)
                rows = J
                if n == last and pick is not None:  # every slot's keys and values, but only the read rows' queries
                    q = q.gather(2, pick[:, None, :, None].expand(B, self.heads, width, self.head_dim))
                    x = x.view(B, J, d).gather(1, pick[..., None].expand(B, width, d)).reshape(B * width, d)
                    rows = width
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, rows, hd)
                x = x + torch.addmm(layer["proj"][1], y.transpose(1, 2).reshape(B * rows, d), layer["proj"][0])
                a = F.layer_norm(x, (d,), *layer["ln2"])
                x = x + torch.addmm(layer["fc2"][1], F.gelu(torch.addmm(layer["fc1"][1], a, layer["fc1"][0])),
                                    layer["fc2"][0])
        out = torch.addmm(self.out[1], F.layer_norm(x, (d,), *self.ln_f), self.out[0])
        return out.view(B, -1, out.shape[1]), pick
