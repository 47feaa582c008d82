"""The torch backend's rounds on a kept movie: the encoder's slot rows, laid out for small batches of rows.

A round of a warm trailer is `SSMPEncoder.step` over J slot rows (J ~ 15-70) against a movie whose keys
and values are cached. At those sizes a round's time went mostly to overheads, not arithmetic
(measured on this project's 2-core Xeon, 400 shots, J 15: 1.85 ms a step for ~0.6 ms of FLOPs). This is
the same computation with those overheads taken out, and nothing else changed:

- the weights are laid out once as the (in, out) matrices `addmm` multiplies directly (`F.linear` on
  the module's (out, in) weight took ~1.5× as long at these shapes), and no module is called;
- the slots' position embeddings (a function of which slots are real) are computed once per pattern of
  real slots, not per round;
- the last block runs only the rows the decoder reads (the masked slots: a locked slot's prediction
  is never used), with every slot's keys and values;
- attention gets no mask when every key is real (one movie, no padding: the usual editor's call),
  where the fused CPU kernel runs ~1.7× as fast;
- the output comes straight in the coordinates of the model's output span (`model.output_basis` Q):
  Qᵀ(W·x + c) = (QᵀW)·x + Qᵀc, so the round neither maps to D (1024) nor back to r (193).

It equals `SSMPEncoder.step` followed by `@ Q` up to float rounding (tests/test_slot_rounds.py), and every
trailer, warm or cold, runs through the same code, so a warm trailer is still the cold one bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import MovieCache, SSMPEncoder, position_features


KEPT_POSITIONS = 256  # patterns of real slots whose positions are kept (one per trailer length, for one movie)


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

    @torch.inference_mode()
    def __call__(self, cache: MovieCache, slots: torch.Tensor, slot_masked: torch.Tensor, slot_valid: torch.Tensor
                 ) -> torch.Tensor:
        """(B, J, r) predictions in output-span coordinates of the masked slots; the locked slots' rows are
        zero (the decoder never reads a locked slot's prediction: the last block skips them). `slots`
        (B, J, D) as `SSMPEncoder.step` takes them; `cache` has room for exactly J slot rows
        (`MovieCache.with_slot_room`)."""
        B, J, _ = slots.shape
        I, d = cache.movie_valid.shape[1], self.width
        assert cache.slot_room == J, "the cache needs room for exactly these slots' keys and values"
        slots = F.normalize(slots.float(), dim=-1).view(B * J, -1)
        content = torch.where(slot_masked.reshape(B * J, 1), self.model.mask_token, slots)
        x = torch.addmm(self.in_proj[1], content, self.in_proj[0]) + self.positions(slot_valid).reshape(B * J, d)
        key_valid = torch.cat([cache.movie_valid, slot_valid], dim=1)
        mask = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        read = slot_masked & slot_valid
        width = int(read.sum(dim=1).max())
        # the masked slots first (stable: slot order), cut to the widest row's count; None: every slot
        pick = torch.argsort((~read).to(torch.int8), dim=1, stable=True)[:, :width] if width < J else None
        last = len(self.layers) - 1
        for n, (layer, keys, values) in enumerate(zip(self.layers, cache.keys, cache.values)):
            a = F.layer_norm(x, (d,), *layer["ln1"])
            q, k, v = torch.addmm(layer["qkv"][1], a, layer["qkv"][0]).view(B, J, 3, self.heads, self.head_dim).permute(
                2, 0, 3, 1, 4)  # 3 × (B, H, J, hd)
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
            x = x + torch.addmm(layer["fc2"][1], F.gelu(torch.addmm(layer["fc1"][1], a, layer["fc1"][0])), layer["fc2"][0])
        out = torch.addmm(self.out[1], F.layer_norm(x, (d,), *self.ln_f), self.out[0]).view(B, -1, self.out[0].shape[1])
        if pick is not None:
            out = torch.zeros(B, J, out.shape[2]).scatter_(1, pick[..., None].expand_as(out), out)
        return out.masked_fill(~read[..., None], 0.0)
