"""The CCSDS-123.0-B-2 adaptive predictor, one band-line at a time, with an optional external
prediction as one more input.

:func:`code_line` predicts, quantizes and reconstructs the samples of band ``z`` on row ``y``
(all columns, left to right) exactly as CCSDS-123.0-B-2 section 4 does (see
:mod:`hsicomp.codecs.ccsds123` for the conventions and integer ranges). The predictor state
of a band is its weight vector, so bands can be visited in any interleaving of their rows
(BSQ or BIL) with the same result, as long as every band's rows come in order and band
``z - k`` of row ``y`` is done before band ``z``.

External input
    A caller with another prediction of the samples, ``ext`` in quarter units
    (``ext4 = round(4 p)``), can add it to the local difference vector as the component
    ``ext4 - sigma``, the same form as the directional differences. Its weight starts at
    ``ext_init / 8`` and the previous-band weights start at ``(8 - ext_init) / 8`` of their
    standard values, so ``ext_init = 8`` starts from the external prediction alone and the
    sign algorithm then learns how much of each input the scene wants. With ``n_ext = 0``
    the predictor is the standard one, bit for bit. With it, a sample predicted exactly
    (``e = 0``) leaves the weights alone instead of counting as a positive error, so that a
    precise input does not make the weights drift.

Second stage (``cascade = k > 0``; with ``k = 0`` nothing below happens)
    The prediction of the stage above (the clipped scaled prediction ``s_breve_1``, in
    units of ``2**-(Omega + 2)``) is corrected by a second sign-error LMS predictor that
    predicts the first stage's residual from the first-stage residuals of nine already
    coded neighbours. Residuals are kept in 1/16 sample units, ``r = 16 s' - p16`` with
    ``p16 = s_breve_1 >> (Omega - 2)`` (``r = 0`` at ``t = 0``), and the inputs are
    ``r`` at ``(z-1, y, x)``, ``(z, y, x-1)``, ``(z, y-1, x)``, ``(z, y-1, x+1)``,
    ``(z, y-1, x-1)``, ``(z-2, y, x)``, ``(z, y, x-2)``, ``(z-1, y, x+1)`` and
    ``(z-3, y, x)`` (0 where the neighbour does not exist), all coded before ``(z, y, x)``
    in BSQ and in BIL order. Each band has its own nine weights ``V_j`` with
    ``C_BITS = 12`` fraction bits, zero at the band's first sample. The correction is
    ``c = (sum_j V_j r_j) >> C_BITS`` (1/16 units) and the prediction becomes
    ``s_breve = clip(s_breve_1 + (c << (Omega - 2)), 0, 2**(Omega + 2) s_max + 2**(Omega + 1))``,
    from which ``s_tilde``, ``s_hat`` and the quantizer follow as in the standard. After the
    sample, with ``f = 16 s' - (s_breve >> (Omega - 2))`` the final residual, every weight
    moves by ``sgn(f) r_j`` divided by ``2**k`` (rounded toward zero) and is clipped to
    ``[-2**(C_BITS + 2), 2**(C_BITS + 2) - 1]``. The first stage's weights keep following
    the sign of its own error ``2 s' - (s_breve_1 >> (Omega + 1))``, so the first stage is
    exactly the standard predictor and the second one learns what it leaves. Integer
    ranges: ``|r| < 2**21``, so the sum is below ``9 * 2**35`` and the correction below
    ``2**24`` samples' worth of ``2**(Omega + 2)`` units (far from overflowing int64).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_jit = njit(cache=True, error_model="numpy", nogil=True)

#: Inputs of the second stage and fraction bits of its weights (module docstring).
C_INPUTS = 9
C_BITS = 12


@_jit
def local_sum(rec, z, y, x, kind, s_mid):
    """Local sum sigma_z(y, x) of reconstructed samples (t > 0)."""
    cols = rec.shape[2]
    if y == 0:  # here x > 0
        if kind == 0 or kind == 2:
            return 4 * rec[z, 0, x - 1]
        if z > 0:
            return 4 * rec[z - 1, 0, x - 1]
        return 4 * s_mid
    n = rec[z, y - 1, x]
    if kind >= 2 or cols == 1:
        return 4 * n
    if x == 0:
        return 2 * (n + rec[z, y - 1, 1])
    nw = rec[z, y - 1, x - 1]
    if kind == 0:
        if x == cols - 1:
            return rec[z, y, x - 1] + nw + 2 * n
        return rec[z, y, x - 1] + nw + n + rec[z, y - 1, x + 1]
    if x == cols - 1:
        return 2 * (nw + n)
    return nw + 2 * n + rec[z, y - 1, x + 1]


@_jit
def map_index(q, theta, odd):
    """Mapped quantizer index of q given theta and the parity of s_tilde."""
    a = abs(q)
    if a > theta:
        return a + theta
    if (q >= 0) != odd or q == 0:  # 0 <= (-1)**s_tilde q <= theta
        return 2 * a
    return 2 * a - 1


@_jit
def unmap_index(code, theta, odd, qlo, qhi):
    """Inverse of :func:`map_index`; returns (q, ok) with ok False for an impossible code."""
    if code < 0:
        return 0, False
    if code > 2 * theta:
        a = code - theta
        q = a if qlo < qhi else -a
    elif code % 2 == 0:
        q = code // 2
        if odd:
            q = -q
    else:
        q = (code + 1) // 2
        if not odd:
            q = -q
    return q, -qlo <= q <= qhi


@_jit
def encode_index(q, signed, theta, odd, qlo, qhi):
    """The coded value of q: its mapped index, or (``signed``) q wrapped into the window."""
    if not signed:
        return map_index(q, theta, odd)
    n = qlo + qhi + 1
    h = n >> 1
    if q > n - 1 - h:
        return q - n
    if q < -h:
        return q + n
    return q


@_jit
def decode_index(code, signed, theta, odd, qlo, qhi):
    """Inverse of :func:`encode_index`; (q, ok) with ok False for an impossible code."""
    if not signed:
        return unmap_index(code, theta, odd, qlo, qhi)
    n = qlo + qhi + 1
    h = n >> 1
    if code < -h or code > n - 1 - h:
        return 0, False
    q = code
    if q > qhi:
        q -= n
    elif q < -qlo:
        q += n
    return q, True


@_jit
def code_line(z, y, src, codes, rec, dc, weights, ext4, n_ext, decode, signed, dbits, m, full,
              kind, p_bands, omega, register, nu_min, nu_max, t_inc, ext_init, cascade, res1,
              w2):
    """Predict, quantize and reconstruct band ``z`` of row ``y``.

    Encoding (``decode`` False) reads ``src`` and writes the coded values to ``codes``: the
    mapped quantizer indices, or with ``signed`` the quantizer indices wrapped into their
    window (:func:`encode_index`); decoding reads them from ``codes``. Both write the
    reconstructed samples to ``rec`` and the central local differences to ``dc`` (int32
    cubes). ``weights`` (int64, one row of ``3 + P`` per band, plus one for the external
    input's weight) holds the predictor state; it is initialised at the first sample of each
    band. ``ext4`` (int64, one value per column) is the external prediction in quarter
    units, used when ``n_ext`` is 1 (the band's rows may use it or not). With ``cascade``
    k > 0 the second stage runs with weight step ``2**-k``: ``res1`` (int32 cube) receives
    the first-stage residuals and ``w2`` (int64, ``C_INPUTS`` per band) holds its weights;
    with ``cascade`` 0 neither is touched (any arrays will do). Returns -1, or in decoding
    the column of the first impossible code.
    """
    bands, rows, cols = rec.shape
    s_max = (np.int64(1) << dbits) - 1
    s_mid = np.int64(1) << (dbits - 1)
    step = 2 * m + 1
    ndir = 3 if full else 0
    w_lo = -(np.int64(1) << (omega + 2))
    w_hi = (np.int64(1) << (omega + 2)) - 1
    half_r = np.int64(1) << (register - 1) if register < 64 else np.int64(0)
    mask_r = (np.int64(1) << register) - 1 if register < 64 else np.int64(-1)
    mid_hr = s_mid << (omega + 2)
    round_hr = np.int64(1) << (omega + 1)
    lo_hr = np.int64(0)
    hi_hr = (s_max << (omega + 2)) + round_hr
    pstar = min(z, p_bands)
    nwz = ndir + pstar
    wz = weights[z]
    slot = ndir + p_bands  # the external input's weight, when weights has room for it
    has_slot = wz.size > slot
    u = np.zeros(ndir + p_bands, np.int64)
    if y == 0:
        for i in range(ndir):
            wz[i] = 0
        w = (np.int64(7 * (8 - ext_init)) << omega) >> 6
        for i in range(pstar):
            wz[ndir + i] = w
            w >>= 3
        if has_slot:
            wz[slot] = (np.int64(ext_init) << omega) >> 3
        if cascade:
            for j in range(C_INPUTS):
                w2[z, j] = 0
    u_ext = np.int64(0)
    sh16 = omega - 2  # s_breve >> sh16: the prediction in 1/16 units
    c_lo = -(np.int64(1) << (C_BITS + 2))
    c_hi = (np.int64(1) << (C_BITS + 2)) - 1
    v2 = np.zeros(C_INPUTS, np.int64)
    for x in range(cols):
        t = y * cols + x
        if t == 0:
            s_tilde = 2 * rec[z - 1, 0, 0] if pstar > 0 else 2 * s_mid
            s_hat = s_tilde >> 1
            qlo = s_hat
            qhi = s_max - s_hat
            theta = min(qlo, qhi)
            if decode:
                q, ok = decode_index(codes[z, 0, 0], signed, theta, False, qlo, qhi)
                if not ok:
                    return 0
            else:
                q = np.int64(src[z, 0, 0]) - s_hat
                codes[z, 0, 0] = encode_index(q, signed, theta, False, qlo, qhi)
            rec[z, 0, 0] = s_hat + q
            if cascade:
                res1[z, 0, 0] = 0
            continue
        sigma = local_sum(rec, z, y, x, kind, s_mid)
        if full:
            if y > 0:
                n4 = 4 * rec[z, y - 1, x]
                u[0] = n4 - sigma
                if x > 0:
                    u[1] = 4 * rec[z, y, x - 1] - sigma
                    u[2] = 4 * rec[z, y - 1, x - 1] - sigma
                else:
                    u[1] = n4 - sigma
                    u[2] = n4 - sigma
            else:
                u[0] = 0
                u[1] = 0
                u[2] = 0
        for i in range(pstar):
            u[ndir + i] = dc[z - 1 - i, y, x]
        dhat = np.int64(0)
        for i in range(nwz):
            dhat += wz[i] * u[i]
        if n_ext:
            u_ext = ext4[x] - sigma
            dhat += wz[slot] * u_ext
        reg = dhat + (sigma - 4 * s_mid) * (np.int64(1) << omega)
        if register < 64:
            reg = ((reg + half_r) & mask_r) - half_r
        s_breve = reg + mid_hr + round_hr
        if s_breve < lo_hr:
            s_breve = lo_hr
        elif s_breve > hi_hr:
            s_breve = hi_hr
        s_tilde1 = s_breve >> (omega + 1)
        p16 = np.int64(0)
        if cascade:
            p16 = s_breve >> sh16
            for j in range(C_INPUTS):
                v2[j] = 0
            if x > 0:
                v2[1] = res1[z, y, x - 1]
                if x > 1:
                    v2[6] = res1[z, y, x - 2]
            if y > 0:
                v2[2] = res1[z, y - 1, x]
                if x + 1 < cols:
                    v2[3] = res1[z, y - 1, x + 1]
                if x > 0:
                    v2[4] = res1[z, y - 1, x - 1]
            if z > 0:
                v2[0] = res1[z - 1, y, x]
                if x + 1 < cols:
                    v2[7] = res1[z - 1, y, x + 1]
                if z > 1:
                    v2[5] = res1[z - 2, y, x]
                    if z > 2:
                        v2[8] = res1[z - 3, y, x]
            acc = np.int64(0)
            for j in range(C_INPUTS):
                acc += w2[z, j] * v2[j]
            s_breve += (acc >> C_BITS) << sh16
            if s_breve < lo_hr:
                s_breve = lo_hr
            elif s_breve > hi_hr:
                s_breve = hi_hr
        s_tilde = s_breve >> (omega + 1)
        s_hat = s_tilde >> 1
        odd = (s_tilde & 1) == 1
        qlo = (s_hat + m) // step
        qhi = (s_max - s_hat + m) // step
        theta = min(qlo, qhi)
        if decode:
            q, ok = decode_index(codes[z, y, x], signed, theta, odd, qlo, qhi)
            if not ok:
                return x
        else:
            diff = np.int64(src[z, y, x]) - s_hat
            # q = sgn(diff) floor((|diff| + m) / (2m + 1))
            q = (diff + m) // step if diff >= 0 else -((m - diff) // step)
            codes[z, y, x] = encode_index(q, signed, theta, odd, qlo, qhi)
        s_rec = s_hat + q * step
        if s_rec < 0:
            s_rec = np.int64(0)
        elif s_rec > s_max:
            s_rec = s_max
        rec[z, y, x] = s_rec
        dc[z, y, x] = 4 * s_rec - sigma
        if cascade:
            res1[z, y, x] = 16 * s_rec - p16
            f = 16 * s_rec - (s_breve >> sh16)
            if f != 0:
                for j in range(C_INPUTS):
                    v = v2[j] if f > 0 else -v2[j]
                    w = w2[z, j] + (v >> cascade if v >= 0 else -((-v) >> cascade))
                    if w < c_lo:
                        w = c_lo
                    elif w > c_hi:
                        w = c_hi
                    w2[z, j] = w
        # sign-algorithm weight update (with an external input: none after an exact hit)
        e = 2 * s_rec - s_tilde1
        if n_ext and e == 0:
            continue
        rho = nu_min + (t - cols) // t_inc
        if rho < nu_min:
            rho = nu_min
        elif rho > nu_max:
            rho = nu_max
        rho += dbits - omega
        for i in range(nwz + n_ext):
            k = i if i < nwz else slot
            ui = u[i] if i < nwz else u_ext
            v = ui if e >= 0 else -ui
            if rho >= 0:
                inc = (v + (np.int64(1) << rho)) >> (rho + 1)
            else:
                inc = (v * (np.int64(1) << (-rho)) + 1) >> 1
            w = wz[k] + inc
            if w < w_lo:
                w = w_lo
            elif w > w_hi:
                w = w_hi
            wz[k] = w
    return -1


# Every compiled caller of code_line lives in this module: numba's cache checks only the
# source file of the function it compiled, so a caller elsewhere could keep a stale copy.


@_jit
def code_rows(ext4, src, codes, rec, dc, weights, decode, signed, dbits, m, full, kind,
              p_bands, omega, register, nu_min, nu_max, t_inc, ext_init, cascade, res1, w2):
    """Rows ``y >= 1`` in BIL order with known external predictions ``ext4[z, y - 1]``.

    Returns -1, or in decoding the flat index of the first impossible code.
    """
    bands, rows, cols = rec.shape
    for y in range(1, rows):
        for z in range(bands):
            bad = code_line(z, y, src, codes, rec, dc, weights, ext4[z, y - 1], 1, decode,
                            signed, dbits, m, full, kind, p_bands, omega, register, nu_min,
                            nu_max, t_inc, ext_init, cascade, res1, w2)
            if bad >= 0:
                return (z * rows + y) * cols + bad
    return -1


@_jit
def code_cube(src, codes, rec, decode, signed, dbits, m, full, kind, p_bands, omega, register,
              nu_min, nu_max, t_inc, cascade):
    """The predictor over a whole cube, band by band (no external input); ``cascade`` as for
    :func:`code_line` (0: the standard predictor).

    Returns -1, or in decoding the flat index of the first impossible code.
    """
    bands, rows, cols = rec.shape
    dc = np.zeros(rec.shape, np.int32)
    weights = np.zeros((bands, (3 if full else 0) + p_bands), np.int64)
    ext4 = np.zeros(0, np.int64)
    res1 = np.zeros(rec.shape if cascade else (1, 1, 1), np.int32)
    w2 = np.zeros((bands, C_INPUTS), np.int64)
    for z in range(bands):
        for y in range(rows):
            bad = code_line(z, y, src, codes, rec, dc, weights, ext4, 0, decode, signed, dbits,
                            m, full, kind, p_bands, omega, register, nu_min, nu_max, t_inc, 0,
                            cascade, res1, w2)
            if bad >= 0:
                return (z * rows + y) * cols + bad
    return -1
