"""Values for JSON columns: explanations carry numpy scalars, NaN and infinities."""

from __future__ import annotations

import math


def json_safe(value: object) -> object:
    """``value`` with NaN/inf as None, numpy scalars as floats, tuples as lists, dict keys
    as strings and anything else that is not a number as its ``str``.

    >>> json_safe({"a": float("nan"), 1: (2, float("inf")), "b": {"c": True}})
    {'a': None, '1': [2, None], 'b': {'c': True}}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(float(value)) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def json_safe_object(value: object) -> dict[str, object] | None:
    """:func:`json_safe` for a column that holds an object: a non-dict is wrapped as
    ``{"value": ...}``; None stays None."""
    if value is None:
        return None
    cleaned = json_safe(value)
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}
