"""Deterministic synthetic hyperspectral cubes that look like EnMAP L2A reflectance.

The scene model is a linear mixture of smooth endmember reflectance spectra with
spatially correlated abundances, a smooth illumination field, a small additive
path-radiance-like term, residual atmospheric absorption that varies across the scene,
and signal-dependent sensor noise. Values are reflectance x 10000 stored as uint16.
"""

from __future__ import annotations

import numpy as np

from hsicomp.io.bands import ENMAP_202, ENMAP_BANDS

# EnMAP band centres as four detector segments (start nm, stop nm, band count, bend nm):
# the VNIR detector and three SWIR segments separated by the deep water-vapour gaps.
# Inside a segment the centre is start + (stop - start) * t + bend * t * (1 - t), t in [0, 1].
_ENMAP_SEGMENTS = (
    (418.2, 993.1, 91, -197.0),
    (902.3, 1390.8, 44, -49.0),
    (1461.5, 1759.8, 28, 17.0),
    (1939.4, 2445.5, 61, 63.0),
)

# Side (pixels) of the smallest canvas the spatial fields are drawn on.
_CANVAS = 128
# Typical size (pixels) of sharp-edged parcels such as fields and water bodies.
_PARCEL = 26

# Atmospheric absorption bands left as residuals in surface reflectance (centre, width nm,
# depth): O2 at 760 nm, water vapour around 820/940/1130/1380/1870 nm, CO2 near 2010/2060 nm.
_ATMOSPHERE = (
    (762.0, 4.0, 0.8),
    (822.0, 12.0, 0.15),
    (940.0, 25.0, 0.6),
    (1135.0, 35.0, 0.55),
    (1380.0, 60.0, 0.95),
    (1870.0, 90.0, 0.95),
    (2010.0, 12.0, 0.35),
    (2060.0, 12.0, 0.3),
)


def _enmap224() -> np.ndarray:
    """Centre wavelengths (nm) of all 224 EnMAP bands, VNIR first then SWIR."""
    parts = []
    for start, stop, n, bend in _ENMAP_SEGMENTS:
        t = np.linspace(0.0, 1.0, n)
        parts.append(start + (stop - start) * t + bend * t * (1.0 - t))
    wl = np.concatenate(parts)
    assert wl.size == ENMAP_BANDS
    return wl


def enmap_wavelengths(bands: int = 202) -> np.ndarray:
    """Centre wavelengths (nm) for ``bands`` bands.

    For 202 bands these are the EnMAP bands kept after dropping the water-vapour bands,
    in sensor order (VNIR 418-993 nm, then SWIR 902-2446 nm). Any other band count is
    spread evenly over 400-2500 nm.
    """
    if bands < 1:
        raise ValueError(f"bands must be positive, got {bands}")
    if bands == len(ENMAP_202):
        return _enmap224()[list(ENMAP_202)]
    return np.linspace(400.0, 2500.0, bands)


def _gauss(wl: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _leaf_water(wl: np.ndarray, depth: float) -> np.ndarray:
    """Multiplicative liquid-water absorption of leaves and moist surfaces."""
    dips = (
        0.08 * _gauss(wl, 975.0, 35.0)
        + 0.2 * _gauss(wl, 1200.0, 50.0)
        + 0.6 * _gauss(wl, 1450.0, 80.0)
        + 0.75 * _gauss(wl, 1940.0, 110.0)
        + 0.3 * _sigmoid((wl - 2350.0) / 60.0)
    )
    return 1.0 - depth * dips


def _vegetation(wl: np.ndarray, rng: np.random.Generator, vigour: float) -> np.ndarray:
    edge = rng.uniform(712.0, 728.0)
    nir = rng.uniform(0.36, 0.5) * vigour + (1.0 - vigour) * 0.3
    visible = 0.022 + 0.05 * _gauss(wl, 555.0, 35.0) * vigour + (1.0 - vigour) * 0.07
    visible = visible * (1.0 - 0.5 * vigour * _gauss(wl, 675.0, 25.0))
    red_edge = _sigmoid((wl - edge) / 14.0)
    # Leaf water pulls SWIR reflectance well below the NIR plateau; less so for dry plants.
    wet = 0.4 + 0.6 * vigour
    envelope = 1.0 - wet * (
        0.45 * _sigmoid((wl - 1350.0) / 80.0) + 0.3 * _sigmoid((wl - 1850.0) / 60.0)
    )
    spectrum = (visible + (nir * envelope - visible) * red_edge) * _leaf_water(wl, wet)
    # Cellulose / lignin feature, visible on dry plant matter.
    return spectrum * (1.0 - 0.15 * (1.0 - vigour) * _gauss(wl, 2100.0, 40.0))


def _soil(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bright = rng.uniform(0.22, 0.36)
    iron = rng.uniform(0.0, 0.3)
    rise = 1.0 - np.exp(-np.maximum(wl - 400.0, 0.0) / 600.0)
    base = 0.03 + bright * rise - 0.05 * _sigmoid((wl - 1900.0) / 200.0)
    base *= 1.0 - iron * _gauss(wl, 880.0, 90.0)
    base *= 1.0 - 0.4 * iron * _gauss(wl, 480.0, 60.0)
    clay = 1.0 - rng.uniform(0.05, 0.15) * _gauss(wl, 2205.0, 25.0)
    return base * clay * _leaf_water(wl, rng.uniform(0.1, 0.3))


def _water(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    turbid = rng.uniform(0.0, 0.025)
    blue = 0.03 * _gauss(wl, 470.0, 80.0) + (0.015 + turbid) * _gauss(wl, 560.0, 50.0)
    return blue + turbid * _gauss(wl, 700.0, 40.0) + 0.004 * np.exp(-(wl - 400.0) / 600.0)


def _concrete(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(0.15, 0.28)
    shape = 0.75 + 0.3 * _sigmoid((wl - 600.0) / 150.0) - 0.1 * _sigmoid((wl - 2000.0) / 150.0)
    carbonate = 1.0 - 0.1 * _gauss(wl, 2330.0, 35.0)
    return level * shape * carbonate * _leaf_water(wl, 0.1)


def _asphalt(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(0.06, 0.11)
    hydrocarbon = 1.0 - 0.08 * _gauss(wl, 1730.0, 30.0) - 0.08 * _gauss(wl, 2310.0, 40.0)
    return level * (0.7 + 0.6 * (wl - 400.0) / 2100.0) * hydrocarbon


def _roof_tile(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(0.18, 0.3)
    red = 0.05 + level * _sigmoid((wl - 590.0) / 25.0)
    return red * (1.0 - 0.25 * _gauss(wl, 900.0, 100.0)) * _leaf_water(wl, 0.15)


def _endmembers(wl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random set of 4-8 smooth reflectance spectra, shape (K, bands)."""
    library = [
        lambda: _vegetation(wl, rng, rng.uniform(0.85, 1.0)),
        lambda: _soil(wl, rng),
        lambda: _water(wl, rng),
        lambda: _concrete(wl, rng),
        lambda: _vegetation(wl, rng, rng.uniform(0.5, 0.8)),
        lambda: _asphalt(wl, rng),
        lambda: _roof_tile(wl, rng),
        lambda: _vegetation(wl, rng, rng.uniform(0.1, 0.4)),
        lambda: _soil(wl, rng),
    ]
    count = int(rng.integers(4, 9))
    # Vegetation, soil and water always take part; the rest are drawn at random.
    extra = rng.permutation(np.arange(3, len(library)))[: count - 3]
    chosen = [0, 1, 2, *sorted(int(i) for i in extra)]
    spectra = np.stack([library[i]() for i in chosen])
    return np.clip(spectra, 0.002, 0.95)


def _random_field(rng: np.random.Generator, rows: int, cols: int, slope: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with a power-law spectrum k**-slope."""
    white = rng.standard_normal((rows, cols))
    ky = np.fft.fftfreq(rows)[:, None]
    kx = np.fft.rfftfreq(cols)[None, :]
    k = np.sqrt(kx * kx + ky * ky)
    k[0, 0] = 1.0
    amp = k ** (-slope / 2.0)
    amp[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(rows, cols))
    std = field.std()
    return field / std if std > 0 else field


def _parcels(rng: np.random.Generator, rows: int, cols: int, k: int) -> np.ndarray:
    """Sharp-edged patches: a Voronoi partition where each cell favours one endmember.

    Cell centres are jittered points of a grid with a pitch of _PARCEL pixels, so each
    pixel's nearest centre lies in one of the 3 x 3 surrounding grid cells. Returns a
    (k, rows, cols) array with 1 where the cell's endmember is favoured.
    """
    gh, gw = rows // _PARCEL + 1, cols // _PARCEL + 1
    centre_y = (np.arange(gh)[:, None] + rng.random((gh, gw))) * _PARCEL
    centre_x = (np.arange(gw)[None, :] + rng.random((gh, gw))) * _PARCEL
    owner = rng.integers(0, k, (gh, gw))
    # Some cells get no favoured endmember and keep the smooth mixture.
    owner[rng.random((gh, gw)) < 0.3] = -1
    yy, xx = np.mgrid[0:rows, 0:cols]
    best = np.full((rows, cols), np.inf)
    label = np.full((rows, cols), -1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            gy = np.clip(yy // _PARCEL + dy, 0, gh - 1)
            gx = np.clip(xx // _PARCEL + dx, 0, gw - 1)
            dist = (yy - centre_y[gy, gx]) ** 2 + (xx - centre_x[gy, gx]) ** 2
            closer = dist < best
            best = np.where(closer, dist, best)
            label = np.where(closer, owner[gy, gx], label)
    return (label[None] == np.arange(k)[:, None, None]).astype(np.float64)


def _atmosphere(wl: np.ndarray) -> np.ndarray:
    """Absorption depth (0 = clear, 1 = opaque) per band."""
    depth = np.zeros_like(wl)
    for centre, width, strength in _ATMOSPHERE:
        depth = np.maximum(depth, strength * _gauss(wl, centre, width))
    return depth


def _noise_scale(wl: np.ndarray) -> np.ndarray:
    """Relative noise level per band.

    The silicon VNIR detector loses sensitivity towards 1000 nm; the SWIR detector is
    quiet near 1000-1700 nm and noisier towards 2500 nm; absorption bands are noisier too.
    """
    # In sensor order the SWIR detector starts where the wavelengths step back.
    steps_back = np.flatnonzero(np.diff(wl) < 0)
    vnir = np.arange(wl.size) <= steps_back[0] if steps_back.size else wl < 950.0
    level = np.where(
        vnir,
        1.0 + 2.0 * _sigmoid((wl - 870.0) / 40.0),
        0.6 + 0.7 * _sigmoid((wl - 1900.0) / 150.0),
    )
    ends = 1.0 + 1.5 * np.exp(-(wl - 400.0) / 25.0) + 2.5 * np.exp((wl - 2460.0) / 60.0)
    return level * ends * (1.0 + 2.0 * _atmosphere(wl))


def generate_cube(
    seed: int, bands: int = 202, rows: int = 128, cols: int = 128, bit_depth: int = 14
) -> np.ndarray:
    """Generate a deterministic synthetic reflectance cube, uint16 of shape (bands, rows, cols).

    Values are surface reflectance x 10000, clipped to ``[0, 2**bit_depth - 1]``. The same
    arguments always give the same bytes; different seeds give different scenes.
    """
    if min(bands, rows, cols) < 1:
        raise ValueError(f"shape must be positive, got {(bands, rows, cols)}")
    if not 1 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be in 1..16, got {bit_depth}")
    rng = np.random.default_rng(seed)
    wl = enmap_wavelengths(bands)
    spectra = _endmembers(wl, rng)
    k = spectra.shape[0]

    # Spatial fields are drawn on a canvas of at least _CANVAS x _CANVAS pixels and cropped,
    # so a small cube looks like a crop of a scene rather than a shrunken scene.
    h, w = max(rows, _CANVAS), max(cols, _CANVAS)

    # Abundances: smooth random logits, sharpened by parcel boundaries, softmax over k.
    logits = np.stack([_random_field(rng, h, w, rng.uniform(2.2, 3.0)) for _ in range(k)])
    logits *= rng.uniform(1.5, 2.5)
    logits += rng.uniform(-1.0, 1.0, (k, 1, 1))
    logits[0] += 1.2  # green vegetation is the most common land cover
    logits += 3.0 * _parcels(rng, h, w, k)
    logits = logits[:, :rows, :cols]
    logits -= logits.max(axis=0, keepdims=True)
    abundance = np.exp(logits)
    abundance /= abundance.sum(axis=0, keepdims=True)
    # Within-class brightness variation (e.g. canopy density, surface roughness).
    texture = np.stack([_random_field(rng, h, w, 2.4)[:rows, :cols] for _ in range(k)])
    abundance *= 1.0 + 0.08 * texture

    # The big (bands, rows, cols) arrays are float32 to save time and memory.
    reflectance = np.tensordot(spectra.T.astype(np.float32), abundance.astype(np.float32), 1)

    # Illumination / topography: smooth multiplicative field around 1.
    illumination = 1.0 + 0.05 * _random_field(rng, h, w, 3.0)[:rows, :cols]
    reflectance *= illumination[None].astype(np.float32)

    # Residual atmospheric absorption varying with a smooth water-vapour field, plus a
    # Rayleigh-like additive path term.
    depth = _atmosphere(wl)[:, None, None]
    vapour = _random_field(rng, h, w, 2.0)[None, :rows, :cols]
    reflectance *= (1.0 + depth * (rng.uniform(-0.08, 0.08) + 0.06 * vapour)).astype(np.float32)
    path = rng.uniform(0.0, 0.005) * (450.0 / wl) ** 4
    reflectance += path[:, None, None].astype(np.float32)

    signal = np.maximum(reflectance * np.float32(10000.0), np.float32(0.0))
    # Signal-dependent noise: variance a + b * signal, scaled per band.
    sigma = np.sqrt(np.float32(8.0) + np.float32(0.03) * signal)
    sigma *= _noise_scale(wl)[:, None, None].astype(np.float32)
    signal += sigma * rng.standard_normal(signal.shape, dtype=np.float32)

    top = 2**bit_depth - 1
    return np.clip(np.rint(signal), 0, top).astype(np.uint16)
