"""Validity: the declared rules of ``fields:`` as violation ratios, one series per rule.

Each rule of a declared field is its own series: metric ``validity.violation_ratio`` with
``field="<path>:<rule>"`` (``extra`` repeats ``path`` and ``rule`` and gives the
``violations`` and ``checked`` counts). Rules and what they check:

- ``type``: every non-null value has the declared type (``number`` accepts integers;
  ``integer`` rejects fractional numbers; ``timestamp`` accepts ISO strings and numbers).
- ``not_null`` (``nullable: false``): every record has a non-null value.
- ``min`` / ``max``: numeric values within the bound.
- ``allowed``: non-null values among the allowed ones.
- ``pattern``: string values matching the regular expression (searched anywhere, as
  ``re.search``; polars' regex engine, Python's ``re`` where polars cannot compile it).
- ``expression``: a boolean expression over ``value`` holds for non-null values, e.g.
  ``value > 0 and value < 100``, ``len(value) <= 64``, ``value.startswith("EU-")``.
  Supported: comparisons (also ``in`` / ``not in`` a literal list), ``and``/``or``/``not``,
  ``+ - * / %``, unary minus, ``len()``, ``abs()``, and the string methods ``startswith``,
  ``endswith``, ``lower``, ``upper``, ``strip``. A value where it is false or fails counts.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.metrics.base import FamilyState, ratio, register_family
from dqpulse.metrics.batchstats import value_counts
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import NUMERIC_TYPES, ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec, FieldSpec

_ACCEPTED = {
    "number": {"number", "integer"},
    "integer": {"integer", "number"},  # numbers are then checked for a fractional part
    "string": {"string"},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": set(),
    "timestamp": {"timestamp", "string", "integer", "number"},
}


#: ``batch.cache`` key: violations per ``path:rule`` found in the batch (for samples)
VIOLATIONS_CACHE = "validity.violations"


class ExpressionError(ValueError):
    """An ``expression`` rule that is not in the supported subset."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Mod: operator.mod,
}
_STRING_METHODS: dict[str, Callable[..., pl.Expr]] = {
    "startswith": lambda e, a: e.str.starts_with(a),
    "endswith": lambda e, a: e.str.ends_with(a),
    "lower": lambda e: e.str.to_lowercase(),
    "upper": lambda e: e.str.to_uppercase(),
    "strip": lambda e: e.str.strip_chars(),
}


def compile_expression(source: str, column: str = "value") -> pl.Expr:
    """A polars expression for a rule over ``value`` (the field's column ``column``).

    >>> frame = pl.DataFrame({"x": [1, 5, 50]})
    >>> frame.select(compile_expression("value > 2 and value < 10", "x"))["x"].to_list()
    [False, True, False]
    """
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from exc
    return _translate(tree.body, column, source)


def _literal(node: ast.AST, source: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ExpressionError(f"expected a literal in {source!r}") from None


def _translate(node: ast.AST, column: str, source: str) -> pl.Expr:
    def walk(child: ast.AST) -> pl.Expr:
        return _translate(child, column, source)

    if isinstance(node, ast.Name):
        if node.id != "value":
            raise ExpressionError(f"unknown name {node.id!r} in {source!r} (use 'value')")
        return pl.col(column)
    if isinstance(node, ast.Constant):
        return pl.lit(node.value)
    if isinstance(node, ast.BoolOp):
        parts = [walk(v) for v in node.values]
        result = parts[0]
        for part in parts[1:]:
            result = result & part if isinstance(node.op, ast.And) else result | part
        return result
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return ~walk(node.operand)
        if isinstance(node.op, ast.USub):
            return -walk(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](walk(node.left), walk(node.right))  # type: ignore[no-any-return]
    if isinstance(node, ast.Compare):
        result_expr: pl.Expr | None = None
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                members = _literal(right, source)
                test = walk(left).is_in(list(members))
                test = ~test if isinstance(op, ast.NotIn) else test
            elif type(op) in _COMPARE:
                test = _COMPARE[type(op)](walk(left), walk(right))
            else:
                raise ExpressionError(f"unsupported comparison in {source!r}")
            result_expr = test if result_expr is None else result_expr & test
            left = right
        assert result_expr is not None
        return result_expr
    if isinstance(node, ast.Call) and not node.keywords:
        if isinstance(node.func, ast.Name) and node.func.id in ("len", "abs") and len(
                node.args) == 1:
            inner = walk(node.args[0])
            return inner.str.len_chars() if node.func.id == "len" else inner.abs()
        if isinstance(node.func, ast.Attribute) and node.func.attr in _STRING_METHODS:
            target = walk(node.func.value)
            args = [_literal(a, source) for a in node.args]
            return _STRING_METHODS[node.func.attr](target, *args)
    raise ExpressionError(f"unsupported syntax {type(node).__name__} in {source!r}")


def rules_of(field_spec: FieldSpec) -> list[str]:
    rules = []
    if field_spec.type is not None:
        rules.append("type")
    if not field_spec.nullable:
        rules.append("not_null")
    if field_spec.min is not None:
        rules.append("min")
    if field_spec.max is not None:
        rules.append("max")
    if field_spec.allowed is not None:
        rules.append("allowed")
    if field_spec.pattern is not None:
        rules.append("pattern")
    if field_spec.expression is not None:
        rules.append("expression")
    return rules


def _type_violations(batch: ColumnBatch, path: str, declared: str) -> tuple[int, int]:
    """(violations, checked) of the ``type`` rule for one declared field in one batch."""
    accepted = _ACCEPTED.get(declared, set())
    checked = violations = 0
    column_type = batch.types.get(path)
    if column_type is not None and column_type != "null":
        column = batch.frame.get_column(path)
        present = batch.n - column.null_count()
        checked += present
        if column_type not in accepted:
            violations += present
        elif declared == "integer" and column_type == "number":
            values = column.drop_nulls().to_numpy()
            violations += int(np.count_nonzero(values != np.floor(values)))
    for other, mask in batch.other_types.get(path, {}).items():
        count = int(mask.sum())
        checked += count
        if other not in accepted:
            violations += count
    return violations, checked


class _Pattern:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.python = re.compile(pattern)
        try:
            pl.Series(["probe"]).str.contains(pattern)
            self.native = True
        except pl.exceptions.ComputeError:
            self.native = False

    def matches(self, column: pl.Series) -> pl.Series:
        if self.native:
            return column.str.contains(self.pattern)
        search = self.python.search
        return column.map_elements(lambda s: search(s) is not None, return_dtype=pl.Boolean)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> _Pattern:
    return _Pattern(pattern)


def pattern_matches(batch: ColumnBatch, path: str, pattern: str) -> pl.Series:
    """Per record, whether the string column ``path`` matches ``pattern`` (null where the
    value is null); evaluated once per batch (``batch.cache``) for every family."""
    key = f"pattern:{path}:{pattern}"
    matched: pl.Series | None = batch.cache.get(key)
    if matched is None:
        matched = batch.cache[key] = _compiled(pattern).matches(batch.frame.get_column(path))
    return matched


@register_family
class ValidityState(FamilyState):
    family = "validity"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        # "path:rule" -> [violations, checked]
        self.counts: dict[str, list[int]] = {
            f"{path}:{rule}": [0, 0]
            for path, field_spec in spec.fields.items() for rule in rules_of(field_spec)
        }
        self._expressions: dict[str, pl.Expr | ExpressionError] = {}

    def _expression(self, path: str, source: str) -> pl.Expr | ExpressionError:
        if path not in self._expressions:
            try:
                self._expressions[path] = compile_expression(source, path)
            except ExpressionError as exc:
                self._expressions[path] = exc
        return self._expressions[path]

    def _add(self, key: str, violations: int, checked: int) -> None:
        counts = self.counts[key]
        counts[0] += violations
        counts[1] += checked
        if violations:
            self._found[key] = self._found.get(key, 0) + violations

    def update(self, batch: ColumnBatch) -> None:
        if not batch.n:
            return
        self._found: dict[str, int] = {}
        batch.cache[VIOLATIONS_CACHE] = self._found
        frame = batch.frame
        for path, field_spec in self.spec.fields.items():
            column_type = batch.types.get(path)
            column = frame.get_column(path) if column_type is not None else None
            if field_spec.type is not None:
                self._add(f"{path}:type", *_type_violations(batch, path, field_spec.type))
            if not field_spec.nullable:
                self._add(f"{path}:not_null", batch.n - batch.present_count(path), batch.n)
            if column is None or column_type == "null":
                continue
            # Rules count over the non-null values; a comparison or match with a null is
            # null, which ``sum`` skips, so most rules need no ``drop_nulls`` copy.
            present = len(column) - column.null_count()
            if not present:
                continue
            numeric = column_type in NUMERIC_TYPES
            if field_spec.min is not None and numeric:
                self._add(f"{path}:min", int((column < field_spec.min).sum()), present)
            if field_spec.max is not None and numeric:
                self._add(f"{path}:max", int((column > field_spec.max).sum()), present)
            if field_spec.allowed is not None:
                allowed = _allowed_for(field_spec.allowed, column_type or "")
                if not allowed:
                    inside = 0
                elif column_type == "string":  # the batch's distinct values, counted once
                    members = set(allowed)
                    items, counts = value_counts(batch, path)
                    inside = sum(c for v, c in zip(items, counts, strict=True) if v in members)
                else:
                    inside = int(column.is_in(allowed).sum())
                self._add(f"{path}:allowed", present - inside, present)
            if field_spec.pattern is not None and column_type == "string":
                matched = int(pattern_matches(batch, path, field_spec.pattern).sum())
                self._add(f"{path}:pattern", present - matched, present)
            if field_spec.expression is not None:
                expression = self._expression(path, field_spec.expression)
                if isinstance(expression, ExpressionError):
                    continue
                values = column.drop_nulls()
                try:
                    holds = values.to_frame(path).select(expression.fill_null(False)).to_series()
                    passed = int(holds.cast(pl.Boolean).sum())
                except (pl.exceptions.PolarsError, TypeError):
                    passed = 0  # the expression does not apply to this type: all fail
                self._add(f"{path}:expression", present - passed, present)

    def merge(self, other: ValidityState) -> ValidityState:
        for key, (violations, checked) in other.counts.items():
            counts = self.counts.setdefault(key, [0, 0])
            counts[0] += violations
            counts[1] += checked
        return self

    def to_bytes(self) -> bytes:
        return pack({"counts": self.counts})

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> ValidityState:
        header, _ = unpack(data)
        state = cls(spec)
        for key, counts in header["counts"].items():
            state.counts[key] = list(counts)
        return state

    def totals(self) -> tuple[int, int]:
        """(violations, checks) over all rules."""
        return (sum(c[0] for c in self.counts.values()), sum(c[1] for c in self.counts.values()))

    def points(self) -> list[MetricPoint]:
        points = []
        for key, (violations, checked) in sorted(self.counts.items()):
            path, _, rule = key.rpartition(":")
            extra: dict[str, object] = {
                "path": path, "rule": rule, "violations": violations, "checked": checked,
            }
            field_spec = self.spec.fields.get(path)
            if rule == "expression" and field_spec is not None:
                compiled = self._expression(path, field_spec.expression or "")
                if isinstance(compiled, ExpressionError):
                    extra["error"] = str(compiled)
            points.append(
                MetricPoint("validity.violation_ratio", ratio(violations, checked), key, extra)
            )
        return points


def violation_mask(batch: ColumnBatch, path: str, rule: str,
                   field_spec: FieldSpec) -> npt.NDArray[np.bool_]:
    """Which records of ``batch`` break ``rule`` of ``path`` (what the counts count)."""
    column_type = batch.types.get(path)
    none = np.zeros(batch.n, dtype=np.bool_)
    if column_type is None or column_type == "null":
        return ~none if rule == "not_null" else none
    column = batch.frame.get_column(path)
    if rule == "not_null":
        present = column.is_not_null().to_numpy()
        for mask in batch.other_types.get(path, {}).values():
            present = present | mask
        return ~present
    if rule == "type":
        accepted = _ACCEPTED.get(field_spec.type or "", set())
        mask = none.copy()
        if column_type not in accepted:
            mask = column.is_not_null().to_numpy()
        elif field_spec.type == "integer" and column_type == "number":
            mask = (column != column.floor()).fill_null(False).to_numpy()
        for other, other_mask in batch.other_types.get(path, {}).items():
            if other not in accepted:
                mask = mask | other_mask
        return mask
    test: pl.Series | None = None
    if rule == "min" and field_spec.min is not None and column_type in NUMERIC_TYPES:
        test = column < field_spec.min
    elif rule == "max" and field_spec.max is not None and column_type in NUMERIC_TYPES:
        test = column > field_spec.max
    elif rule == "allowed" and field_spec.allowed is not None:
        test = ~column.is_in(_allowed_for(field_spec.allowed, column_type))
    elif rule == "pattern" and field_spec.pattern is not None and column_type == "string":
        test = ~_compiled(field_spec.pattern).matches(column)
    elif rule == "expression" and field_spec.expression is not None:
        try:
            expression = compile_expression(field_spec.expression, path)
            holds = column.to_frame(path).select(expression.fill_null(False)).to_series()
            test = ~holds.cast(pl.Boolean)
        except (ExpressionError, pl.exceptions.PolarsError, TypeError):
            test = column.is_not_null()
    if test is None:
        return none
    return (test.fill_null(False) & column.is_not_null()).to_numpy()


def _allowed_for(allowed: list[Any], column_type: str) -> list[Any]:
    """The allowed values comparable with a column of ``column_type`` (none with an
    array, whose column holds lengths: an array is never an allowed value)."""
    if column_type == "array":
        return []
    if column_type == "boolean":
        return [v for v in allowed if isinstance(v, bool)]
    if column_type in NUMERIC_TYPES:
        return [v for v in allowed if isinstance(v, int | float) and not isinstance(v, bool)]
    return [v for v in allowed if isinstance(v, str)]
