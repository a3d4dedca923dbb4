"""Per-batch column aggregates, computed once in one polars pass and shared by families.

Calling polars once per column and statistic costs more in call overhead than in work on
a 5000-record batch, so every family reads these instead (cached in ``batch.cache``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import polars as pl

from dqpulse.records import NUMERIC_TYPES, ColumnBatch


@dataclass(slots=True)
class ColumnStats:
    """Aggregates of one column of a batch (only those that apply to its type)."""

    nulls: int = 0
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    variance: float | None = None  # population variance (ddof=0)
    empty: int = 0
    length_sum: int = 0
    true_count: int = 0


def column_stats(batch: ColumnBatch) -> dict[str, ColumnStats]:
    cached: dict[str, ColumnStats] | None = batch.cache.get("stats")
    if cached is not None:
        return cached
    stats: dict[str, ColumnStats] = {path: ColumnStats() for path in batch.types}
    frame = batch.frame
    if not frame.width:
        for item in stats.values():
            item.nulls = batch.n
        batch.cache["stats"] = stats
        return stats
    # Per-expression overhead dominates on a poll batch, so: null counts of every column
    # in one call, the rest in one sequential select (no thread-pool hand-off).
    for path, nulls in zip(frame.columns, frame.null_count().row(0), strict=True):
        if path in stats:
            stats[path].nulls = int(nulls)
    exprs, layout = _stats_plan(tuple(batch.types.items()))
    if exprs and batch.n:
        row = frame.select_seq(exprs).row(0)
        for (path, name), value in zip(layout, row, strict=True):
            if value is not None:
                if name in ("minimum", "maximum"):
                    value = float(value)  # integer columns give ints
                setattr(stats[path], name, value)
    batch.cache["stats"] = stats
    return stats


@functools.lru_cache(maxsize=1024)
def _stats_plan(types: tuple[tuple[str, str], ...]
                ) -> tuple[tuple[pl.Expr, ...], tuple[tuple[str, str], ...]]:
    """The expressions :func:`column_stats` selects for a batch with these column types, and
    which (path, statistic) each gives. Built once per schema: building 4 expressions per
    column cost more than computing them on a few hundred records."""
    exprs: list[pl.Expr] = []
    layout: list[tuple[str, str]] = []
    for index, (path, type_name) in enumerate(types):
        column = pl.col(path)

        def add(expr: pl.Expr, name: str, index: int = index, path: str = path) -> None:
            exprs.append(expr.alias(f"{index}:{name}"))
            layout.append((path, name))

        if type_name in NUMERIC_TYPES:
            add(column.min(), "minimum")
            add(column.max(), "maximum")
            add(column.mean(), "mean")
            add(column.var(ddof=0), "variance")
        elif type_name == "string":
            add((column == "").sum(), "empty")
            add(column.str.len_chars().sum(), "length_sum")
        elif type_name == "boolean":
            add(column.sum(), "true_count")
    return tuple(exprs), tuple(layout)


def value_counts(batch: ColumnBatch, path: str) -> tuple[list[Any], list[int]]:
    """Distinct non-null values of a column and their counts, most frequent first."""
    key = f"counts:{path}"
    cached: tuple[list[Any], list[int]] | None = batch.cache.get(key)
    if cached is None:
        counts = batch.frame.get_column(path).value_counts(sort=True, name="n")
        values = counts.get_column(path).to_list()
        numbers = counts.get_column("n").to_list()
        if None in values:  # the nulls' row
            at = values.index(None)
            del values[at], numbers[at]
        cached = (values, numbers)
        batch.cache[key] = cached
    return cached
