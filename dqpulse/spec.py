"""The ``dqpulse.yaml`` model and its loader, with file/line/field errors.

Every problem in a file is reported at once, each as ``file:line: path: why``, so a user
fixes a config in one pass. Nothing is applied unless the whole file is valid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from dqpulse.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9_.-]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Severity = Literal["critical", "warning", "info"]
FieldType = Literal["number", "integer", "string", "boolean", "object", "array", "timestamp"]
Kind = Literal[
    "freshness", "volume", "completeness", "distribution", "schema", "validity",
    "uniqueness", "ml_data",
]


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration such as ``30s``, ``1m``, ``1.5h``; a bare number is seconds.

    >>> parse_duration("1m"), parse_duration("250ms"), parse_duration(5)
    (60.0, 0.25, 5.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s' or '5m', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '30s' or '5m', got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """Declared contract and validity rules of one field (dotted path)."""

    type: FieldType | None = None
    required: bool = False
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = None
    pattern: str | None = None
    expression: str | None = None  # a boolean expression over the record's value ``value``
    severity: Severity | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _range_ordered(self) -> FieldSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class FairnessSpec(_Strict):
    group: str
    outcome: str
    positive: str | int | float | bool = True


class DetectorOverride(_Strict):
    """Per-metric detector choice: ``{metric: volume.records, detector: seasonal_robust}``."""

    metric: str
    field: str | None = None
    detector: str
    params: dict[str, Any] = Field(default_factory=dict)


class SamplesSpec(_Strict):
    """Failing-record samples kept per window for validity, completeness, type-change and
    uniqueness alerts: at most ``per_window`` records per series and window, each with its
    partition and offset; the ``redact`` paths (and everything under them) are never
    stored, and values longer than ``max_value_chars`` are cut."""

    per_window: int = Field(default=5, ge=0, le=50)
    redact: list[str] = Field(default_factory=list)
    max_value_chars: int = Field(default=200, ge=8, le=4000)
# -- segments (issue 14): dimensions and the memory budget of per-segment states ----------
class SegmentSpec(_Strict):
    """How much a dataset's per-segment states may hold (``segments:`` of a dataset).

    ``budget_kib`` bounds one window state's segment tables (a partition's partial and the
    merged window alike); heavy hitters of each dimension are kept within it and the rest
    is counted as ``other``. Values longer than ``max_value_length`` are cut; a message
    key's prefix is the key up to its first ``:/|._-`` or ``key_prefix_length`` characters.
    """

    budget_kib: int = Field(default=256, ge=16, le=65_536)
    max_value_length: int = Field(default=64, ge=8, le=256)
    key_prefix_length: int = Field(default=16, ge=1, le=64)


MAX_DIMENSIONS = 8
KAFKA_DIMENSIONS = ("kafka.partition", "kafka.key_prefix")  # partition: always sliced


class DatasetSpec(_Strict):
    """One watched dataset: a Kafka topic with its format, windowing and contract."""

    name: str
    topic: str
    format: Literal["json", "avro"] = "json"
    avro_schema: dict[str, Any] | None = None
    event_time: str | None = None
    window: float = 60.0
    lateness: float = 30.0
    owner: str | None = None
    freshness_sla: float | None = None
    # the quality score (every dimension) the owner promises; exported to Prometheus
    # (dqpulse_dataset_quality_objective_ratio) for the DqpulseQualityBelowObjective alert
    quality_objective: float | None = Field(default=None, ge=0.0, le=1.0)
    key: str | None = None
    label: str | None = None
    fairness: FairnessSpec | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    severity: dict[str, Severity] = Field(default_factory=dict)
    detectors: list[DetectorOverride] = Field(default_factory=list)
    samples: SamplesSpec = Field(default_factory=SamplesSpec)
    # segment attribution: record fields (and kafka.key_prefix, opt-in) to slice by
    # (kafka.partition is always sliced), and the budget of their states
    dimensions: list[str] = Field(default_factory=list, max_length=MAX_DIMENSIONS)
    segments: SegmentSpec = Field(default_factory=SegmentSpec)

    @field_validator("dimensions")
    @classmethod
    def _dimension_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or (name.startswith("kafka.") and name not in KAFKA_DIMENSIONS):
                raise ValueError(f"dimension {name!r} must be a record field path, "
                                 "kafka.key_prefix or kafka.partition (always there)")
        if len(set(value)) != len(value):
            raise ValueError("dimensions must not repeat")
        return value

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must match [a-z0-9_.-]+")
        return value

    @field_validator("window", "lateness", "freshness_sla", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("window")
    @classmethod
    def _window_range(cls, value: float) -> float:
        if not 1.0 <= value <= 86400.0:
            raise ValueError(f"window must be between 1s and 1d, got {value:g}s")
        return value

    @field_validator("lateness")
    @classmethod
    def _lateness_range(cls, value: float) -> float:
        if value < 0:
            raise ValueError("lateness must not be negative")
        return value


class LineageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    job: str | None = None


class MatchSpec(_Strict):
    owner: str | list[str] | None = None
    dataset: str | list[str] | None = None
    severity: list[Severity] | None = None
    kind: list[Kind] | None = None


class NotificationSpec(_Strict):
    """One notification channel with its routing match; ``url`` may hold ``${VAR}``."""

    name: str
    type: Literal["slack", "teams", "pagerduty", "opsgenie", "webhook", "alertmanager"]
    url: str
    secret: str | None = None  # webhook HMAC secret / PagerDuty routing key / Opsgenie key
    match: MatchSpec = Field(default_factory=MatchSpec)
    rate_limit_per_minute: int = Field(default=30, ge=1)


class OpenLineageEmitSpec(_Strict):
    """Where finalized windows go as OpenLineage run events (``dataQualityMetrics`` and
    ``dataQualityAssertions`` facets), through the openlineage-python HTTP transport
    (Marquez-compatible: ``POST {url}/{endpoint}``). ``url`` and ``api_key`` may hold
    ``${VAR}``, expanded where the sender runs."""

    url: str
    endpoint: str = "api/v1/lineage"
    api_key: str | None = None
    job_namespace: str = "dqpulse"
    dataset_namespace: str = "kafka://dqpulse"
    timeout_s: float = Field(default=5.0, gt=0, le=120)


class OpenLineageSpec(_Strict):
    """OpenLineage settings; ``emit`` absent: nothing is emitted."""

    emit: OpenLineageEmitSpec | None = None


class Spec(_Strict):
    """The whole ``dqpulse.yaml``."""

    datasets: list[DatasetSpec] = Field(default_factory=list)
    lineage: list[LineageSpec] = Field(default_factory=list)
    notifications: list[NotificationSpec] = Field(default_factory=list)
    openlineage: OpenLineageSpec = Field(default_factory=OpenLineageSpec)

    def dataset(self, name: str) -> DatasetSpec:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)


def _line_of(root: Any, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node on ``loc`` that the YAML tree knows."""
    node, line = root, None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            key_line = node.lc.key(part)[0] if node.lc.data and part in node.lc.data else None
            line = key_line + 1 if key_line is not None else line
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            item_line = node.lc.item(part)[0] if node.lc.data and part in node.lc.data else None
            line = item_line + 1 if item_line is not None else line
            node = node[part]
        else:
            break
    if line is None and hasattr(root, "lc"):
        line = root.lc.line + 1
    return line


def line_in(path: str | Path, loc: tuple[int | str, ...]) -> int | None:
    """The line of ``loc`` (e.g. ``("datasets", 2, "window")``) in the YAML file at ``path``,
    for a problem found after validation (against the database); None when the file cannot
    be read or parsed."""
    try:
        root = YAML(typ="rt").load(Path(path).read_text(encoding="utf-8-sig"))
    except Exception:  # noqa: BLE001 - a hint only: the problem is reported without a line
        return None
    return _line_of(root, loc) if isinstance(root, CommentedMap) else None


def _expand_env(value: Any, environ: dict[str, str], where: str, problems: list[str]) -> Any:
    if isinstance(value, str):
        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                problems.append(f"{where}: environment variable {name} is not set")
                return ""
            return environ[name]

        return _ENV_VAR.sub(repl, value)
    return value


def parse_spec(text: str, source: str = "dqpulse.yaml",
               environ: dict[str, str] | None = None, *, expand_env: bool = True) -> Spec:
    """Parse and validate a dqpulse.yaml text; raise ConfigError listing every problem.

    ``expand_env=False`` keeps the channels' ``${VAR}`` references as written: what
    ``dqpulse apply`` stores, so a secret never reaches the database (the notifier expands
    them with :func:`expand_secrets`, where the variables are set)."""
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise ConfigError(f"{source}:{line}: invalid YAML: {exc.problem}") from exc
    if root is None:
        root = CommentedMap()
    if not isinstance(root, CommentedMap):
        raise ConfigError(f"{source}:1: the top level must be a mapping with 'datasets:'")

    problems: list[str] = []
    env = dict(os.environ) if environ is None else environ
    for index, channel in enumerate(root.get("notifications") or []):
        if isinstance(channel, CommentedMap) and expand_env:
            for key in ("url", "secret"):
                if key in channel:
                    where = f"{source}:{_line_of(root, ('notifications', index, key))}"
                    where += f": notifications[{index}].{key}"
                    channel[key] = _expand_env(channel[key], env, where, problems)

    spec: Spec | None = None
    try:
        spec = Spec.model_validate(root)
    except ValidationError as exc:
        problems += _validation_problems(root, exc, source)
    problems += _duplicate_dataset_names(root, source)
    if spec is not None:
        problems += _reference_problems(root, spec, source)
    if problems:
        raise ConfigError(sorted(set(problems), key=_problem_order))
    assert spec is not None
    return spec


def _validation_problems(root: CommentedMap, exc: ValidationError, source: str) -> list[str]:
    """pydantic's errors as ``file:line: path: message`` lines."""
    problems: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # pydantic reports union/literal members as extra loc parts; keep the data path
        data_loc = tuple(p for p in loc if isinstance(p, int) or p in _known_keys(root, loc))
        line = _line_of(root, data_loc or loc)
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc)
        path = path.replace(".[", "[")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{source}:{line}: {path}: {message}")
    return problems


def _duplicate_dataset_names(root: CommentedMap, source: str) -> list[str]:
    problems: list[str] = []
    datasets = root.get("datasets") or []
    seen: dict[str, int] = {}
    for index, item in enumerate(datasets if isinstance(datasets, list) else []):
        if isinstance(item, CommentedMap) and isinstance(item.get("name"), str):
            name = item["name"]
            line = _line_of(root, ("datasets", index, "name"))
            if name in seen:
                problems.append(
                    f"{source}:{line}: datasets[{index}].name: duplicate dataset name {name!r} "
                    f"(first defined on line {seen[name]})"
                )
            else:
                seen[name] = line or 0
    return problems


def _reference_problems(root: CommentedMap, spec: Spec, source: str) -> list[str]:
    """Lineage edges to undeclared datasets and duplicate channel names."""
    problems: list[str] = []
    names = {d.name for d in spec.datasets}
    for index, edge in enumerate(spec.lineage):
        for key, value in (("from", edge.source), ("to", edge.target)):
            if value not in names:
                line = _line_of(root, ("lineage", index, key))
                problems.append(
                    f"{source}:{line}: lineage[{index}].{key}: unknown dataset {value!r}"
                )
    channel_names: set[str] = set()
    for index, channel in enumerate(spec.notifications):
        if channel.name in channel_names:
            line = _line_of(root, ("notifications", index, "name"))
            problems.append(
                f"{source}:{line}: notifications[{index}].name: duplicate channel "
                f"name {channel.name!r}"
            )
        channel_names.add(channel.name)
    return problems


def _problem_order(problem: str) -> tuple[int, str]:
    try:
        return int(problem.split(":")[1]), problem
    except (IndexError, ValueError):
        return 0, problem


def _known_keys(root: Any, loc: tuple[int | str, ...]) -> set[str]:
    keys: set[str] = set()
    node = root
    for part in loc:
        if isinstance(node, CommentedMap):
            keys.update(str(k) for k in node)
            if part in node:
                node = node[part]
                continue
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            node = node[part]
            continue
        break
    return keys


def expand_secrets(spec: Spec, environ: dict[str, str] | None = None) -> Spec:
    """``spec`` with every channel's ``${VAR}`` in ``url`` and ``secret`` expanded from
    ``environ`` (default: the process environment); ConfigError names each channel and
    variable that is not set."""
    env = dict(os.environ) if environ is None else environ
    problems: list[str] = []
    channels = []
    for channel in spec.notifications:
        values = {key: _expand_env(getattr(channel, key), env,
                                   f"notifications[{channel.name}].{key}", problems)
                  for key in ("url", "secret")}
        channels.append(channel.model_copy(update=values))
    if problems:
        raise ConfigError(problems)
    return spec.model_copy(update={"notifications": channels})


def expand_emit_secrets(emit: OpenLineageEmitSpec,
                        environ: dict[str, str] | None = None) -> OpenLineageEmitSpec:
    """``emit`` with ``${VAR}`` in ``url`` and ``api_key`` expanded (ConfigError names a
    variable that is not set)."""
    env = dict(os.environ) if environ is None else environ
    problems: list[str] = []
    values = {key: _expand_env(getattr(emit, key), env, f"openlineage.emit.{key}", problems)
              for key in ("url", "api_key")}
    if problems:
        raise ConfigError(problems)
    return emit.model_copy(update=values)


def has_env_reference(value: str | None) -> bool:
    return bool(value) and _ENV_VAR.search(value or "") is not None


def load_spec(path: str | Path, environ: dict[str, str] | None = None, *,
              expand_env: bool = True) -> Spec:
    """Read and validate a dqpulse.yaml file (``expand_env``: see :func:`parse_spec`)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise ConfigError(f"{file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                          f"column {column})") from exc
    return parse_spec(text, source=str(file), environ=environ, expand_env=expand_env)
