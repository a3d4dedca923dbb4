"""Values for JSON columns: explanations carry numpy scalars, NaN and infinities, and
PostgreSQL text holds no NUL character."""

from __future__ import annotations

import math
import re

#: an escaped NUL (``\u0000``) that is not an escaped backslash followed by ``u0000``
_ESCAPED_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def without_nul(value: bytes) -> bytes:
    r"""``value`` with every NUL character in its strings and keys made U+FFFD.

    PostgreSQL text cannot hold NUL: a field named ``a\u0000b`` made every write of its
    data set's windows fail, so its finalization stopped for good. Keys and values alike
    keep their place and their other characters. ``value``: JSON text, as bytes (ingest)
    or as a string (:func:`without_nul_text`, what the store writes).

    >>> without_nul(rb'{"a\u0000b": "x\u0000", "lit": "\\u0000"}')
    b'{"a\\ufffdb": "x\\ufffd", "lit": "\\\\u0000"}'
    """
    return _ESCAPED_NUL.sub(rb"\1\\ufffd", value)


def without_nul_text(value: str) -> str:
    r""":func:`without_nul` of JSON text held as a string.

    >>> without_nul_text(r'["a\u0000", "\\u0000"]')
    '["a\\ufffd", "\\\\u0000"]'
    """
    return without_nul(value.encode()).decode() if "\\u0000" in value else value


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
