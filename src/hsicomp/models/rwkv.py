"""RWKV-4 blocks with a sequence (parallel) form and a token-by-token (recurrent) form.

Tensors put the sequence axis second to last: ``(..., T, F)`` for whole sequences and
``(..., F)`` for one token, with any leading batch dimensions.

The WKV operator of a TimeMix layer is, per channel,

    wkv_t = (sum_{j<t} e^{-(t-1-j)w + k_j} v_j + e^{u + k_t} v_t)
            / (sum_{j<t} e^{-(t-1-j)w + k_j} + e^{u + k_t}),

with ``w = exp(time_decay)`` and ``u = time_first``. Both forms evaluate it with the same
log-sum-exp recurrence on the state ``(aa, bb, pp)``: ``aa * e^pp`` and ``bb * e^pp`` are the
decayed numerator and denominator sums and ``pp`` is a running maximum exponent, so no
exponential overflows whatever the sign and size of ``time_decay`` and of the keys.

The sequence form runs that recurrence as one loop over T, vectorised over the batch and the
channels, while every other operation (projections, norms, token shift) runs on the whole
sequence at once. On a CPU this beat the alternatives measured (a chunked lower-triangular
form with a maximum per query row, and a log-depth associative scan), which do several
times more element-wise work for the same result.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn import functional as F

#: Initial value of the running maximum exponent ``pp`` (an empty sum).
PP_INIT = -1e30


class RWKVState(NamedTuple):
    """Recurrent state of one block; every field has shape ``(..., F)``.

    ``ffn_xx`` and ``att_xx`` are the normalised inputs of the ChannelMix and TimeMix layers at
    the previous token (the token shift); ``aa``, ``bb``, ``pp`` hold the WKV sums.
    """

    ffn_xx: Tensor
    att_xx: Tensor
    aa: Tensor
    bb: Tensor
    pp: Tensor


def init_state(
    batch_shape: tuple[int, ...] | torch.Size,
    width: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> RWKVState:
    """The state before the first token: zeros, and ``pp`` at ``PP_INIT``."""
    shape = (*batch_shape, width)

    def zeros() -> Tensor:
        return torch.zeros(shape, dtype=dtype, device=device)

    pp = torch.full(shape, PP_INIT, dtype=dtype, device=device)
    return RWKVState(zeros(), zeros(), zeros(), zeros(), pp)


def wkv_step(
    k: Tensor, v: Tensor, w: Tensor, u: Tensor, aa: Tensor, bb: Tensor, pp: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One WKV token: returns ``(wkv_t, aa, bb, pp)`` with the state after the token.

    ``k``, ``v`` and the state are ``(..., F)``; ``w = exp(time_decay)`` and ``u = time_first``
    are ``(F,)``.
    """
    # Output: the state so far plus the current token weighted by e^(u + k).
    ww = u + k
    p = torch.maximum(pp, ww)
    e1 = torch.exp(pp - p)
    e2 = torch.exp(ww - p)
    out = (e1 * aa + e2 * v) / (e1 * bb + e2)
    # State update: decay the sums by e^-w and add the current token weighted by e^k.
    ww = pp - w
    p = torch.maximum(ww, k)
    e1 = torch.exp(ww - p)
    e2 = torch.exp(k - p)
    return out, e1 * aa + e2 * v, e1 * bb + e2, p


def _wkv_loop(k: Tensor, v: Tensor, w: Tensor, u: Tensor) -> Tensor:
    """The WKV recurrence over time-major inputs ``(T, ..., F)``, through plain autograd."""
    aa = torch.zeros_like(k[0])
    bb = torch.zeros_like(aa)
    pp = torch.full_like(aa, PP_INIT)
    outs = []
    for k_t, v_t in zip(k.unbind(0), v.unbind(0), strict=True):
        out, aa, bb, pp = wkv_step(k_t, v_t, w, u, aa, bb, pp)
        outs.append(out)
    return torch.stack(outs)


class _WKV(torch.autograd.Function):
    """WKV over time-major sequences ``(T, N, F)`` with a hand-derived, stable backward.

    Backward, per channel, with ``A_t = aa_t e^pp_t`` and ``B_t = bb_t e^pp_t`` the sums
    before token t and ``D_t = B_t + e^(u+k_t)``: the adjoints of the sums,
    ``alpha_t = g_t / D_t + e^-w alpha_{t+1}`` and ``beta_t = -g_t y_t / D_t + e^-w beta_{t+1}``,
    are carried scaled by ``e^pp_t``, which keeps every factor an exponential of a
    non-positive number.
    """

    @staticmethod
    def forward(ctx, k: Tensor, v: Tensor, w: Tensor, u: Tensor) -> Tensor:
        steps = k.shape[0]
        aa = torch.zeros_like(k[0])
        bb = torch.zeros_like(aa)
        pp = torch.full_like(aa, PP_INIT)
        y = torch.empty_like(k)
        # per step: state before the token, and the output weights e1/d, e2/d
        saved = torch.empty((5, *k.shape), dtype=k.dtype, device=k.device)
        for t in range(steps):
            k_t, v_t = k[t], v[t]
            ww = u + k_t
            p = torch.maximum(pp, ww)
            e1 = torch.exp(pp - p)
            e2 = torch.exp(ww - p)
            d = e1 * bb + e2
            saved[0, t], saved[1, t], saved[2, t] = aa, bb, pp
            saved[3, t] = e1 / d
            saved[4, t] = e2 / d
            y[t] = (e1 * aa + e2 * v_t) / d
            ww = pp - w
            p = torch.maximum(ww, k_t)
            e1 = torch.exp(ww - p)
            e2 = torch.exp(k_t - p)
            aa, bb, pp = e1 * aa + e2 * v_t, e1 * bb + e2, p
        ctx.save_for_backward(k, v, w, y, saved, pp)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        k, v, w, y, saved, pp_end = ctx.saved_tensors
        steps = k.shape[0]
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        gu = torch.zeros_like(k[0])
        gw = torch.zeros_like(k[0])
        a_hat = torch.zeros_like(k[0])  # alpha_{t+1} * e^pp_{t+1}
        b_hat = torch.zeros_like(k[0])
        pp_next = pp_end
        for t in range(steps - 1, -1, -1):
            aa, bb, pp, r1, r2 = saved[0, t], saved[1, t], saved[2, t], saved[3, t], saved[4, t]
            g, k_t, v_t, y_t = grad[t], k[t], v[t], y[t]
            ek = torch.exp(k_t - pp_next)  # e^k_t / e^pp_{t+1} <= 1
            direct = g * r2  # g e^(u+k) / D
            gv[t] = direct + a_hat * ek
            gk[t] = direct * (v_t - y_t) + ek * (a_hat * v_t + b_hat)
            gu += direct * (v_t - y_t)
            decay = torch.exp(pp - w - pp_next)  # e^-w e^pp_t / e^pp_{t+1} <= 1
            gw -= decay * (a_hat * aa + b_hat * bb)
            a_hat = g * r1 + decay * a_hat
            b_hat = -g * y_t * r1 + decay * b_hat
            pp_next = pp
        return gk, gv, gw.reshape(-1, w.shape[-1]).sum(0), gu.reshape(-1, w.shape[-1]).sum(0)


def wkv_sequence(k: Tensor, v: Tensor, w: Tensor, u: Tensor) -> Tensor:
    """WKV over whole sequences ``(..., T, F)`` starting from the empty state.

    ``w = exp(time_decay)`` and ``u = time_first`` are ``(F,)``. The recurrence runs as one
    loop over T on time-major contiguous copies (every step touches contiguous memory); with
    gradients, a custom backward replaces the much longer autograd graph of the loop.
    """
    batch, steps, width = k.shape[:-2], k.shape[-2], k.shape[-1]
    k_tm = k.movedim(-2, 0).reshape(steps, -1, width).contiguous()
    v_tm = v.movedim(-2, 0).reshape(steps, -1, width).contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (k, v, w, u)):
        y = _WKV.apply(k_tm, v_tm, w, u)
    else:
        y = _wkv_loop(k_tm, v_tm, w, u)
    return y.reshape(steps, *batch, width).movedim(0, -2)


def token_shift(x: Tensor) -> Tensor:
    """The previous token along the sequence axis (-2), zeros before the first one."""
    return F.pad(x, (0, 0, 1, -1))


def _mix(xx: Tensor, diff: Tensor, mu: Tensor) -> Tensor:
    """Token-shift mix ``mu * x + (1 - mu) * xx`` written as ``xx + mu * (x - xx)``."""
    return xx + diff * mu.reshape(-1)


def _ratios(layer_id: int, n_layers: int) -> tuple[float, float]:
    """RWKV-4 init ratios: layer_id / (L - 1) (0 for a single layer) and 1 - layer_id / L."""
    ratio_0_to_1 = layer_id / (n_layers - 1) if n_layers > 1 else 0.0
    return ratio_0_to_1, 1.0 - layer_id / n_layers


class TimeMix(nn.Module):
    """RWKV-4 time mixing: ``output(sigmoid(r) * wkv(k, v))`` over token-shifted mixes."""

    def __init__(self, width: int, layer_id: int, n_layers: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_layers = n_layers
        self.time_decay = nn.Parameter(torch.empty(width))
        self.time_first = nn.Parameter(torch.empty(width))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, width))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, width))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, width))
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, width, bias=False)
        self.reset_time_parameters()

    @torch.no_grad()
    def reset_time_parameters(self) -> None:
        """Set decay, bonus and mixing coefficients to the RWKV-4 initial values."""
        width = self.time_decay.numel()
        r01, r1a0 = _ratios(self.layer_id, self.n_layers)
        h = torch.arange(width, dtype=torch.float64)
        decay = -5 + 8 * (h / max(width - 1, 1)) ** (0.7 + 1.3 * r01)
        zigzag = (h + 1) % 3 - 1
        mix_k = (h / width) ** r1a0
        self.time_decay.copy_(decay)
        self.time_first.copy_(math.log(0.3) + zigzag * 0.5)
        self.time_mix_k.copy_(mix_k.view(1, 1, -1))
        self.time_mix_v.copy_((mix_k + 0.3 * r01).view(1, 1, -1))
        self.time_mix_r.copy_(((h / width) ** (0.5 * r1a0)).view(1, 1, -1))

    def _kvr(self, x: Tensor, xx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Key, value and receptance of the mixes of ``x`` and the previous token ``xx``."""
        diff = x - xx
        k = self.key(_mix(xx, diff, self.time_mix_k))
        v = self.value(_mix(xx, diff, self.time_mix_v))
        r = self.receptance(_mix(xx, diff, self.time_mix_r))
        return k, v, r

    def forward(self, x: Tensor) -> Tensor:
        """Sequence form on ``(..., T, F)``."""
        k, v, r = self._kvr(x, token_shift(x))
        wkv = wkv_sequence(k, v, torch.exp(self.time_decay), self.time_first)
        return self.output(torch.sigmoid(r) * wkv)

    def step(
        self, x: Tensor, xx: Tensor, aa: Tensor, bb: Tensor, pp: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One token ``(..., F)`` given the previous input ``xx``; returns ``(y, aa, bb, pp)``."""
        k, v, r = self._kvr(x, xx)
        wkv, aa, bb, pp = wkv_step(k, v, torch.exp(self.time_decay), self.time_first, aa, bb, pp)
        return self.output(torch.sigmoid(r) * wkv), aa, bb, pp


class ChannelMix(nn.Module):
    """RWKV-4 channel mixing: ``sigmoid(r) * value(relu(k)^2)`` over token-shifted mixes."""

    def __init__(self, width: int, layer_id: int, n_layers: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = width if hidden is None else hidden
        self.layer_id = layer_id
        self.n_layers = n_layers
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, width))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, width))
        self.key = nn.Linear(width, hidden, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(hidden, width, bias=False)
        self.reset_time_parameters()

    @torch.no_grad()
    def reset_time_parameters(self) -> None:
        """Set the mixing coefficients to the RWKV-4 initial values ``(h/F)^(1 - l/L)``."""
        width = self.time_mix_k.numel()
        _, r1a0 = _ratios(self.layer_id, self.n_layers)
        mix = (torch.arange(width, dtype=torch.float64) / width) ** r1a0
        self.time_mix_k.copy_(mix.view(1, 1, -1))
        self.time_mix_r.copy_(mix.view(1, 1, -1))

    def _mixed(self, x: Tensor, xx: Tensor) -> Tensor:
        """Output for token ``x`` given the previous token ``xx``."""
        diff = x - xx
        k = self.key(_mix(xx, diff, self.time_mix_k))
        r = self.receptance(_mix(xx, diff, self.time_mix_r))
        return torch.sigmoid(r) * self.value(torch.square(torch.relu(k)))

    def forward(self, x: Tensor) -> Tensor:
        """Sequence form on ``(..., T, F)``."""
        return self._mixed(x, token_shift(x))

    def step(self, x: Tensor, xx: Tensor) -> Tensor:
        """One token ``(..., F)`` given the previous input ``xx``."""
        return self._mixed(x, xx)


class Block(nn.Module):
    """RWKV-4 block: ``x += TimeMix(ln1(x)); x += ChannelMix(ln2(x))``.

    The first block of a stack (``layer_id == 0``) normalises its input with ``ln0`` first.
    """

    def __init__(self, width: int, layer_id: int, n_layers: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.ln2 = nn.LayerNorm(width)
        self.ln0 = nn.LayerNorm(width) if layer_id == 0 else None
        self.att = TimeMix(width, layer_id, n_layers)
        self.ffn = ChannelMix(width, layer_id, n_layers)

    def forward(self, x: Tensor) -> Tensor:
        """Sequence form: ``(..., T, F) -> (..., T, F)``, starting from the empty state."""
        if self.ln0 is not None:
            x = self.ln0(x)
        x = x + self.att(self.ln1(x))
        return x + self.ffn(self.ln2(x))

    def init_state(
        self, batch_shape: tuple[int, ...] | torch.Size, dtype: torch.dtype | None = None
    ) -> RWKVState:
        """Empty state for ``batch_shape`` sequences, on this block's device and dtype."""
        param = self.att.time_decay
        return init_state(batch_shape, param.numel(), dtype or param.dtype, param.device)

    def step(self, x: Tensor, state: RWKVState) -> tuple[Tensor, RWKVState]:
        """Recurrent form: one token ``(..., F)``; returns the output and the new state."""
        if self.ln0 is not None:
            x = self.ln0(x)
        xa = self.ln1(x)
        y, aa, bb, pp = self.att.step(xa, state.att_xx, state.aa, state.bb, state.pp)
        x = x + y
        xf = self.ln2(x)
        x = x + self.ffn.step(xf, state.ffn_xx)
        return x, RWKVState(ffn_xx=xf, att_xx=xa, aa=aa, bb=bb, pp=pp)


def run_blocks(blocks: nn.ModuleList, x: Tensor, recompute: bool = False) -> Tensor:
    """Apply a stack of blocks in sequence form.

    With ``recompute`` (and gradients enabled) each block's activations are recomputed in the
    backward pass instead of kept (activation checkpointing): less memory, more time.
    """
    for block in blocks:
        if recompute and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def step_blocks(
    blocks: nn.ModuleList, x: Tensor, states: list[RWKVState]
) -> tuple[Tensor, list[RWKVState]]:
    """Advance a stack of blocks by one token; returns the output and the new states."""
    new_states = []
    for block, state in zip(blocks, states, strict=True):
        x, state = block.step(x, state)
        new_states.append(state)
    return x, new_states
