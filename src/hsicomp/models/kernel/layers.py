"""Layers on feature arrays (F, columns), columns padded to whole tiles.

A tile is ``_TILE`` consecutive columns (two vectors); every column is computed on its own,
so neither the tiling nor the number of columns changes any result.
"""

from __future__ import annotations

from hsicomp.models.kernel.functions import _exp_le88, _gelu, _max, _sigmoid_den
from hsicomp.models.kernel.layout import (
    _AA,
    _ADD,
    _ATT_K,
    _ATT_O,
    _ATT_R,
    _ATT_V,
    _ATT_XX,
    _BB,
    _DECAY,
    _F32,
    _FFN_K,
    _FFN_R,
    _FFN_V,
    _FFN_XX,
    _FIRST,
    _FMIX_K,
    _FMIX_R,
    _GATED,
    _IX_MDEC,
    _IX_MENC,
    _IX_MSTACK,
    _IX_NBLOCKS,
    _IX_NDEC,
    _IX_NENC,
    _IX_VDEC,
    _IX_VENC,
    _IX_VSTACK,
    _LN1_B,
    _LN1_G,
    _LN2_B,
    _LN2_G,
    _LN_EPS,
    _MIX_K,
    _MIX_R,
    _MIX_V,
    _NMAT_BLOCK,
    _NVEC_BLOCK,
    _ONE,
    _PP,
    _PP_INIT,
    _RELU2,
    _SET,
    _ZERO,
    _jit,
)
from hsicomp.models.kernel.vectors import (
    _TILE,
    _VL,
    _abs,
    _fma,
    _ld,
    _ld1,
    _neg,
    _sel,
    _sqrt,
    _st,
    _st1,
    _vec,
)


@_jit
def _ln_stats(x, c):
    """LayerNorm statistics of the tile at column ``c`` of ``x``, (mean, 1 / std) of its first
    and of its second vector. (The two sums run side by side, each in order of the features.)"""
    width = x.shape[0]
    fw = _F32(width)
    s0 = _ld(x, 0, c)
    s1 = _ld(x, 0, c + _VL)
    for f in range(1, width):
        s0 = s0 + _ld(x, f, c)
        s1 = s1 + _ld(x, f, c + _VL)
    mean0 = s0 / fw
    mean1 = s1 / fw
    d0 = _ld(x, 0, c) - mean0
    d1 = _ld(x, 0, c + _VL) - mean1
    q0 = d0 * d0
    q1 = d1 * d1
    for f in range(1, width):
        d0 = _ld(x, f, c) - mean0
        d1 = _ld(x, f, c + _VL) - mean1
        q0 = _fma(d0, d0, q0)
        q1 = _fma(d1, d1, q1)
    return (mean0, _ONE / _sqrt(q0 / fw + _LN_EPS), mean1, _ONE / _sqrt(q1 / fw + _LN_EPS))


@_jit
def _norm_tile(x, g, b, c, gelu):
    """LayerNorm (then GELU if ``gelu``) in place on the tile at column ``c``."""
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for f in range(x.shape[0]):
        y0 = _fma((_ld(x, f, c) - mean0) * scale0, g[f], b[f])
        y1 = _fma((_ld(x, f, c + _VL) - mean1) * scale1, g[f], b[f])
        if gelu:
            y0 = _gelu(y0)
            y1 = _gelu(y1)
        _st(x, f, c, y0)
        _st(x, f, c + _VL, y1)


@_jit
def _dot(w, j, x, c, a0, a1, a2, a3, b0, b1, b2, b3):
    """Register tile: ``a_i += w[j + i] @ x[:, c : c + _VL]`` and ``b_i`` the same on the next
    vector, one ``fma`` per term, in order of the input index."""
    for k in range(w.shape[1]):
        x0 = _ld(x, k, c)
        x1 = _ld(x, k, c + _VL)
        w0, w1, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
        a0 = _fma(w0, x0, a0)
        b0 = _fma(w0, x1, b0)
        a1 = _fma(w1, x0, a1)
        b1 = _fma(w1, x1, b1)
        a2 = _fma(w2, x0, a2)
        b2 = _fma(w2, x1, b2)
        a3 = _fma(w3, x0, a3)
        b3 = _fma(w3, x1, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


@_jit
def _put(dst, f, c, s, mode, gate, gc):
    """Epilogue of a product: row f of the vector at column c of ``dst`` from the sum ``s``."""
    if mode == _SET:
        _st(dst, f, c, s)
    elif mode == _ADD:
        _st(dst, f, c, _ld(dst, f, c) + s)
    elif mode == _RELU2:
        r = _max(s, _ZERO)
        _st(dst, f, c, r * r)
    else:
        _st(dst, f, c, _ld(dst, f, c) + s / _sigmoid_den(_ld(gate, f, gc)))


@_jit
def _product(w, x, dst, dc, mode, gate):
    """``s = w @ x`` on a tile ``x`` (F, _TILE), each sum from 0, into the tile at column
    ``dc`` of ``dst``: ``_SET`` s, ``_ADD`` dst + s, ``_RELU2`` max(s, 0)^2, ``_GATED``
    dst + s / (1 + e^-gate) (``gate`` a tile like ``x``)."""
    z = _vec(_ZERO)
    for j in range(0, w.shape[0], 4):
        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(w, j, x, 0, z, z, z, z, z, z, z, z)
        _put(dst, j, dc, a0, mode, gate, 0)
        _put(dst, j + 1, dc, a1, mode, gate, 0)
        _put(dst, j + 2, dc, a2, mode, gate, 0)
        _put(dst, j + 3, dc, a3, mode, gate, 0)
        _put(dst, j, dc + _VL, b0, mode, gate, _VL)
        _put(dst, j + 1, dc + _VL, b1, mode, gate, _VL)
        _put(dst, j + 2, dc + _VL, b2, mode, gate, _VL)
        _put(dst, j + 3, dc + _VL, b3, mode, gate, _VL)


@_jit
def _affine(w, bias, x, dst):
    """``dst = bias + w @ x`` on tiles (F, _TILE)."""
    for j in range(0, w.shape[0], 4):
        a0, a1, a2, a3 = _vec(bias[j]), _vec(bias[j + 1]), _vec(bias[j + 2]), _vec(bias[j + 3])
        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(w, j, x, 0, a0, a1, a2, a3, a0, a1, a2, a3)
        _st(dst, j, 0, a0)
        _st(dst, j + 1, 0, a1)
        _st(dst, j + 2, 0, a2)
        _st(dst, j + 3, 0, a3)
        _st(dst, j, _VL, b0)
        _st(dst, j + 1, _VL, b1)
        _st(dst, j + 2, _VL, b2)
        _st(dst, j + 3, _VL, b3)


@_jit
def _block_tile(mats, vecs, m0, v0, x, c, st, tiles):
    """One RWKV-4 block on one token per column, on the tile at column ``c`` of ``x`` (F, cols),
    in place; ``st`` the state of the tile (_NSTATE, F, _TILE); ``tiles`` scratch (_NTILE, F,
    _TILE)."""
    width = x.shape[0]
    mk, mv, mr, kt, vt, rt = tiles[0], tiles[1], tiles[2], tiles[3], tiles[4], tiles[5]
    # TimeMix on ln1(x), mixed with the previous token's ln1 output.
    ln_g, ln_b = vecs[v0 + _LN1_G], vecs[v0 + _LN1_B]
    mix_k, mix_v, mix_r = vecs[v0 + _MIX_K], vecs[v0 + _MIX_V], vecs[v0 + _MIX_R]
    att_xx = st[_ATT_XX]
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for h in range(0, _TILE, _VL):
        mean = mean0 if h == 0 else mean1
        scale = scale0 if h == 0 else scale1
        for f in range(width):
            xa = _fma((_ld(x, f, c + h) - mean) * scale, ln_g[f], ln_b[f])
            prev = _ld(att_xx, f, h)
            d = xa - prev
            _st(mk, f, h, _fma(d, mix_k[f], prev))
            _st(mv, f, h, _fma(d, mix_v[f], prev))
            _st(mr, f, h, _fma(d, mix_r[f], prev))
            _st(att_xx, f, h, xa)
    _product(mats[m0 + _ATT_K], mk, kt, 0, _SET, kt)
    _product(mats[m0 + _ATT_V], mv, vt, 0, _SET, vt)
    _product(mats[m0 + _ATT_R], mr, rt, 0, _SET, rt)
    # WKV with the log-sum-exp state (aa, bb, pp); y = sigmoid(r) * wkv goes to mk.
    decay, first = vecs[v0 + _DECAY], vecs[v0 + _FIRST]
    aa, bb, pp = st[_AA], st[_BB], st[_PP]
    for h in range(0, _TILE, _VL):
        for f in range(width):
            kk = _ld(kt, f, h)
            vv = _ld(vt, f, h)
            a = _ld(aa, f, h)
            b = _ld(bb, f, h)
            p = _ld(pp, f, h)
            ww = first[f] + kk
            e = _exp_le88(_neg(_abs(p - ww)))
            m = p >= ww
            e1 = _sel(m, _ONE, e)
            e2 = _sel(m, e, _ONE)
            # sigmoid(r) * wkv with one division
            y = _fma(e1, a, e2 * vv) / (_fma(e1, b, e2) * _sigmoid_den(_ld(rt, f, h)))
            _st(mk, f, h, y)
            ww = p - decay[f]
            e = _exp_le88(_neg(_abs(ww - kk)))
            m = ww >= kk
            e1 = _sel(m, _ONE, e)
            e2 = _sel(m, e, _ONE)
            _st(aa, f, h, _fma(e1, a, e2 * vv))
            _st(bb, f, h, _fma(e1, b, e2))
            _st(pp, f, h, _sel(m, ww, kk))
    _product(mats[m0 + _ATT_O], mk, x, c, _ADD, x)
    # ChannelMix on ln2(x): sigmoid(r) * value(relu(key)^2).
    ln_g, ln_b = vecs[v0 + _LN2_G], vecs[v0 + _LN2_B]
    mix_k, mix_r = vecs[v0 + _FMIX_K], vecs[v0 + _FMIX_R]
    ffn_xx = st[_FFN_XX]
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for h in range(0, _TILE, _VL):
        mean = mean0 if h == 0 else mean1
        scale = scale0 if h == 0 else scale1
        for f in range(width):
            xa = _fma((_ld(x, f, c + h) - mean) * scale, ln_g[f], ln_b[f])
            prev = _ld(ffn_xx, f, h)
            d = xa - prev
            _st(mk, f, h, _fma(d, mix_k[f], prev))
            _st(mr, f, h, _fma(d, mix_r[f], prev))
            _st(ffn_xx, f, h, xa)
    _product(mats[m0 + _FFN_R], mr, rt, 0, _SET, rt)
    _product(mats[m0 + _FFN_K], mk, kt, 0, _RELU2, kt)
    _product(mats[m0 + _FFN_V], kt, x, c, _GATED, rt)


@_jit
def _stack_step(mats, vecs, ix, stack, x, states, tiles):
    """Advance a stack of blocks by one token per column; ``x`` (F, cols) becomes its output.

    ``states`` is ``(n_blocks, cols / _TILE, _NSTATE, F, _TILE)`` (tile-major, so that the
    state of a tile is contiguous). Tile by tile, all blocks.
    """
    vb = ix[_IX_VSTACK + stack]
    mb = ix[_IX_MSTACK + stack]
    n_blocks = ix[_IX_NBLOCKS + stack]
    for c in range(0, x.shape[1], _TILE):
        _norm_tile(x, vecs[vb], vecs[vb + 1], c, False)  # ln0 of the first block
        for blk in range(n_blocks):
            _block_tile(mats, vecs, mb + _NMAT_BLOCK * blk, vb + 2 + _NVEC_BLOCK * blk, x, c,
                        states[blk, c // _TILE], tiles)


@_jit
def _init_states(states):
    """The empty recurrent state: zeros, and ``pp`` at the initial running maximum."""
    states[:] = _ZERO
    for blk in range(states.shape[0]):
        for tile in range(states.shape[1]):
            states[blk, tile, _PP] = _PP_INIT


@_jit
def _encode_line(mats, vecs, ix, line, out, buf, rows):
    """Line encoder: values ``line`` (n_valid,) -> features ``out`` (F, cols).

    Convolutions see zeros outside columns ``0 .. n_valid - 1``: the line and the hidden
    layers are kept in rows with _VL zero columns on either side (``rows[0]``, ``buf``), whose
    columns from n_valid on are zeroed too, and the taps are vectors read one column to the
    left and to the right. The columns of ``out`` from n_valid on are computed from zeros,
    like any other column, and never used.
    """
    width, n_cols = out.shape
    n_valid = line.shape[0]
    n_enc = ix[_IX_NENC]
    ve = ix[_IX_VENC]
    me = ix[_IX_MENC]
    row = rows[0]
    for n in range(n_valid):
        row[_VL + n] = line[n]
    for n in range(n_valid, n_cols):
        row[_VL + n] = _ZERO
    w0, w1, w2 = vecs[ve], vecs[ve + 1], vecs[ve + 2]
    for layer in range(n_enc):
        base = ve + 3 + 3 * layer  # convolution bias, LayerNorm weight and bias
        bias, ln_g, ln_b = vecs[base], vecs[base + 1], vecs[base + 2]
        last = layer == n_enc - 1
        h = out if last else buf[layer % 2]
        o = 0 if last else _VL  # the column of h where column 0 is
        if layer == 0:
            for c in range(0, n_cols, _TILE):
                for hh in range(0, _TILE, _VL):
                    lv = _ld1(row, _VL - 1 + c + hh)
                    mv = _ld1(row, _VL + c + hh)
                    rv = _ld1(row, _VL + 1 + c + hh)
                    for j in range(width):
                        acc = _fma(w2[j], rv, _fma(w1[j], mv, _fma(w0[j], lv, _vec(bias[j]))))
                        _st(h, j, o + c + hh, acc)
                _norm_tile(h, ln_g, ln_b, o + c, True)
        else:
            prev = buf[(layer - 1) % 2]
            m0 = me + 3 * (layer - 1)
            for c in range(0, n_cols, _TILE):
                for j in range(0, width, 4):
                    a0, a1 = _vec(bias[j]), _vec(bias[j + 1])
                    a2, a3 = _vec(bias[j + 2]), _vec(bias[j + 3])
                    b0, b1, b2, b3 = a0, a1, a2, a3
                    for tap in range(3):
                        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(mats[m0 + tap], j, prev,
                                                              _VL - 1 + tap + c,
                                                              a0, a1, a2, a3, b0, b1, b2, b3)
                    _st(h, j, o + c, a0)
                    _st(h, j + 1, o + c, a1)
                    _st(h, j + 2, o + c, a2)
                    _st(h, j + 3, o + c, a3)
                    _st(h, j, o + c + _VL, b0)
                    _st(h, j + 1, o + c + _VL, b1)
                    _st(h, j + 2, o + c + _VL, b2)
                    _st(h, j + 3, o + c + _VL, b3)
                _norm_tile(h, ln_g, ln_b, o + c, True)
        if not last:
            for f in range(width):
                for n in range(n_valid, n_cols):
                    h[f, _VL + n] = _ZERO  # zero padding for the next convolution


@_jit
def _decode(mats, vecs, ix, xs_band, spec, out, rows, tiles):
    """Per-column decoder of the features ``xs_band + spec`` (F, cols) into ``out`` (its length:
    the columns kept)."""
    width, n_cols = xs_band.shape
    vd = ix[_IX_VDEC]
    md = ix[_IX_MDEC]
    n_hidden = ix[_IX_NDEC] - 1
    last = vd + 3 * n_hidden
    w = vecs[last]
    b = vecs[last + 1][0]
    row = rows[1]
    for c in range(0, n_cols, _TILE):
        h = tiles[0]
        for hh in range(0, _TILE, _VL):
            for f in range(width):
                _st(h, f, hh, _ld(xs_band, f, c + hh) + _ld(spec, f, c + hh))
        for layer in range(n_hidden):
            dst = tiles[1 + layer % 2]
            _affine(mats[md + layer], vecs[vd + 3 * layer], h, dst)
            _norm_tile(dst, vecs[vd + 3 * layer + 1], vecs[vd + 3 * layer + 2], 0, True)
            h = dst
        for hh in range(0, _TILE, _VL):
            acc = _vec(b)
            for k in range(width):
                acc = _fma(w[k], _ld(h, k, hh), acc)
            _st1(row, c + hh, acc)
    for n in range(out.shape[0]):
        out[n] = row[n]


@_jit
def _decode_band0(vecs, ix, xs0, prev, out, rows):
    """Band 0: the previous line ``prev`` plus a 1x1 projection of the line-predictor output."""
    last = ix[_IX_VDEC] + 3 * (ix[_IX_NDEC] - 1)
    w = vecs[last + 2]
    b = vecs[last + 3][0]
    row = rows[1]
    for c in range(0, xs0.shape[1], _VL):
        acc = _vec(b)
        for k in range(xs0.shape[0]):
            acc = _fma(w[k], _ld(xs0, k, c), acc)
        _st1(row, c, acc)
    for n in range(out.shape[0]):
        out[n] = row[n] + prev[n]


@_jit
def _spectral_input(enc, xs, spec):
    """Innovation ``enc - xs`` of a band, the spectral predictor's input."""
    for f in range(enc.shape[0]):
        for c in range(0, enc.shape[1], _VL):
            _st(spec, f, c, _ld(enc, f, c) - _ld(xs, f, c))
