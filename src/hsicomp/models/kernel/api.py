"""Python API: packed weights, ``predict_cube`` (encoder side) and ``KernelStepper``
(decoder side)."""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from hsicomp.models.kernel.entry import (
    _band_job,
    _encode_band,
    _line_job,
    _line_steps,
    _predict_band0,
    _push,
)
from hsicomp.models.kernel.functions import exp32
from hsicomp.models.kernel.layers import _init_states
from hsicomp.models.kernel.layout import (
    _BANDS,
    _IX_MDEC,
    _IX_MENC,
    _IX_MSTACK,
    _IX_NBLOCKS,
    _IX_NDEC,
    _IX_NENC,
    _IX_SIZE,
    _IX_VDEC,
    _IX_VENC,
    _IX_VSTACK,
    _IX_WIDTH,
    _LINES,
    _NBUF,
    _NROWS,
    _NSTATE,
    _NTILE,
)
from hsicomp.models.kernel.vectors import _TILE, _VL
from hsicomp.models.linerwkv import LineRWKV, LineRWKVConfig

#: Column padding: feature rows hold whole tiles (and stay 64-byte aligned).
_ALIGN = _TILE


def _padded(n_cols: int) -> int:
    return -(-n_cols // _ALIGN) * _ALIGN


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous float32 array whose data starts on a 64-byte boundary."""
    size = math.prod(shape)
    raw = np.empty(size + _ALIGN, dtype=np.float32)
    start = (-raw.ctypes.data // 4) % _ALIGN
    return raw[start : start + size].reshape(shape)


def _state_array(n_blocks: int, width: int, n_cols: int, *batch: int) -> np.ndarray:
    """Recurrent states of a stack, ``(*batch, n_blocks, n_cols / _TILE, _NSTATE, F, _TILE)``."""
    return _aligned_empty((*batch, n_blocks, n_cols // _TILE, _NSTATE, width, _TILE))


def _numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _count(state: Mapping[str, object], prefix: str, suffix: str) -> int:
    n = 0
    while f"{prefix}{n}{suffix}" in state:
        n += 1
    return n


@dataclass(frozen=True, eq=False)
class KernelWeights:
    """LineRWKV weights packed for the kernel: contiguous float32 arrays.

    ``mats`` (M, F, F) holds every F x F matrix (encoder convolution taps, decoder layers,
    block projections); ``vecs`` (V, F) every vector (biases, LayerNorm parameters, token-shift
    mixes, ``exp(time_decay)`` computed with this package's exp, ``time_first``); ``index``
    locates the parts. Build with :meth:`from_model` or :meth:`from_state_dict`.
    """

    config: LineRWKVConfig
    mats: np.ndarray
    vecs: np.ndarray
    index: np.ndarray

    @classmethod
    def from_model(cls, model: LineRWKV) -> KernelWeights:
        """Pack the weights of a torch model."""
        return cls.from_state_dict(model.state_dict())

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor | np.ndarray]) -> KernelWeights:
        """Pack a LineRWKV state dict (sizes read from its keys); values are cast to float32."""

        def get(key: str) -> np.ndarray:
            return _numpy(state[key]).astype(np.float32)

        width = get("encoder.conv_in.weight").shape[0]
        if width % 4:
            raise ValueError(f"the kernel needs a width that is a multiple of 4, got {width}")
        config = LineRWKVConfig(
            width=width,
            n_enc=1 + _count(state, "encoder.convs.", ".weight"),
            n_lines=_count(state, "blocks_lines.", ".ln1.weight"),
            n_bands=_count(state, "blocks_bands.", ".ln1.weight"),
            n_dec=1 + _count(state, "decoder.convs.", ".weight"),
        )
        mats: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        index = np.zeros(_IX_SIZE, dtype=np.int64)
        index[_IX_WIDTH], index[_IX_NENC], index[_IX_NDEC] = width, config.n_enc, config.n_dec
        index[_IX_NBLOCKS + _LINES] = config.n_lines
        index[_IX_NBLOCKS + _BANDS] = config.n_bands

        def scalar_row(value: np.ndarray) -> np.ndarray:
            return np.full(width, value.reshape(()), dtype=np.float32)

        # Encoder: conv_in taps, then per layer (conv bias, LayerNorm weight and bias) and the
        # taps of the F x F convolutions.
        index[_IX_MENC], index[_IX_VENC] = len(mats), len(vecs)
        conv_in = get("encoder.conv_in.weight")[:, 0, :]  # (F, 3)
        vecs += [conv_in[:, 0], conv_in[:, 1], conv_in[:, 2]]
        for layer in range(config.n_enc):
            conv = "encoder.conv_in" if layer == 0 else f"encoder.convs.{layer - 1}"
            norm = "encoder.norm_in" if layer == 0 else f"encoder.norms.{layer - 1}"
            vecs += [get(f"{conv}.bias"), get(f"{norm}.weight"), get(f"{norm}.bias")]
            if layer > 0:
                weight = get(f"{conv}.weight")  # (F, F, 3)
                mats += [weight[:, :, tap] for tap in range(3)]
        # Decoder: per hidden layer (bias, LayerNorm), then output and band-0 projections.
        index[_IX_MDEC], index[_IX_VDEC] = len(mats), len(vecs)
        for layer in range(config.n_dec - 1):
            mats.append(get(f"decoder.convs.{layer}.weight")[:, :, 0])
            vecs += [
                get(f"decoder.convs.{layer}.bias"),
                get(f"decoder.norms.{layer}.weight"),
                get(f"decoder.norms.{layer}.bias"),
            ]
        vecs += [
            get("decoder.conv_out.weight")[0, :, 0],
            scalar_row(get("decoder.conv_out.bias")),
            get("bandzerodec.conv_out.weight")[0, :, 0],
            scalar_row(get("bandzerodec.conv_out.bias")),
        ]
        # Block stacks: ln0, then per block 11 vectors and 7 matrices.
        for stack, name, n_blocks in ((_LINES, "blocks_lines", config.n_lines),
                                      (_BANDS, "blocks_bands", config.n_bands)):
            index[_IX_MSTACK + stack], index[_IX_VSTACK + stack] = len(mats), len(vecs)
            vecs += [get(f"{name}.0.ln0.weight"), get(f"{name}.0.ln0.bias")]
            for blk in range(n_blocks):
                p = f"{name}.{blk}."
                decay = exp32(get(p + "att.time_decay"))
                vecs += [
                    get(p + "ln1.weight"), get(p + "ln1.bias"),
                    get(p + "ln2.weight"), get(p + "ln2.bias"),
                    get(p + "att.time_mix_k").reshape(width),
                    get(p + "att.time_mix_v").reshape(width),
                    get(p + "att.time_mix_r").reshape(width),
                    decay,
                    get(p + "att.time_first"),
                    get(p + "ffn.time_mix_k").reshape(width),
                    get(p + "ffn.time_mix_r").reshape(width),
                ]
                mats += [
                    get(p + "att.key.weight"), get(p + "att.value.weight"),
                    get(p + "att.receptance.weight"), get(p + "att.output.weight"),
                    get(p + "ffn.key.weight"), get(p + "ffn.receptance.weight"),
                    get(p + "ffn.value.weight"),
                ]
        mats_arr = np.ascontiguousarray(np.stack(mats), dtype=np.float32)
        vecs_arr = np.ascontiguousarray(np.stack(vecs), dtype=np.float32)
        return cls(config, mats_arr, vecs_arr, index)

    @property
    def width(self) -> int:
        """Feature width F."""
        return self.config.width

    def _args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.mats, self.vecs, self.index


def _check_cube(xn: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(xn, dtype=np.float32)
    if x.ndim != 3 or min(x.shape) < 1 or x.shape[1] < 2:
        raise ValueError("xn must have shape (I, T, C) with T >= 2")
    return x


def default_threads() -> int:
    """Worker threads used by default: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


class _Scratch:
    """Work buffers of one thread for feature arrays of ``n_cols`` columns."""

    def __init__(self, weights: KernelWeights, n_cols: int) -> None:
        width = weights.width
        self.buf = _aligned_empty((_NBUF, width, n_cols + 2 * _VL))
        self.buf[:] = 0.0  # the margins stay zero
        self.rows = _aligned_empty((_NROWS, n_cols + 2 * _VL))
        self.rows[:] = 0.0
        self.tiles = _aligned_empty((_NTILE, width, _TILE))
        self.band_states = _state_array(weights.config.n_bands, width, n_cols)


def predict_cube(
    weights: KernelWeights,
    xn: np.ndarray,
    threads: int | None = None,
    chunk_bytes: int = 128 << 20,
) -> np.ndarray:
    """All predictions of a known normalised cube ``(I, T, C)`` -> ``(I, T-1, C)`` float32.

    Entry ``[i, t]`` predicts ``xn[i, t + 1]``, bit-identical to :class:`KernelStepper`. The
    line predictor runs band by band and the spectral predictor line by line, on ``threads``
    threads (default :func:`default_threads`), over chunks of lines whose intermediate features
    take about ``chunk_bytes`` (two chunks at a time: the spectral predictor on one while the
    line predictor computes the next). Neither setting changes the result.
    """
    x = _check_cube(xn)
    n_bands, n_lines, n_valid = x.shape
    width, n_cols = weights.width, _padded(n_valid)
    args = weights._args()
    threads = max(1, threads or default_threads())
    pred = np.empty((n_bands, n_lines - 1, n_valid), dtype=np.float32)
    states = _state_array(weights.config.n_lines, width, n_cols, n_bands)
    per_line = 2 * n_bands * width * n_cols * 4
    chunk = min(n_lines - 1, max(threads, chunk_bytes // (2 * per_line) // threads * threads))
    # Features and innovations of a chunk: (band, chunk line, F, cols), two sets in turn.
    buffers = [(_aligned_empty((n_bands, chunk + 1, width, n_cols)),
                _aligned_empty((n_bands, chunk, width, n_cols))) for _ in range(2)]
    chunks = [(t0, min(t0 + chunk, n_lines - 1)) for t0 in range(0, n_lines - 1, chunk)]
    local = threading.local()

    def scratch() -> _Scratch:
        if not hasattr(local, "scratch"):
            local.scratch = _Scratch(weights, n_cols)
        return local.scratch

    def start_band(i: int) -> None:
        work = scratch()
        xs, innov = buffers[0]
        _init_states(states[i])
        _encode_band(*args, x[i, 0], xs[i, 0], xs[i, 0], innov[i, 0], states[i], work.buf,
                     work.rows, work.tiles, 0)

    def band_job(k: int, i: int) -> None:
        work = scratch()
        t0, t1 = chunks[k]
        xs, innov = buffers[k % 2]
        if k > 0:  # features of line t0, encoded by the previous (whole) chunk
            xs[i, 0] = buffers[(k - 1) % 2][0][i, chunk]
        _band_job(*args, x[i], t0, xs[i, : t1 - t0 + 1], states[i], innov[i], pred[0], i == 0,
                  i == n_bands - 1, work.buf, work.rows, work.tiles)

    def line_job(k: int, t: int) -> None:
        work = scratch()
        xs, innov = buffers[k % 2]
        _line_job(*args, xs, innov, t - chunks[k][0], pred, t, work.band_states, work.rows,
                  work.tiles)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(start_band, i) for i in range(n_bands)]:
            future.result()
        # Step k: the spectral predictor on chunk k - 1 (longer jobs first) and the line
        # predictor on chunk k, which only needs the line predictor's states and features.
        for k in range(len(chunks) + 1):
            jobs = []
            if k > 0 and n_bands > 1:
                jobs += [pool.submit(line_job, k - 1, t) for t in range(*chunks[k - 1])]
            if k < len(chunks):
                jobs += [pool.submit(band_job, k, i) for i in range(n_bands)]
            for future in jobs:
                future.result()
    return pred


def _serve(jobs: queue.SimpleQueue, errors: list[BaseException], done: list[int]) -> None:
    """Run queued calls ``(fn, *args)`` in order, counting them in ``done[0]``; set queued
    events; stop at ``None``."""
    while (job := jobs.get()) is not None:
        if isinstance(job, threading.Event):
            job.set()
            continue
        try:
            job[0](*job[1:])
        except BaseException as error:  # re-raised by the next flush
            errors.append(error)
        done[0] += 1


class _Worker:
    """One background thread running submitted calls in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        self._submitted = 0
        self._done = [0]
        threading.Thread(target=_serve, args=(self._jobs, self._errors, self._done),
                         daemon=True).start()

    @property
    def idle(self) -> bool:
        """Whether every submitted call has run (a call submitted by another thread aside)."""
        return self._done[0] == self._submitted

    def submit(self, *job) -> None:
        """Queue the call ``job[0](*job[1:])``."""
        self._submitted += 1
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every submitted call has run; re-raise the first error."""
        done = threading.Event()
        self._jobs.put(done)
        done.wait()
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            raise error

    def __del__(self) -> None:
        self._jobs.put(None)


class KernelStepper:
    """Band-by-band predictions, as a decoder computes them; bit-identical to ``predict_cube``.

    Values are normalised floats of one image with ``C`` columns. Usage::

        stepper = KernelStepper(weights)
        stepper.start(x[:, 0, :])                # line 0 of all bands: (I, C)
        for t in range(1, T):
            stepper.begin_line()
            for i in range(I):
                p = stepper.predict_band(i)      # (C,), needs bands 0..i-1 of line t
                stepper.push_band(i, x[i, t, :])

    ``push_band`` encodes the band's line, advances the spectral predictor and computes the
    prediction of band ``i + 1`` in one compiled call (``predict_band`` then only copies it).
    The line predictor (for the next line) is advanced on the encoded lines meanwhile by a
    second thread (``threaded=True``, the default), which takes every band pushed since its
    last job whenever it is idle, or at once; ``begin_line`` waits for it.
    """

    def __init__(self, weights: KernelWeights, threaded: bool = True) -> None:
        self.weights = weights
        self.n_bands = 0
        self.n_valid = 0
        self.next_band = 0
        self.lines_done = 0
        self._open = False
        self._args = weights._args()
        self._worker = _Worker() if threaded else None

    def start(self, first_line: np.ndarray) -> None:
        """Reset and take line 0 of all bands, ``(I, C)``; line 0 is not predicted."""
        line = np.ascontiguousarray(first_line, dtype=np.float32)
        if line.ndim != 2 or min(line.shape) < 1:
            raise ValueError("first_line must have shape (I, C)")
        if self._worker is not None:
            self._worker.flush()
        n_bands, n_valid = line.shape
        width, n_cols = self.weights.width, _padded(n_valid)
        self.n_bands, self.n_valid = n_bands, n_valid
        self._xs = _aligned_empty((n_bands, width, n_cols))
        self._xs_next = _aligned_empty((n_bands, width, n_cols))
        self._line_states = _state_array(self.weights.config.n_lines, width, n_cols, n_bands)
        self._spec = _aligned_empty((width, n_cols))
        self._main = _Scratch(self.weights, n_cols)
        self._side = _Scratch(self.weights, n_cols)
        self._pred = np.empty(n_valid, dtype=np.float32)  # the next band's prediction
        self._prev0 = line[0].copy()
        self._new0 = np.empty(n_valid, dtype=np.float32)
        self._sent = 0  # bands before it are (being) advanced by the line predictor
        work = self._main
        for i in range(n_bands):
            _init_states(self._line_states[i])
            _encode_band(*self._args, line[i], self._xs_next[i], self._xs[i], self._spec,
                         work.band_states, work.buf, work.rows, work.tiles, 0)
            self._line_steps(i + 1)
        self.lines_done = 1
        self.next_band = 0
        self._open = False

    def _line_steps(self, stop: int) -> None:
        """Advance the line predictor of the bands pushed up to ``stop`` on their encoded lines
        (in ``_xs_next``, in place): at once when unthreaded, else as one job of the worker if
        it is idle or ``stop`` is the last band (otherwise at a later push)."""
        if self._worker is not None and not (stop == self.n_bands or self._worker.idle):
            return
        job = (_line_steps, *self._args, self._xs_next, self._line_states, self._sent, stop,
               self._side.tiles)
        self._sent = stop
        if self._worker is not None:
            self._worker.submit(*job)
        else:
            job[0](*job[1:])

    def begin_line(self) -> None:
        """Open the next line (its line-predictor features were computed while pushing)."""
        if self.lines_done == 0 or self._open:
            raise RuntimeError("begin_line needs start() or a completely pushed line")
        if self._worker is not None:
            self._worker.flush()
        self._sent = 0
        self._xs, self._xs_next = self._xs_next, self._xs
        _init_states(self._main.band_states)
        _predict_band0(self._args[1], self._args[2], self._xs[0], self._prev0, self._pred,
                       self._main.rows)
        self.next_band = 0
        self._open = True

    def _check_band(self, band: int) -> None:
        if not self._open:
            raise RuntimeError("call begin_line() first")
        if band != self.next_band:
            raise RuntimeError(f"band {band} requested, band {self.next_band} expected")

    def predict_band(self, band: int, out: np.ndarray | None = None) -> np.ndarray:
        """Prediction ``(C,)`` of ``band`` on the open line; bands before it must be pushed.

        ``out``, if given, is a contiguous float32 array ``(C,)`` that receives it.
        """
        self._check_band(band)
        if out is None:
            return self._pred.copy()
        if out.dtype != np.float32 or out.shape != (self.n_valid,) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous float32 array of shape ({self.n_valid},)")
        out[:] = self._pred
        return out

    def push_band(self, band: int, values: np.ndarray) -> None:
        """Give the true (normalised) values ``(C,)`` of ``band`` on the open line."""
        self._check_band(band)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (self.n_valid,):
            raise ValueError(f"values must have shape ({self.n_valid},)")
        work = self._main
        _push(*self._args, values, self._xs_next[band], self._xs, band, self._spec,
              work.band_states, self._pred, work.buf, work.rows, work.tiles)
        self._line_steps(band + 1)
        if band == 0:
            self._new0[:] = values
        self.next_band += 1
        if self.next_band == self.n_bands:
            self._prev0, self._new0 = self._new0, self._prev0
            self.lines_done += 1
            self._open = False


def predict_stepwise(weights: KernelWeights, xn: np.ndarray, threaded: bool = True) -> np.ndarray:
    """Predictions of a known cube ``(I, T, C)`` through :class:`KernelStepper`."""
    x = _check_cube(xn)
    n_bands, n_lines, n_valid = x.shape
    pred = np.empty((n_bands, n_lines - 1, n_valid), dtype=np.float32)
    stepper = KernelStepper(weights, threaded=threaded)
    stepper.start(x[:, 0])
    for t in range(1, n_lines):
        stepper.begin_line()
        for i in range(n_bands):
            stepper.predict_band(i, pred[i, t - 1])
            stepper.push_band(i, x[i, t])
    return pred
