"""GDN transform codec with One-Hot-Max quantisation (``gdn-ohm``).

Same transforms and file layout as :mod:`hsicomp.codecs.gdn`, with a model trained with
One-Hot-Max quantisation (``hsicomp train-gdn`` with ``ohm_symbols``; see
:mod:`hsicomp.models.ohm`): every latent position sends one symbol in ``[0, S)`` per
channel, range-coded with the channel's frozen static pmf.

Adaptive rate: a model trained with ``ohm_min_channels`` sends only its first ``n``
channels; the parameter ``fraction`` (in ``[0, 1]``, default 1) picks
``n = n_min + ceil(fraction (C - n_min))``. A fixed-rate model always sends all ``C``.

Side information
    As gdn: ``u8`` layout version 1, 32 bytes model sha256, varints ``n``, ``h``, ``w``,
    the shape of the coded symbol array, whose first dimension is the number of channels
    sent (the decoder's rate setting).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hsicomp.codecs.base import RatePoints, Training, register
from hsicomp.codecs.gdn import GdnCodec
from hsicomp.errors import HsicompError


@register
class GdnOhmCodec(GdnCodec):
    """GDN codec with OHM quantisation; parameters ``model``, ``threads`` and ``fraction``."""

    name = "gdn-ohm"
    lossy = True
    defaults: ClassVar[dict[str, Any]] = {"model": "", "threads": 0, "fraction": 1.0}
    training = Training.PER_ENTRY
    #: One adaptive-rate model trained with the lambdas at the fewest and at all channels,
    #: evaluated at channel fractions in [0, 1].
    rate_points = RatePoints(key="fractions_eval", param="fraction", tag="f", min_lambdas=2,
                             max_lambdas=2,
                             train_defaults={"ohm_symbols": 32, "ohm_min_channels": 1})

    def check_model(self, model: Any, path: str) -> None:
        """HsicompError unless the model has One-Hot-Max quantisation."""
        if not model.config.ohm_symbols:
            raise HsicompError(f"{path}: model has no One-Hot-Max quantisation (use codec "
                               f"'{'gdn-gain' if model.gain_units is not None else 'gdn'}')")

    def encode_rate(self, model: Any) -> tuple[dict[str, Any], list[int]]:
        """The number of channels sent at parameter ``fraction``."""
        from hsicomp.models.ohm import channels_for_fraction

        c = model.config
        try:
            n = channels_for_fraction(float(self.params["fraction"]), c.ohm_fewest_channels,
                                      c.ohm_channel_count)
        except ValueError as exc:
            raise HsicompError(f"codec 'gdn-ohm': {exc}") from None
        return {"channels": n}, []

    def decode_rate(self, model: Any, shape: tuple[int, int, int], extra: list[int],
                    source: str) -> dict[str, Any]:
        """The number of channels of a file; HsicompError when the model cannot send it."""
        c = model.config
        if not c.ohm_fewest_channels <= shape[0] <= c.ohm_channel_count:
            raise HsicompError(f"{source}: corrupt header ({shape[0]} OHM channels; the model "
                               f"sends {c.ohm_fewest_channels}..{c.ohm_channel_count})")
        return {"channels": shape[0]}
