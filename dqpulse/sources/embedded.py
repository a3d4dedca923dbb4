"""The built-in stream source: realistic events with injected problems, no Kafka needed.

Used by ``dqpulse demo`` and by the incident benchmark. It implements the same
``Source`` interface as the Kafka sources, on a simulated clock: ``clock()`` returns
simulated epoch seconds, so a day of data can run in minutes. Problems are data
(``Injection``), so a benchmark can label exactly when each one happened.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from dqpulse.records import PartitionBatch, RawMessage
from dqpulse.sources.base import AssignCallback, OffsetReset, RevokeCallback, TopicPartition

INJECTION_KINDS = (
    "silence",            # topic goes silent
    "volume_drop",        # rate x 0.2
    "volume_spike",       # rate x 4
    "seasonal_shift",     # daily pattern shifted by 6 hours
    "null_spike",         # field null ratio -> 0.6
    "distribution_shift", # numeric field mean x 3
    "category_explosion", # categorical field gets many new values
    "new_field",          # an extra field appears
    "removed_field",      # a field disappears
    "type_change",        # a numeric field arrives as a string
    "duplicate_burst",    # 30% of records repeat a key
    "late_burst",         # 40% of records arrive with event time minutes old
)
#: Kinds the embedded source also understands but that are not scheduled like the others:
#: an 80% drop held for exactly three windows, and a permanent halving of the rate (a
#: regime change: one incident at its start, then the new normal).
EXTRA_INJECTION_KINDS = (
    "short_drop",         # rate x 0.2
    "level_shift",        # rate x 0.5, meant to last until the end of the stream
)


@dataclass(frozen=True, slots=True)
class Injection:
    kind: str
    topic: str
    start: float      # simulated epoch seconds
    end: float
    field: str | None = None


@dataclass
class StreamProfile:
    """Shape of one simulated topic: records per second with a daily and weekly season."""

    topic: str
    base_rate: float = 5.0
    partitions: int = 2
    daily_amplitude: float = 0.5
    weekly_weekend_factor: float = 0.7
    noise: float = 0.08
    kind: str = "orders"   # "orders" | "payments" | "clicks"
    # Slow multiplicative noise on the rate (log-AR(1), updated each simulated minute):
    # real traffic wanders for tens of minutes, which per-second noise averages away.
    level_noise: float = 0.0
    level_noise_minutes: float = 30.0


@dataclass
class EmbeddedSource:
    profiles: Sequence[StreamProfile]
    start: float
    clock: Callable[[], float]
    injections: Sequence[Injection] = ()
    seed: int = 7
    _rng: random.Random = field(init=False)
    _generated_until: dict[str, float] = field(init=False)
    _offsets: dict[TopicPartition, int] = field(init=False)
    _buffers: dict[TopicPartition, list[RawMessage]] = field(init=False)
    _assigned: set[TopicPartition] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._generated_until = {p.topic: self.start for p in self.profiles}
        self._offsets = {}
        self._buffers = {}
        self._assigned = set()
        self._positions: dict[TopicPartition, int] = {}
        self._log: dict[TopicPartition, list[RawMessage]] = {}
        self._base: dict[TopicPartition, int] = {}  # offset of _log[tp][0] after trimming
        self._level: dict[str, tuple[float, float]] = {}  # topic -> (minute, log level)

    # -- Source interface ----------------------------------------------------------------
    def subscribe(self, topics: Sequence[str], *, on_assign: AssignCallback,
                  on_revoke: RevokeCallback) -> None:
        partitions = [(p.topic, i) for p in self.profiles if p.topic in topics
                      for i in range(p.partitions)]
        starts = on_assign(partitions)
        for tp in partitions:
            self._assigned.add(tp)
            self._log.setdefault(tp, [])
            self._positions[tp] = starts.get(tp) or 0

    def poll(self, max_records: int, timeout_s: float) -> list[PartitionBatch]:
        self._generate(self.clock())
        out: list[PartitionBatch] = []
        taken = 0
        for tp in sorted(self._assigned):
            log = self._log[tp]
            position = self._positions[tp]
            base = self._base.get(tp, 0)
            take = log[position - base:position - base + max(1, max_records - taken)]
            if take:
                out.append(PartitionBatch.from_messages(take))
            taken += len(take)
            self._positions[tp] = position + len(take)
            if taken >= max_records:
                break
        return out

    def take_resets(self) -> list[OffsetReset]:
        return []  # its positions are always in its log

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        # Keep memory bounded in long demos: nothing before a committed offset is re-read.
        for tp, offset in offsets.items():
            base = self._base.get(tp, 0)
            drop = min(offset, self._positions.get(tp, 0)) - base
            if drop > 10_000:
                del self._log[tp][:drop]
                self._base[tp] = base + drop

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        self._positions[(topic, partition)] = offset or 0

    def end_offsets(self, partitions: Sequence[TopicPartition], *,
                    fresh: bool = True) -> dict[TopicPartition, int]:
        self._generate(self.clock())
        return {tp: self._base.get(tp, 0) + len(self._log.get(tp, [])) for tp in partitions}

    def partition_count(self, topic: str) -> int:
        return next(p.partitions for p in self.profiles if p.topic == topic)

    def close(self) -> None:
        return None

    # -- generation ----------------------------------------------------------------------
    def active(self, topic: str, at: float) -> list[Injection]:
        return [i for i in self.injections if i.topic == topic and i.start <= at < i.end]

    def rate(self, profile: StreamProfile, at: float, shift_hours: float = 0.0) -> float:
        hour = ((at / 3600.0) + shift_hours) % 24.0
        daily = 1.0 + profile.daily_amplitude * math.sin((hour - 9.0) / 24.0 * 2 * math.pi)
        weekday = datetime.fromtimestamp(at, UTC).weekday()
        weekly = profile.weekly_weekend_factor if weekday >= 5 else 1.0
        return max(profile.base_rate * daily * weekly, 0.0)

    def _generate(self, until: float) -> None:
        for profile in self.profiles:
            since = self._generated_until[profile.topic]
            step = 1.0
            t = since
            while t + step <= until:
                self._generate_second(profile, t)
                t += step
            self._generated_until[profile.topic] = t

    def _generate_second(self, profile: StreamProfile, t: float) -> None:
        active = {i.kind: i for i in self.active(profile.topic, t)}
        if "silence" in active:
            return
        shift = 6.0 if "seasonal_shift" in active else 0.0
        rate = self.rate(profile, t, shift)
        if "volume_drop" in active or "short_drop" in active:
            rate *= 0.2
        if "level_shift" in active:
            rate *= 0.5
        if "volume_spike" in active:
            rate *= 4.0
        rate *= max(0.0, 1.0 + self._rng.gauss(0.0, profile.noise))
        if profile.level_noise > 0.0:
            rate *= math.exp(self._slow_level(profile, t))
        count = poisson(self._rng, rate)
        for _ in range(count):
            event_time = t + self._rng.random()
            if "late_burst" in active and self._rng.random() < 0.4:
                event_time -= self._rng.uniform(120.0, 600.0)
            record = self._record(profile, event_time, active)
            partition = self._rng.randrange(profile.partitions)
            tp = (profile.topic, partition)
            log = self._log.setdefault(tp, [])
            offset = self._base.get(tp, 0) + len(log)
            log.append(RawMessage(profile.topic, partition, offset, int(t * 1000),
                                  orjson.dumps(record), None))

    def _slow_level(self, profile: StreamProfile, t: float) -> float:
        minute = math.floor(t / 60.0)
        last_minute, level = self._level.get(profile.topic, (minute - 1.0, 0.0))
        if minute != last_minute:
            phi = math.exp(-1.0 / max(profile.level_noise_minutes, 1e-9))
            level = phi * level + math.sqrt(1.0 - phi * phi) * self._rng.gauss(
                0.0, profile.level_noise)
            self._level[profile.topic] = (minute, level)
        return level

    def _record(self, profile: StreamProfile, event_time: float,
                active: Mapping[str, Injection]) -> dict[str, object]:
        rng = self._rng
        ts = datetime.fromtimestamp(event_time, UTC).isoformat()
        order_id = rng.getrandbits(48)
        if "duplicate_burst" in active and rng.random() < 0.3:
            order_id = 42
        amount: object = round(rng.lognormvariate(3.5, 0.6), 2)
        if rng.random() < 0.01:
            amount = None
        null_field = active["null_spike"].field if "null_spike" in active else None
        country = rng.choices(["DE", "FR", "US", "GB", "NL", "ES"],
                              weights=[30, 20, 25, 10, 10, 5])[0]
        record: dict[str, object] = {
            "order_id": order_id,
            "ts": ts,
            "amount": amount,
            "country": country,
            "status": rng.choices(["paid", "pending", "failed", "refunded"],
                                  weights=[80, 12, 5, 3])[0],
            "email": f"user{rng.randrange(10_000)}@example.com",
            "is_fraud": rng.random() < 0.03,
            "customer": {"age": rng.randint(18, 80), "segment": rng.choice(["a", "b", "c"])},
        }
        if "distribution_shift" in active:
            name = active["distribution_shift"].field or "amount"
            if isinstance(record.get(name), int | float) and not isinstance(record[name], bool):
                record[name] = round(float(record[name]) * 3.0, 2)  # type: ignore[arg-type]
        if "category_explosion" in active and rng.random() < 0.5:
            name = active["category_explosion"].field or "country"
            record[name] = "".join(rng.choices(string.ascii_uppercase, k=2)) + str(
                rng.randrange(99))
        if "type_change" in active:
            name = active["type_change"].field or "amount"
            if record.get(name) is not None:
                record[name] = f"{record[name]}"
        if "new_field" in active:
            record[active["new_field"].field or "coupon_code"] = "X" + str(rng.randrange(1000))
        if "removed_field" in active:
            record.pop(active["removed_field"].field or "email", None)
        if null_field is not None and rng.random() < 0.6:
            record[null_field] = None
        return record


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw of mean ``lam`` from ``rng`` (normal beyond a mean of 50): the
    generator's record counts, and the benches' that must match them."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1
