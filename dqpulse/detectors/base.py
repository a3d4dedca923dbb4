"""The detector protocol (River's ``learn_one`` / ``score_one``) and the detector registry.

A detector watches one series (or one dataset's window vector) and answers, per window,
how anomalous the new observation is, on a common scale:

* ``score_one(x) -> float`` in ``[0, 1]``; higher is more anomalous; a score at or above
  ``threshold`` (0.9 for every built-in detector) is an anomaly.
* Score before learn: callers call ``score_one(x)`` first, then ``learn_one(x)``.
* ``0.0`` during warm-up (fewer than ``warm_up`` learned observations).
* Anomalies are not learned by default: ``learn_one`` skips an observation that the
  detector itself scores as anomalous, so an incident never becomes the new normal.
* A missing, ``None`` or NaN value scores ``0.0`` and is not learned.

Univariate detectors read ``x = {"value": 12.0, "t": 1700000000.0}`` (``t`` is the window
start in epoch seconds); multivariate ones read ``x = {"volume.records": 10.0, ...}``
(every finite numeric entry except ``t`` is a feature).

Statistical detectors map a robust z-score (deviation over a robust scale) to the common
scale with ``score = 1 - (1 - threshold) ** (z / z_threshold)``: ``z = 0`` scores 0,
``z = z_threshold`` scores exactly ``threshold`` (0.9), and the score rises smoothly
towards 1 beyond it. ``z_threshold`` is therefore *the* sensitivity knob.
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
import pickle  # noqa: S403  # detector state is written and read only by dqpulse itself
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, ClassVar, Literal, TypeVar

from dqpulse.errors import ConfigError, DqpulseError

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "DetectorStateError",
    "Explanation",
    "MultivariateDetector",
    "UnivariateDetector",
    "Verdict",
    "available",
    "create",
    "decision_band",
    "get",
    "load_entry_points",
    "register",
    "z_to_score",
]

Verdict = Literal["false_positive", "confirmed"]
Explanation = dict[str, Any]

DEFAULT_THRESHOLD = 0.9
ENTRY_POINT_GROUP = "dqpulse.detectors"
#: mean absolute deviation -> standard deviation, for Gaussian noise
MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2.0)
#: median absolute deviation -> standard deviation, for Gaussian noise
MAD_TO_SIGMA = 1.4826
SIDES = ("both", "up", "down")


def check_side(side: str) -> None:
    """Raise on a ``side`` parameter that is not both, up or down."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")

_MAGIC = b"DQPD"
_FORMAT_VERSION = 1


class DetectorStateError(DqpulseError):
    """Saved detector state that cannot be read back (corrupt, other detector, old version)."""


#: decades of ``1 - score`` up to which :func:`z_to_score` is ``1 - (1 - threshold) **
#: (z / z_threshold)``; beyond, it approaches 1 by the logarithm of the excess (score
#: 0.999999 and up: no alert, severity or learning decision is taken that high)
_Z_KNEE_DECADES = 6.0
_DEFAULT_DECADES = -math.log10(1.0 - DEFAULT_THRESHOLD)  # decades of 1 - score per z_threshold


def z_to_score(z: float, z_threshold: float, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Map a non-negative robust z to ``[0, 1]`` so that ``z == z_threshold`` gives ``threshold``.

    ``1 - (1 - threshold) ** (z / z_threshold)`` up to a score of 0.999999; further out the
    score keeps rising with ``z`` without reaching 1.0 in floating point (the plain curve
    rounds to exactly 1.0 from about 16 decades, at 16 ``z_threshold``s with the default
    threshold, and such windows could not be ranked). Only an infinite ``z`` scores 1.0.

    >>> round(z_to_score(0.0, 6.0), 3), round(z_to_score(6.0, 6.0), 3)
    (0.0, 0.9)
    >>> z_to_score(3.0, 6.0) < 0.9 < z_to_score(7.0, 6.0) < 1.0
    True
    >>> z_to_score(100.0, 4.0) < z_to_score(1e6, 4.0) < z_to_score(1e18, 4.0) < 1.0
    True
    """
    if not z > 0.0:  # also catches NaN
        return 0.0
    if math.isinf(z):
        return 1.0
    if not threshold < 1.0:
        return float(1.0 - (1.0 - threshold) ** (z / z_threshold))
    per_z = _DEFAULT_DECADES if threshold == DEFAULT_THRESHOLD else -math.log10(1.0 - threshold)
    ratio = z / z_threshold
    decades = ratio * per_z
    knee = _Z_KNEE_DECADES if per_z <= _Z_KNEE_DECADES - 1.0 else per_z + 1.0
    if decades <= knee:
        return float(1.0 - (1.0 - threshold) ** ratio)
    return 1.0 - math.pow(10.0, -knee) / (1.0 + math.log1p(decades - knee))


#: The largest magnitude a streaming detector reads (``_read``): a producer's absurd value
#: (1e300) is read as this, so that squares and sums of learned values stay finite (1e300
#: squared overflows, and a detector that learned it failed on every later window). No
#: metric means anything out there.
VALUE_LIMIT = 1e100


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if type(value) is float:  # the common case, once per window and series
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | str | bytes):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class UnsavedCaches:
    """Leaves the attributes named in ``_unsaved`` (per-window caches, rebuilt on demand)
    out of the pickled state: they are derived, and a saved state stays small."""

    _unsaved: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._unsaved:
            state.pop(name, None)
        return state


def empty_explanation(observed: float | None = None) -> Explanation:
    return {"expected_low": None, "expected_high": None, "observed": observed, "direction": None}


class Detector(abc.ABC):
    """Base of every detector: River's protocol plus explain, feedback, clone and state bytes.

    Subclasses store each constructor argument as an attribute of the same name (River's
    convention), which is what :meth:`clone` and the registry rely on.
    """

    name: ClassVar[str] = ""
    multivariate: ClassVar[bool] = False
    # Bump when the pickled attributes of a detector change incompatibly.
    state_version: ClassVar[int] = 1
    # Params read only when a window is reported (not baked into the learned state): a
    # saved state takes a new value of these and keeps its baseline.
    live_params: ClassVar[frozenset[str]] = frozenset()
    threshold: float = DEFAULT_THRESHOLD

    # ---- River's protocol -------------------------------------------------------------
    @abc.abstractmethod
    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Update the baseline with ``x`` (unless ``x`` is missing or, by default, anomalous)."""

    @abc.abstractmethod
    def score_one(self, x: Mapping[str, Any]) -> float:
        """Anomaly score of ``x`` in ``[0, 1]``; does not change the detector."""

    # ---- dqpulse additions ------------------------------------------------------------
    @abc.abstractmethod
    def explain(self, x: Mapping[str, Any]) -> Explanation:
        """``expected_low``, ``expected_high``, ``observed``, ``direction`` (up/down/None)."""

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        """React to a human verdict on ``x``; the default does nothing (static rules)."""
        if verdict not in ("false_positive", "confirmed"):
            raise ValueError(f"verdict must be 'false_positive' or 'confirmed', got {verdict!r}")

    def is_anomalous(self, score: float) -> bool:
        return score >= self.threshold

    def _get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same name."""
        return {name: getattr(self, name) for name in _param_names(type(self))}

    def clone(self) -> Detector:
        """A fresh detector with the same parameters and no learned state."""
        return type(self)(**self._get_params())

    # ---- state ------------------------------------------------------------------------
    def _dump_state(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @classmethod
    def _load_state(cls, payload: bytes) -> Detector:
        obj = pickle.loads(payload)  # noqa: S301  # written by dqpulse into its own database
        if not isinstance(obj, cls):
            raise DetectorStateError(f"state holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def to_bytes(self) -> bytes:
        """State as bytes: ``DQPD``, format version, detector name and version, payload."""
        name = self.name.encode()
        header = _MAGIC + bytes([_FORMAT_VERSION, len(name)]) + name
        return header + self.state_version.to_bytes(2, "big") + self._dump_state()

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        """Rebuild a detector from :meth:`to_bytes`.

        Called on :class:`Detector` it returns any registered detector; called on a
        subclass, the state must belong to that subclass.
        """
        name, version, payload = _split_state(data)
        target = get(name)
        if not issubclass(target, cls):
            raise DetectorStateError(f"state is of detector {name!r}, not a {cls.__name__}")
        if version != target.state_version:
            raise DetectorStateError(
                f"state of detector {name!r} has version {version}, "
                f"this dqpulse reads version {target.state_version}"
            )
        try:
            return target._load_state(payload)
        except DetectorStateError:
            raise
        except Exception as exc:  # corrupt payloads raise anything pickle/torch can raise
            raise DetectorStateError(f"cannot read state of detector {name!r}: {exc}") from exc

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({params})"


#: bisection steps that place a band edge (the interval shrinks 2**20-fold: a millionth)
_BAND_STEPS = 20


def decision_band(detector: Detector, x: Mapping[str, Any], explanation: Explanation,
                  score: float) -> Explanation:
    """``explanation`` with its band made to agree with the window's decision: the
    observed value lies outside ``expected_low .. expected_high`` exactly when the window
    alerts.

    A detector's band is where its point evidence alone would alert. Its decision weighs
    more: a shift held over several windows (persistence), a value beyond the range of
    the last two weeks, an alert held on while the series hovers about the threshold, a
    repeat of what the day before saw. So a window can alert inside the band ("rose to
    176 (expected 10 .. 4,961)") or stay quiet beyond it. When they disagree, the edge
    on the observed side moves: to the last value between the expected one and the
    observed one that would not have alerted (found by bisection on ``score_one`` with
    the value replaced, which changes nothing in the detector), or, for a quiet window
    beyond its band, to the observed value. Windows that agree are returned unchanged;
    so is an explanation without ``expected`` or without an edge on that side.

    >>> class Step(Detector):  # its point band ends at 3; it alerts from 2 on
    ...     def learn_one(self, x): pass
    ...     def score_one(self, x): return 0.95 if x["value"] >= 2.0 else 0.0
    ...     def explain(self, x): return {"expected": 0.0, "expected_low": -3.0,
    ...                                   "expected_high": 3.0, "observed": x["value"]}
    >>> step, x = Step(), {"value": 2.5}
    >>> round(decision_band(step, x, step.explain(x), step.score_one(x))["expected_high"], 4)
    2.0
    >>> x = {"value": -4.0}  # beyond the band, and quiet
    >>> decision_band(step, x, step.explain(x), step.score_one(x))["expected_low"]
    -4.0
    """
    value = finite(explanation.get("observed"))
    expected = finite(explanation.get("expected"))
    if value is None or expected is None or value == expected:
        return explanation
    key = "expected_high" if value > expected else "expected_low"
    edge = finite(explanation.get(key))
    if edge is None:
        return explanation
    alerting = detector.is_anomalous(score)
    if alerting == (value > edge if value > expected else value < edge):
        return explanation
    if not alerting:
        return {**explanation, key: value}

    def alerts(probe: float) -> bool:
        return detector.is_anomalous(detector.score_one({**x, "value": probe}))

    quiet, loud = expected, value
    if alerts(quiet):
        return {**explanation, key: expected}
    for _ in range(_BAND_STEPS):
        middle = 0.5 * (quiet + loud)
        if alerts(middle):
            loud = middle
        else:
            quiet = middle
    return {**explanation, key: quiet}


@functools.cache
def _param_names(cls: type[Detector]) -> tuple[str, ...]:
    """Constructor parameter names of ``cls`` (cached: scoring asks once per series and window)."""
    return tuple(
        name for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL,
                                                     parameter.VAR_KEYWORD))


def state_detector_name(data: bytes) -> str:
    """The registry name a state blob belongs to, without unpickling it."""
    return _split_state(data)[0]


def _split_state(data: bytes) -> tuple[str, int, bytes]:
    if len(data) < 8 or data[:4] != _MAGIC:
        raise DetectorStateError("not a dqpulse detector state (bad magic)")
    if data[4] != _FORMAT_VERSION:
        raise DetectorStateError(f"unknown detector state format version {data[4]}")
    size = data[5]
    name = data[6:6 + size].decode()
    version = int.from_bytes(data[6 + size:8 + size], "big")
    return name, version, data[8 + size:]


class _Learner(Detector):
    """Shared machinery: warm-up, anomaly protection, sensitivity feedback."""

    z_threshold: float
    warm_up: int
    learn_anomalies: bool
    relearn_after: int | None

    #: how much one false positive widens ``z_threshold``, and the bound on the widening
    feedback_step: ClassVar[float] = 1.25
    max_desensitization: ClassVar[float] = 4.0

    def _init_learner(self) -> None:
        self.n_learned = 0
        self.sensitivity = 1.0  # multiplies z_threshold; raised by false positives
        self._anomaly_run = 0

    @property
    def effective_z_threshold(self) -> float:
        return self.z_threshold * self.sensitivity

    @property
    def is_warm(self) -> bool:
        return self.n_learned >= self.warm_up

    def _should_learn(self, score: float) -> bool:
        """Anomaly protection, with an optional escape for long level shifts."""
        if self.learn_anomalies or not self.is_warm or score < self.threshold:
            self._anomaly_run = 0
            return True
        self._anomaly_run += 1
        return self.relearn_after is not None and self._anomaly_run > self.relearn_after

    def _widen(self) -> None:
        self.sensitivity = min(self.sensitivity * self.feedback_step, self.max_desensitization)

    def _narrow(self) -> None:
        self.sensitivity = max(self.sensitivity / self.feedback_step, 1.0)


class UnivariateDetector(_Learner):
    """One series: ``x = {"value": v, "t": window_start}``.

    Subclasses implement ``_z(value, t) -> (z, expected, scale)``, ``_update(value, t)`` and
    ``_forget(value, t) -> bool`` (take a learned point back out of the baseline).
    """

    side: str

    @abc.abstractmethod
    def _z(self, value: float, t: float | None) -> tuple[float, float, float]:
        """Signed robust z of ``value``, the expected value and the scale used."""

    @abc.abstractmethod
    def _update(self, value: float, t: float | None) -> None: ...

    @abc.abstractmethod
    def _forget(self, value: float, t: float | None) -> bool: ...

    def _one_sided(self, z: float) -> float:
        if self.side == "up":
            return max(z, 0.0)
        if self.side == "down":
            return max(-z, 0.0)
        return abs(z)

    @staticmethod
    def _read(x: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """(value, t) of a window; a value beyond :data:`VALUE_LIMIT` is read as the limit."""
        value = finite(x.get("value"))
        if value is not None and not -VALUE_LIMIT <= value <= VALUE_LIMIT:
            value = math.copysign(VALUE_LIMIT, value)
        return value, finite(x.get("t"))

    def score_one(self, x: Mapping[str, Any]) -> float:
        value, t = self._read(x)
        if value is None or not self.is_warm:
            return 0.0
        z, _, _ = self._z(value, t)
        return z_to_score(self._one_sided(z), self.effective_z_threshold, self.threshold)

    def learn_one(self, x: Mapping[str, Any]) -> None:
        value, t = self._read(x)
        if value is None:
            return
        if self._should_learn(self.score_one(x)):
            self._update(value, t)
            self.n_learned += 1

    def explain(self, x: Mapping[str, Any]) -> Explanation:
        value, t = self._read(x)
        if value is None or self.n_learned == 0:
            return empty_explanation(value)
        return self._explanation(value, self._z(value, t))

    def _explanation(self, value: float, fit: tuple[float, float, float]) -> Explanation:
        """:meth:`explain` from the value's ``_z`` (``z``, ``expected``, ``scale``)."""
        z, expected, scale = fit
        width = self.effective_z_threshold * scale
        low = -math.inf if self.side == "up" else expected - width
        high = math.inf if self.side == "down" else expected + width
        direction = None
        if self._one_sided(z) > 0.0:
            direction = "up" if z > 0 else "down"
        return {
            "expected_low": None if math.isinf(low) else low,
            "expected_high": None if math.isinf(high) else high,
            "expected": expected,
            "observed": value,
            "direction": direction,
            "z": z,
        }

    def feedback(self, x: Mapping[str, Any], verdict: Verdict) -> None:
        super().feedback(x, verdict)
        value, t = self._read(x)
        if verdict == "false_positive":
            self._widen()
            if value is not None:
                self._update(value, t)
                self.n_learned += 1
        else:
            self._narrow()
            if value is not None and self._forget(value, t):
                self.n_learned = max(self.n_learned - 1, 0)


class MultivariateDetector(_Learner):
    """One dataset window: ``x = {metric: value, ...}``; ``t`` (if present) is not a feature."""

    @staticmethod
    def _features(x: Mapping[str, Any]) -> dict[str, float] | None:
        features = {}
        for key, raw in x.items():
            if key == "t":
                continue
            value = finite(raw)
            if value is not None:
                features[str(key)] = value
        return features or None


# ---- registry ----------------------------------------------------------------------------
_REGISTRY: dict[str, type[Detector]] = {}
_LAZY: dict[str, Callable[[], type[Detector]]] = {}
_entry_points_loaded = False

D = TypeVar("D", bound=type[Detector])


def register(name: str) -> Callable[[D], D]:
    """Class decorator: register a detector under a stable name; a second registration raises.

    >>> @register("doc_example")
    ... class Example(UnivariateDetector): ...
    >>> "doc_example" in available()
    True
    >>> _ = _REGISTRY.pop("doc_example")
    """

    def decorate(cls: D) -> D:
        if name in _REGISTRY or name in _LAZY:
            raise ValueError(f"detector {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def register_lazy(name: str, loader: Callable[[], type[Detector]]) -> None:
    """Register a detector whose module is imported on first use (heavy dependencies)."""
    if name in _REGISTRY or name in _LAZY:
        raise ValueError(f"detector {name!r} is already registered")
    _LAZY[name] = loader


def load_entry_points() -> list[str]:
    """Register third-party detectors from the ``dqpulse.detectors`` entry-point group."""
    global _entry_points_loaded
    _entry_points_loaded = True
    loaded = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _REGISTRY or entry.name in _LAZY:
            continue
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise ConfigError(f"entry point {entry.name!r} is not a dqpulse Detector class")
        register(entry.name)(cls)
        loaded.append(entry.name)
    return loaded


def get(name: str) -> type[Detector]:
    """The detector class registered under ``name``."""
    _ensure_builtins()
    if name in _LAZY:
        cls = _LAZY.pop(name)()
        cls.name = name
        _REGISTRY[name] = cls
    if name not in _REGISTRY and not _entry_points_loaded:
        load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(available()))
        if name == "autoencoder":
            raise ConfigError(
                "detector 'autoencoder' needs PyTorch, which is not installed: "
                "pip install 'dqpulse[ml]'"
            ) from None
        raise ConfigError(f"unknown detector {name!r}; known detectors: {known}") from None


def create(name: str, **params: Any) -> Detector:
    """A new detector ``name`` built with ``params`` (unknown params raise ConfigError)."""
    cls = get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"detector {name!r}: {exc}") from exc


def available() -> list[str]:
    """Names of every registered detector (lazily loaded ones included)."""
    _ensure_builtins()
    return sorted({*_REGISTRY, *_LAZY})


def _ensure_builtins() -> None:
    # Importing the package registers the built-in detectors.
    import dqpulse.detectors  # noqa: F401
