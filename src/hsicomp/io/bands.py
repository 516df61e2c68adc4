"""Band lists: the EnMAP 224 -> 202 band selection and user-given band lists."""

from __future__ import annotations

from hsicomp.errors import HsicompError

ENMAP_BANDS = 224
#: 0-based EnMAP band indices dropped for water-vapour absorption (22 bands).
ENMAP_WATER_VAPOUR = tuple(range(126, 141)) + tuple(range(160, 167))
#: The 202 EnMAP bands kept by HySpecNet-11k and LineRWKV (0-based).
ENMAP_202 = tuple(b for b in range(ENMAP_BANDS) if b not in set(ENMAP_WATER_VAPOUR))


def resolve_band_list(spec: str | list | None, n_file_bands: int) -> list[int]:
    """Turn a band-list spec into sorted 0-based indices valid for a file with n bands.

    ``spec`` is ``"enmap202"``, ``"all"``/``None``, a list of ints, or a list of
    ``"a-b"`` inclusive range strings (0-based).
    """
    if spec is None or spec == "all":
        return list(range(n_file_bands))
    if spec == "enmap202":
        if n_file_bands != ENMAP_BANDS:
            raise HsicompError(
                f"band list 'enmap202' needs a {ENMAP_BANDS}-band EnMAP file, got {n_file_bands}"
            )
        return list(ENMAP_202)
    if isinstance(spec, str):
        spec = [part.strip() for part in spec.split(",") if part.strip()]
    out: list[int] = []
    for item in spec:
        if isinstance(item, int):
            out.append(item)
            continue
        text = str(item)
        try:
            if "-" in text:
                lo, hi = (int(v) for v in text.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(text))
        except ValueError:
            raise HsicompError(f"bad band list entry {text!r}: use ints or 'a-b' ranges") from None
    bad = [b for b in out if not 0 <= b < n_file_bands]
    if bad:
        raise HsicompError(f"band indices {bad[:5]} out of range for a {n_file_bands}-band file")
    if len(set(out)) != len(out):
        raise HsicompError("band list has repeated bands")
    return sorted(out)
