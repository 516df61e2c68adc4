"""LineRWKV: a line-based predictor of hyperspectral samples (Valsesia, Bianchi, Magli 2024).

The network predicts line ``t + 1`` of every band of a cube from already known data:

* a line encoder turns one line of one band into F-dim features per column (1-D convolutions
  along the columns, never mixing lines or bands);
* the line predictor, a stack of RWKV-4 blocks, runs over the lines of each (band, column)
  pair; its output after line ``t`` is ``x_spatial[t]``;
* the spectral predictor, another stack, runs over the bands of the line being predicted, one
  sequence per column, on the innovations ``enc(line t+1, band i) - x_spatial[t, i]``;
* band 0 is predicted as the previous line plus a 1x1 projection of ``x_spatial[t, 0]``; band
  ``i >= 1`` by a per-pixel decoder of ``x_spatial[t, i] + spectral_out[t+1, i-1]``.

The prediction of (line ``t + 1``, band ``i``) therefore depends on lines ``0..t`` of bands
``0..i`` and on line ``t + 1`` of bands ``0..i-1``, within ``n_enc`` columns.

Input convention: the model works on normalised floats. The caller maps each band to the
model's scale (typically ``(x - mean) / std`` per band) and maps predictions back; the codec
layer owns that normalisation and any integer rounding. ``LineRWKV.forward`` computes all
predictions of a known cube at once; ``LineRWKVStepper`` computes the same predictions line by
line and band by band, as a decoder must. The two agree to float rounding, not bitwise.

Module and parameter names match the released checkpoints, so their state dicts load with
``load_state_dict(state_dict, strict=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hsicomp.models.rwkv import Block, RWKVState, run_blocks, step_blocks

#: Default work per column chunk in ``LineRWKV.forward``: line-predictor tokens (image x band x
#: line x column). Chunks of this size keep the intermediate tensors near 32 MB, which on a CPU
#: ran several times faster than one pass over a whole 202 x 128 x 128 cube.
TOKENS_PER_CHUNK = 1 << 17


@dataclass(frozen=True)
class LineRWKVConfig:
    """Network size: feature width F and the depth of each part."""

    width: int
    n_enc: int
    n_lines: int
    n_bands: int
    n_dec: int

    def __post_init__(self) -> None:
        for name in ("width", "n_enc", "n_lines", "n_bands", "n_dec"):
            if getattr(self, name) < 1:
                raise ValueError(f"LineRWKVConfig.{name} must be >= 1")


#: The released sizes.
SIZES: dict[str, LineRWKVConfig] = {
    "XS": LineRWKVConfig(width=32, n_enc=1, n_lines=2, n_bands=2, n_dec=1),
    "S": LineRWKVConfig(width=64, n_enc=2, n_lines=2, n_bands=2, n_dec=2),
    "M": LineRWKVConfig(width=64, n_enc=4, n_lines=4, n_bands=4, n_dec=4),
    "L": LineRWKVConfig(width=96, n_enc=4, n_lines=6, n_bands=6, n_dec=4),
}


def _pointwise(conv: nn.Conv1d, h: Tensor) -> Tensor:
    """A 1x1 convolution applied to channel-last features ``(..., F_in) -> (..., F_out)``."""
    return F.linear(h, conv.weight.squeeze(-1), conv.bias)


class LineEncoder(nn.Module):
    """Features of single lines: ``n_enc`` x [Conv1d k3 (zero 'same' padding), LayerNorm, GELU]."""

    def __init__(self, width: int, n_layers: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv1d(1, width, 3, padding=1)
        self.norm_in = nn.LayerNorm(width)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, 3, padding=1) for _ in range(n_layers - 1)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(n_layers - 1))

    def forward(self, lines: Tensor) -> Tensor:
        """Encode lines ``(..., C)`` into features ``(..., C, F)``."""
        *batch, columns = lines.shape
        h = self.conv_in(lines.reshape(-1, 1, columns))
        h = F.gelu(self.norm_in(h.transpose(1, 2)))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.gelu(norm(conv(h.transpose(1, 2)).transpose(1, 2)))
        return h.reshape(*batch, columns, h.shape[-1])

    def forward_at(self, lines: Tensor, columns: Tensor) -> Tensor:
        """Features of lines ``(B, I, T, C)`` at columns ``(P,)`` or ``(B, P)`` only.

        Equal to ``forward(lines)`` at those columns: each column's feature depends on the
        ``n_enc`` columns either side, so the stack runs without padding on those windows,
        zeroing positions outside the line after every layer (the zero 'same' padding of the
        full form). Memory and work scale with P instead of C.
        """
        n = 1 + len(self.convs)
        b, i, t, c = lines.shape
        columns = columns.to(device=lines.device, dtype=torch.long)
        offsets = torch.arange(-n, n + 1, device=lines.device)
        pos = columns[..., None] + offsets  # (P, W) or (B, P, W)
        padded = F.pad(lines, (n, n))
        if pos.dim() == 2:
            windows = padded[..., pos + n]  # (B, I, T, P, W)
        else:
            idx = (pos + n).reshape(b, 1, 1, -1).expand(b, i, t, -1)
            windows = padded.gather(3, idx).reshape(b, i, t, *pos.shape[1:])
        inside = ((pos >= 0) & (pos < c)).to(lines.dtype)
        if inside.dim() == 2:
            inside = inside.expand(b, *inside.shape)
        inside = inside[:, None, None].expand(b, i, t, *inside.shape[1:]).reshape(-1, 1, 2 * n + 1)
        h = F.conv1d(windows.reshape(-1, 1, 2 * n + 1), self.conv_in.weight, self.conv_in.bias)
        h = F.gelu(self.norm_in(h.transpose(1, 2))).transpose(1, 2)  # (N, F, W - 2)
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True), start=1):
            h = h * inside[..., layer : 2 * n + 1 - layer]
            h = F.conv1d(h, conv.weight, conv.bias)
            h = F.gelu(norm(h.transpose(1, 2))).transpose(1, 2)
        return h.reshape(b, i, t, -1, h.shape[1])


class LineDecoder(nn.Module):
    """Per-pixel decoder: ``n_dec - 1`` x [1x1 conv, LayerNorm, GELU], then 1x1 conv to 1."""

    def __init__(self, width: int, n_layers: int) -> None:
        super().__init__()
        self.conv_out = nn.Conv1d(width, 1, 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(n_layers - 1))

    def forward(self, h: Tensor) -> Tensor:
        """Decode features ``(..., F)`` into values ``(...)``."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.gelu(norm(_pointwise(conv, h)))
        return _pointwise(self.conv_out, h).squeeze(-1)


class BandZeroDecoder(nn.Module):
    """Correction of band 0: one 1x1 conv ``F -> 1``, added by the caller to the previous line."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv_out = nn.Conv1d(width, 1, 1)

    def forward(self, h: Tensor) -> Tensor:
        """Decode features ``(..., F)`` into values ``(...)``."""
        return _pointwise(self.conv_out, h).squeeze(-1)


def _select_columns(prev0: Tensor, columns: Tensor) -> Tensor:
    """Keep columns of ``prev0 (B, T-1, C)``: ``columns`` is ``(P,)`` or ``(B, P)``."""
    columns = columns.to(device=prev0.device, dtype=torch.long)
    if columns.dim() == 1:
        return prev0.index_select(2, columns)
    if columns.dim() != 2 or columns.shape[0] != prev0.shape[0]:
        raise ValueError("columns must have shape (P,) or (B, P)")
    return prev0.gather(2, columns[:, None, :].expand(-1, prev0.shape[1], -1))


class LineRWKV(nn.Module):
    """The LineRWKV predictor; see the module docstring for the data flow."""

    def __init__(self, config: LineRWKVConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.encoder = LineEncoder(width, config.n_enc)
        self.decoder = LineDecoder(width, config.n_dec)
        self.bandzerodec = BandZeroDecoder(width)
        self.blocks_lines = nn.ModuleList(
            Block(width, k, config.n_lines) for k in range(config.n_lines)
        )
        self.blocks_bands = nn.ModuleList(
            Block(width, k, config.n_bands) for k in range(config.n_bands)
        )
        #: recompute block activations in the backward pass (training memory saver)
        self.recompute_blocks = False

    @classmethod
    def from_size(cls, name: str) -> LineRWKV:
        """A freshly initialised network of a released size: ``"XS"``, ``"S"``, ``"M"``, ``"L"``."""
        return cls(SIZES[name.upper()])

    def forward(
        self, x: Tensor, columns: Tensor | None = None, column_chunk: int | None = None
    ) -> Tensor:
        """Predict lines ``1..T-1`` of every band of normalised cubes (parallel form).

        Args:
            x: normalised cubes ``(B, I, T, C)`` (bands, lines, columns), float.
            columns: optional column indices ``(P,)`` or ``(B, P)``: only those columns are
                predicted (training memory saver); the line encoder still sees whole lines
                but is evaluated at those columns only.
            column_chunk: number of columns processed at a time after the encoder (the result
                does not depend on it); by default about ``TOKENS_PER_CHUNK`` tokens per chunk.

        Returns:
            Predictions ``(B, I, T-1, C)`` (or ``(B, I, T-1, P)``); entry ``[:, i, t]`` predicts
            ``x[:, i, t + 1]``.
        """
        if x.dim() != 4 or x.shape[2] < 2:
            raise ValueError("x must have shape (B, I, T, C) with T >= 2")
        prev0 = x[:, 0, :-1]  # band 0 of the line before each predicted one
        if columns is None:
            enc = self.encoder(x)  # (B, I, T, C, F)
        else:
            enc = self.encoder.forward_at(x, columns)  # (B, I, T, P, F)
            prev0 = _select_columns(prev0, columns)
        n_cols = enc.shape[3]
        if column_chunk is None:
            column_chunk = max(1, TOKENS_PER_CHUNK // (x.shape[0] * x.shape[1] * (x.shape[2] - 1)))
        if column_chunk >= n_cols:
            return self._predict(enc, prev0)
        parts = [
            self._predict(enc[:, :, :, s : s + column_chunk], prev0[..., s : s + column_chunk])
            for s in range(0, n_cols, column_chunk)
        ]
        return torch.cat(parts, dim=-1)

    def _predict(self, enc: Tensor, prev0: Tensor) -> Tensor:
        """Predictions ``(B, I, T-1, C)`` from line features ``(B, I, T, C, F)``."""
        n_bands = enc.shape[1]
        # Line predictor: one sequence per (image, band, column) over lines 0..T-2.
        lines_in = enc[:, :, :-1].permute(0, 1, 3, 2, 4)  # (B, I, C, T-1, F)
        # xs[..., t, :] = x_spatial[t]
        xs = run_blocks(self.blocks_lines, lines_in, self.recompute_blocks)
        pred0 = self.bandzerodec(xs[:, 0]).transpose(1, 2) + prev0  # (B, T-1, C)
        if n_bands == 1:
            return pred0[:, None]
        # Spectral predictor: innovations of bands 0..I-2 on the predicted lines 1..T-1,
        # one sequence over bands per (image, predicted line, column).
        innov = enc[:, :-1, 1:].permute(0, 1, 3, 2, 4) - xs[:, :-1]  # (B, I-1, C, T-1, F)
        spec = run_blocks(  # (B, T-1, C, I-1, F)
            self.blocks_bands, innov.permute(0, 3, 2, 1, 4), self.recompute_blocks
        )
        feats = xs[:, 1:] + spec.permute(0, 3, 2, 1, 4)  # (B, I-1, C, T-1, F)
        rest = self.decoder(feats).transpose(2, 3)  # (B, I-1, T-1, C)
        return torch.cat([pred0[:, None], rest], dim=1)


class LineRWKVStepper:
    """Recurrent LineRWKV predictions, line by line and band by band, as a decoder needs them.

    Values are normalised floats, as for ``LineRWKV.forward``; a leading batch shape ``(...)``
    of several images is allowed and all columns of a line are processed together. Usage::

        stepper = LineRWKVStepper(model)
        stepper.start(x[..., 0, :])              # line 0 of all bands: (..., I, C)
        for t in range(1, T):
            stepper.begin_line()                 # line t-1 is complete: prepare line t
            for i in range(I):
                p = stepper.predict_band(i)      # (..., C), needs bands 0..i-1 of line t
                stepper.push_band(i, x[..., i, t, :])

    Each line is encoded once, when pushed; the line predictor advances by one step per line in
    ``begin_line`` and the spectral predictor by one step per band in ``push_band``.
    All methods run without autograd.
    """

    def __init__(self, model: LineRWKV) -> None:
        self.model = model
        param = next(model.parameters())
        self.dtype = param.dtype
        self.device = param.device
        self.lines_done = 0  # number of complete lines
        self.next_band = 0  # band expected by the next push_band of the open line
        self.n_bands = 0
        self._line: Tensor | None = None  # last complete line (..., I, C)
        self._enc: Tensor | None = None  # its features (..., I, C, F)
        self._line_states: list[RWKVState] = []
        self._band_states: list[RWKVState] = []
        self._xs: Tensor | None = None  # x_spatial of the last complete line (..., I, C, F)
        self._spec: Tensor | None = None  # spectral output after the last pushed band (..., C, F)
        self._prev: Tensor | None = None  # line before the open one (..., I, C)
        self._new_line: Tensor | None = None
        self._new_enc: Tensor | None = None
        self._open = False

    @torch.no_grad()
    def start(self, first_line: Tensor) -> None:
        """Reset and take line 0 of all bands, ``(..., I, C)``; line 0 is not predicted."""
        line = first_line.to(device=self.device, dtype=self.dtype)
        if line.dim() < 2:
            raise ValueError("first_line must have shape (..., I, C)")
        self.n_bands = line.shape[-2]
        self._line = line.clone()
        self._enc = self.model.encoder(self._line)
        # One line-predictor sequence per (image, band, column).
        self._line_states = [block.init_state(line.shape) for block in self.model.blocks_lines]
        self.lines_done = 1
        self._open = False

    @torch.no_grad()
    def begin_line(self) -> None:
        """Open the next line: advance the line predictor with the last complete line."""
        if self._line is None or self._open:
            raise RuntimeError("begin_line needs start() or a completely pushed line")
        self._xs, self._line_states = step_blocks(
            self.model.blocks_lines, self._enc, self._line_states
        )
        self._prev = self._line
        batch = self._line.shape[:-2] + self._line.shape[-1:]  # (..., C): one sequence per column
        self._band_states = [block.init_state(batch) for block in self.model.blocks_bands]
        self._spec = None
        self._new_line = torch.empty_like(self._line)
        self._new_enc = torch.empty_like(self._enc)
        self.next_band = 0
        self._open = True

    def _check_band(self, band: int) -> None:
        if not self._open:
            raise RuntimeError("call begin_line() first")
        if band != self.next_band:
            raise RuntimeError(f"band {band} requested, band {self.next_band} expected")

    @torch.no_grad()
    def predict_band(self, band: int) -> Tensor:
        """Prediction ``(..., C)`` of ``band`` on the open line; bands before it must be pushed."""
        self._check_band(band)
        xs = self._xs[..., band, :, :]
        if band == 0:
            return self.model.bandzerodec(xs) + self._prev[..., 0, :]
        return self.model.decoder(xs + self._spec)

    @torch.no_grad()
    def push_band(self, band: int, values: Tensor) -> None:
        """Give the true (normalised) values ``(..., C)`` of ``band`` on the open line."""
        self._check_band(band)
        values = values.to(device=self.device, dtype=self.dtype)
        enc = self.model.encoder(values)
        self._new_line[..., band, :] = values
        self._new_enc[..., band, :, :] = enc
        if band < self.n_bands - 1:  # the last band's innovation predicts nothing
            innov = enc - self._xs[..., band, :, :]
            self._spec, self._band_states = step_blocks(
                self.model.blocks_bands, innov, self._band_states
            )
        self.next_band += 1
        if self.next_band == self.n_bands:
            self._line, self._enc = self._new_line, self._new_enc
            self.lines_done += 1
            self._open = False


@torch.no_grad()
def predict_recurrent(model: LineRWKV, x: Tensor) -> Tensor:
    """Predictions of a known normalised cube ``(..., I, T, C)`` with ``LineRWKVStepper``.

    Returns ``(..., I, T-1, C)``, the recurrent counterpart of ``model(x)``.
    """
    if x.dim() < 3 or x.shape[-2] < 2:
        raise ValueError("x must have shape (..., I, T, C) with T >= 2")
    n_bands, n_lines = x.shape[-3], x.shape[-2]
    stepper = LineRWKVStepper(model)
    stepper.start(x[..., 0, :])
    rows = []
    for t in range(1, n_lines):
        stepper.begin_line()
        row = []
        for i in range(n_bands):
            row.append(stepper.predict_band(i))
            stepper.push_band(i, x[..., i, t, :])
        rows.append(torch.stack(row, dim=-2))  # (..., I, C)
    return torch.stack(rows, dim=-2)
