"""Option values the commands share: JSON objects given on the command line."""

from __future__ import annotations

import json
from typing import Any

from hsicomp.errors import HsicompError


def json_object(text: str, option: str, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object given as ``option`` (e.g. ``--params``); HsicompError naming the
    option when ``text`` is not valid JSON or not ``expected``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HsicompError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HsicompError(f"{option} must be {expected}")
    return value
