"""The workflow's rates next to reference rates measured elsewhere (``compare-rates``).

A reference is a named table of bits per sample that another coder reached on the same
data, for example the rates the method's authors' own coder reaches with the same weights,
or those of a verified implementation of a standard. Its description (a workflow config
entry under ``references``, given to the command as JSON)::

    {"source": "where the numbers come from",
     "compare": ["linerwkv-arith"],                  # codec labels of rd_all.csv
     "rates": {"enmap-se": {"XS": {"0": 6.187}}},    # dataset -> model ("*": any) -> delta
     "not_decoded": {"enmap-se": {"S": [0]}}}        # optional: rates whose files did not
                                                     # decode to the data (marked, kept)

Every near-lossless/lossless row of rd_all.csv whose codec label is in ``compare`` and whose
dataset, model and delta have a reference rate gives one row of the comparison, with
``ratio = bpppc / reference_bpppc``.
"""

from __future__ import annotations

from typing import Any

from hsicomp.errors import HsicompError

COLUMNS = ["dataset", "codec", "model", "delta", "bpppc", "reference", "reference_bpppc",
           "ratio", "reference_decoded", "source"]


def _check(name: str, ref: Any) -> None:
    """One-line error unless ``ref`` is a reference description (module doc)."""
    where = f"reference {name!r}"
    if not isinstance(ref, dict) or not isinstance(ref.get("rates"), dict) \
            or not isinstance(ref.get("compare"), list):
        raise HsicompError(f"{where}: needs 'compare' (codec labels) and 'rates'")
    for dataset, models in ref["rates"].items():
        if not isinstance(models, dict):
            raise HsicompError(f"{where}: rates of {dataset!r} must map models to deltas")
        for model, rates in models.items():
            if not isinstance(rates, dict):
                raise HsicompError(f"{where}: rates of {dataset!r} {model!r} must map deltas "
                                   f"to bits per sample")
            for delta, value in rates.items():
                try:
                    ok = int(delta) >= 0 and float(value) > 0
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise HsicompError(f"{where}: bad rate {delta!r}: {value!r} for "
                                       f"{dataset!r} {model!r}")


def compare(rd_rows: list[dict], references: dict[str, Any]) -> list[dict]:
    """Rows of the comparison (COLUMNS) of ``read_rd`` rows with every reference."""
    out = []
    for name, ref in references.items():
        _check(name, ref)
        missing = ref.get("not_decoded", {})
        for row in rd_rows:
            if row["lossy"] or row["codec"] not in ref["compare"]:
                continue
            models = ref["rates"].get(row["dataset"], {})
            rates = models.get(row["model"], models.get("*", {}))
            value = {int(d): float(v) for d, v in rates.items()}.get(row["delta"])
            if value is None:
                continue
            failed = row["delta"] in missing.get(row["dataset"], {}).get(row["model"], [])
            out.append({"dataset": row["dataset"], "codec": row["codec"],
                        "model": row["model"], "delta": row["delta"], "bpppc": row["bpppc"],
                        "reference": name, "reference_bpppc": value,
                        "ratio": row["bpppc"] / value,
                        "reference_decoded": "false" if failed else "true",
                        "source": ref.get("source", "")})
    return out
