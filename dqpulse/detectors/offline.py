"""Offline scoring of one ``timestamp,value`` series, streaming with no look-ahead.

Backs ``dqpulse detect --csv file.csv [--metric-kind KIND] [--detector NAME]`` so the
detectors can be run on public benchmarks (NAB, Yahoo S5, ...): each row is scored before it
is learned, exactly as the service scores a window. Without ``--detector`` a series gets the
detector and params that the service gives a metric of its kind (:data:`KIND_METRICS`).
:func:`explain_csv` adds each row's explanation as the service stores it with a metric
point (``detect --explain``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from dqpulse.detectors.base import Explanation, create, decision_band, finite
from dqpulse.detectors.scoring import default_detector_for, default_params_for
from dqpulse.errors import ValidationError
from dqpulse.utc import epoch_divisor

__all__ = ["KIND_METRICS", "detect_csv", "detector_for_kind", "explain_csv", "parse_timestamp"]

#: The metric whose production defaults a series of each kind gets.
KIND_METRICS = {
    "volume": "volume.records",
    "ratio": "completeness.null_ratio",
    "distribution": "distribution.mean",
    "freshness": "freshness.seconds_since_last_record",
}
# A series of unknown meaning is a plain measurement: no count floor, no bounds, both sides.
DEFAULT_KIND = "distribution"


def detector_for_kind(kind: str = DEFAULT_KIND, detector: str | None = None,
                      **params: Any) -> tuple[str, dict[str, Any]]:
    """Detector name and params the service uses for a metric of ``kind``, with overrides.

    An explicit ``detector`` other than the kind's default starts from that detector's own
    defaults; ``params`` apply on top either way.

    >>> detector_for_kind("ratio")
    ('robust', {'side': 'up', 'binomial': True, 'repeat_margin': 0.2})
    >>> detector_for_kind("volume", "robust", z_threshold=8)
    ('robust', {'z_threshold': 8})
    """
    if kind not in KIND_METRICS:
        known = ", ".join(KIND_METRICS)
        raise ValidationError(f"unknown metric kind {kind!r}; known kinds: {known}")
    metric = KIND_METRICS[kind]
    name = default_detector_for(metric)
    base = default_params_for(metric)
    if detector is not None and detector != name:
        name, base = detector, {}
    return name, {**base, **params}


def parse_timestamp(text: str) -> float:
    """Epoch seconds from an epoch number (seconds, milliseconds, microseconds or
    nanoseconds, told by magnitude, as ingest reads event times) or ISO-8601 (naive means
    UTC).

    >>> parse_timestamp("1700000000"), parse_timestamp("1700000000000")
    (1700000000.0, 1700000000.0)
    >>> parse_timestamp("1700000000000000"), parse_timestamp("1700000000000000000")
    (1700000000.0, 1700000000.0)
    >>> parse_timestamp("2023-11-14 22:13:20")
    1700000000.0
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number / epoch_divisor(abs(number))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"timestamp {text!r} is neither epoch seconds nor ISO-8601") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def detect_csv(path_or_file: str | Path | IO[str], detector: str | None = None,
               kind: str = DEFAULT_KIND, **params: Any) -> Iterator[tuple[str, float, float]]:
    """Yield ``(timestamp, value, score)`` per ``timestamp,value`` row, score before learn.

    A header row is skipped when its value column is not a number; an empty or non-numeric
    value scores 0 (NaN value in the output) and is not learned.

    >>> import io
    >>> rows = io.StringIO("timestamp,value\\n0,1\\n3600,1\\n")
    >>> [round(score, 3) for _, _, score in detect_csv(rows, "robust")]
    [0.0, 0.0]
    """
    for stamp, value, score, _ in _rows(path_or_file, detector, kind, params, explain=False):
        yield stamp, value, score


def explain_csv(path_or_file: str | Path | IO[str], detector: str | None = None,
                kind: str = DEFAULT_KIND, **params: Any
                ) -> Iterator[tuple[str, float, float, Explanation]]:
    """As :func:`detect_csv`, with each row's explanation (taken before the row is learned)
    as the service stores it with a metric point: ``expected``, the band
    ``expected_low .. expected_high`` (made to agree with the row's decision at the
    detector's threshold, :func:`~dqpulse.detectors.base.decision_band`), ``z`` and, on a
    row that alerts or that a rule held back, ``evidence``. Detectors explain what they
    know: a key they do not give is absent. A row without a value explains nothing (``{}``).

    >>> import io
    >>> text = "t,v\\n" + "".join(f"{i * 300},{10 + i % 3}\\n" for i in range(300)) + "90000,60\\n"
    >>> *_, (stamp, value, score, why) = explain_csv(io.StringIO(text))
    >>> value > why["expected_high"], score >= 0.9, why["evidence"]
    (True, True, ['point', 'beyond_range'])
    """
    yield from _rows(path_or_file, detector, kind, params, explain=True)


def _rows(path_or_file: str | Path | IO[str], detector: str | None, kind: str,
          params: dict[str, Any], explain: bool
          ) -> Iterator[tuple[str, float, float, Explanation]]:
    name, merged = detector_for_kind(kind, detector, **params)
    model = create(name, **merged)
    if isinstance(path_or_file, str | Path):
        try:
            # a BOM is dropped; bytes that are not UTF-8 read as U+FFFD: in a header it is
            # still a header, in a value it is not a number (scored 0, not learned)
            handle = open(path_or_file, newline="", encoding="utf-8-sig", errors="replace")
        except OSError as exc:
            raise ValidationError(f"cannot read {path_or_file}: {exc.strerror or exc}") from exc
        with handle:
            yield from _score_rows(handle, model, explain)
    else:
        yield from _score_rows(path_or_file, model, explain)


def _score_rows(handle: IO[str], model: Any, explain: bool
                ) -> Iterator[tuple[str, float, float, Explanation]]:
    for line_number, row in enumerate(csv.reader(handle), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValidationError(f"line {line_number}: expected 'timestamp,value', got {row!r}")
        stamp, raw = row[0].strip(), row[1].strip()
        value = finite(_float(raw))
        if line_number == 1 and value is None and raw != "":
            continue  # header
        try:
            x = {"value": value, "t": parse_timestamp(stamp)}
        except ValidationError as exc:
            raise ValidationError(f"line {line_number}: {exc}") from exc
        score = model.score_one(x)
        why: Explanation = {}
        if explain and value is not None:
            why = decision_band(model, x, model.explain(x), score)
        model.learn_one(x)
        yield stamp, float("nan") if value is None else value, score, why


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
