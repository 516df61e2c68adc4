"""GDN transform codec with gain units (``gdn-gain``): continuous rate from one model.

Same coding as :mod:`hsicomp.codecs.gdn`, with a model trained with gain units
(``hsicomp train-gdn`` with ``lambdas``, see :mod:`hsicomp.models.gain`). The parameter
``level`` (real, in ``[0, levels - 1]``) picks the rate: the latent is multiplied by the
gain vector of that level before rounding, and the decoded latent by the inverse gain
vector; both vectors come from :func:`hsicomp.models.gain.gain_vectors` with the level
recorded in the file, so encoder and decoder use identical vectors.

Side information
    As gdn (``u8`` layout version 1, 32 bytes model sha256, varints ``M``, ``h``, ``w``),
    then one more varint: the level as the fixed-point integer ``round(level * 65536)``
    (:data:`hsicomp.models.gain.LEVEL_SCALE`). Encoder and decoder both use that integer
    divided by 65536, so the level is recorded exactly (a given level is rounded to the
    nearest multiple of 1/65536 first). The decoder takes the level from the file.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hsicomp.codecs.base import RatePoints, Training, register
from hsicomp.codecs.gdn import GdnCodec
from hsicomp.errors import HsicompError


@register
class GdnGainCodec(GdnCodec):
    """GDN codec with gain units; parameters ``model``, ``threads`` and ``level``."""

    name = "gdn-gain"
    lossy = True
    defaults: ClassVar[dict[str, Any]] = {"model": "", "threads": 0, "level": 0.0}
    training = Training.PER_ENTRY
    #: One model with one gain level per lambda, evaluated at real levels in between.
    rate_points = RatePoints(key="levels_eval", param="level", tag="g", min_lambdas=2)
    side_ints: ClassVar[int] = 4

    def check_model(self, model: Any, path: str) -> None:
        """HsicompError unless the model has gain units."""
        if model.gain_units is None:
            raise HsicompError(f"{path}: model has no gain units (a plain gdn model; use "
                               f"codec 'gdn')")

    def encode_rate(self, model: Any) -> tuple[dict[str, Any], list[int]]:
        """The level (from the fixed-point code of parameter ``level``) and that code."""
        from hsicomp.models.gain import level_code, level_from_code

        levels = model.gain_units.levels
        try:
            code = level_code(float(self.params["level"]), levels)
        except ValueError as exc:
            raise HsicompError(f"codec 'gdn-gain': {exc} (model {self.params['model']} has "
                               f"{levels} levels)") from None
        return {"level": level_from_code(code)}, [code]

    def decode_rate(self, model: Any, shape: tuple[int, int, int], extra: list[int],
                    source: str) -> dict[str, Any]:
        """The level of the file; HsicompError when the model has no such level."""
        from hsicomp.models.gain import level_from_code

        level = level_from_code(extra[0])
        if level > model.gain_units.levels - 1:
            raise HsicompError(f"{source}: corrupt header (level {level:g}; the model has "
                               f"{model.gain_units.levels} levels)")
        return {"level": level}

    @classmethod
    def describe_extra(cls, extra: list[int]) -> list[tuple[str, str]]:
        """The recorded level."""
        from hsicomp.models.gain import level_from_code

        return [("level", f"{level_from_code(extra[0]):.10g} ({extra[0]}/65536)")]
