"""The calibrated, adaptive detector: one test per failure mode of the earlier detectors."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import pytest

from dqpulse.detectors import adaptive, create
from dqpulse.detectors.adaptive import AdaptiveDetector
from dqpulse.detectors.base import Detector
from dqpulse.detectors.calibration import TailCalibrator, log_p_to_score, score_to_log_p
from dqpulse.detectors.evidence import DailyRepeat, RepeatCounter
from dqpulse.detectors.offline import detector_for_kind
from dqpulse.detectors.scoring import default_params_for

STEP = 300.0  # 5-minute windows


def feed(detector: AdaptiveDetector, values: list[float], start: int = 0) -> list[float]:
    scores = []
    for i, value in enumerate(values, start=start):
        x = {"value": value, "t": i * STEP}
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores


def test_constant_series_then_a_change_scores_below_one_and_ranks_by_size() -> None:
    scores = {}
    for jump in (1.0, 5.0, 50.0, 5000.0):
        detector = AdaptiveDetector()
        feed(detector, [10.0] * 400)
        scores[jump] = detector.score_one({"value": 10.0 + jump, "t": 400 * STEP})
    assert all(score < 1.0 for score in scores.values()), scores
    assert scores[1.0] < scores[5.0] < scores[50.0] < scores[5000.0], scores
    assert scores[5000.0] >= 0.9


def test_quantised_series_does_not_turn_one_step_into_an_alert() -> None:
    rng = random.Random(5)
    detector = AdaptiveDetector()
    # a utilisation metric reported in whole percent that mostly sits still
    values = [40.0 + (rng.random() < 0.05) * rng.choice((-1.0, 1.0)) for _ in range(600)]
    scores = feed(detector, values)
    assert max(scores[100:]) < 0.9
    assert detector.score_one({"value": 41.0, "t": 600 * STEP}) < 0.9
    assert detector.score_one({"value": 70.0, "t": 600 * STEP}) >= 0.9


def test_level_shift_alerts_at_its_start_and_is_adopted_after_the_configured_windows() -> None:
    rng = random.Random(11)
    detector = AdaptiveDetector(adopt_after=6)
    before = [200.0 + rng.gauss(0.0, 5.0) for _ in range(500)]
    after = [320.0 + rng.gauss(0.0, 5.0) for _ in range(200)]
    scores = feed(detector, before + after)
    shifted = scores[500:]
    assert shifted[0] >= 0.9
    alerting = [i for i, score in enumerate(shifted) if score >= 0.9]
    assert alerting == list(range(len(alerting))), "one episode, from the first window on"
    assert len(alerting) <= 6
    assert max(shifted[10:]) < 0.9


def test_confirmed_verdict_keeps_the_old_normal() -> None:
    rng = random.Random(11)
    detector = AdaptiveDetector(adopt_after=6)
    feed(detector, [200.0 + rng.gauss(0.0, 5.0) for _ in range(500)])
    first = {"value": 320.0, "t": 500 * STEP}
    detector.score_one(first)
    detector.learn_one(first)
    detector.feedback(first, "confirmed")
    scores = feed(detector, [320.0 + rng.gauss(0.0, 5.0) for _ in range(30)], start=501)
    assert min(scores) >= 0.9


def test_count_band_never_goes_below_zero() -> None:
    name, params = detector_for_kind("volume", "adaptive", lower=0.0, count_noise=1.0)
    detector = create(name, **params)
    assert isinstance(detector, AdaptiveDetector)
    rng = random.Random(2)
    feed(detector, [float(max(0, round(rng.gauss(3.0, 3.0)))) for _ in range(500)])
    explanation = detector.explain({"value": 0.0, "t": 500 * STEP})
    assert explanation["expected_low"] is not None and explanation["expected_low"] >= 0.0
    assert explanation["expected_high"] > explanation["expected"] >= 0.0


def test_sudden_volume_drop_is_caught_on_a_count_series() -> None:
    rng = random.Random(4)
    detector = AdaptiveDetector(lower=0.0, count_noise=1.0)
    normal = [float(rng.gauss(1000.0, 40.0)) for _ in range(600)]
    scores = feed(detector, normal)
    assert max(scores[100:]) < 0.9
    dropped = feed(detector, [150.0, 160.0, 140.0], start=600)
    assert min(dropped) >= 0.9


def test_gaussian_noise_alerts_about_as_rarely_as_the_score_says() -> None:
    rng = random.Random(9)
    detector = AdaptiveDetector()
    scores = feed(detector, [rng.gauss(50.0, 3.0) for _ in range(20_000)])[500:]
    rate = sum(score >= 0.9 for score in scores) / len(scores)
    assert rate < 1e-3  # 0.9 means a tail probability of 1e-4
    assert sum(score >= 1.0 for score in scores) == 0


def test_state_is_small_and_round_trips() -> None:
    rng = random.Random(1)
    detector = AdaptiveDetector()
    feed(detector, [100.0 + 30.0 * math.sin(i / 20.0) + rng.gauss(0, 2) for i in range(3000)])
    blob = detector.to_bytes()
    assert len(blob) < 16 * 1024
    again = Detector.from_bytes(blob)
    probe = {"value": 160.0, "t": 3000 * STEP}
    assert again.score_one(probe) == detector.score_one(probe)
    assert again.explain(probe) == detector.explain(probe)


def spiky_daily(seed: int, days: int = 6) -> list[float]:
    """A daily wave with bursts and drops in 3 % of its windows (what fills every part of
    the state: remembered bursts, episodes, the record range, the daily repeat)."""
    rng = random.Random(seed)
    values = []
    for i in range(288 * days):
        value = 100.0 + 30.0 * math.sin(2.0 * math.pi * i / 288) + rng.gauss(0.0, 3.0)
        values.append(value * rng.choice([5.0, 20.0, 0.1]) if rng.random() < 0.03 else value)
    return values


def test_a_state_stays_well_under_16_kib_at_every_window_of_a_spiky_series() -> None:
    # the budget is per series at any time, not at the end of a run: on NAB the largest
    # state came mid-series (16.7 KB before the side pairs were folded, 12.6 KB after)
    for seed in range(2):
        detector = create("adaptive", **default_params_for("distribution.mean"))
        sizes = []
        for i, value in enumerate(spiky_daily(seed)):
            feed(detector, [value], start=i)  # type: ignore[arg-type]
            if i % 25 == 0:
                sizes.append(len(detector.to_bytes()))
        assert max(sizes) < 14 * 1024, max(sizes)  # 16 KiB with 2 KiB to spare


def test_side_pairs_save_folded_and_states_saved_unfolded_still_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dqpulse.detectors.base import UnsavedCaches
    from dqpulse.detectors.calibration import FoldedPair

    values = spiky_daily(5, days=4)
    straight = create("adaptive", **default_params_for("distribution.mean"))
    feed(straight, values[:800])  # type: ignore[arg-type]
    folded = straight.to_bytes()
    assert b"FoldedPair" in folded
    with monkeypatch.context() as patch:  # the layout saved before the fold
        patch.setattr(AdaptiveDetector, "__getstate__", UnsavedCaches.__getstate__)
        unfolded = straight.to_bytes()
    assert b"FoldedPair" not in unfolded
    assert len(unfolded) - len(folded) > 3500  # two histories of 256 values fewer
    for blob in (folded, unfolded):
        again = Detector.from_bytes(blob)
        for i, value in enumerate(values[800:1100], start=800):
            x = {"value": value, "t": i * STEP}
            assert again.score_one(x) == straight.score_one(x)
            assert again.explain(x) == straight.explain(x)
            again.learn_one(x)
            straight.learn_one(x)
        # the same state, part by part (whole pickles differ in which equal floats they
        # share: a loaded state holds copies)
        assert {key: pickle.dumps(value) for key, value in again.__getstate__().items()} \
            == {key: pickle.dumps(value) for key, value in straight.__getstate__().items()}
        straight = Detector.from_bytes(blob)  # the same start for the second layout
    # two calibrators that are not the sides of one deviation are saved as they are
    up, down = TailCalibrator(size=8), TailCalibrator(size=8)
    for value in (1.0, 2.0, 3.0):
        up.add(value)
        down.add(value)
    assert FoldedPair.fold(up, down) is None
    detector = AdaptiveDetector()
    feed(detector, [10.0, 11.0, 9.0] * 20)
    detector._drift_down.add(5.0)  # one more value than its side: no longer a pair
    state = detector.__getstate__()
    assert isinstance(state["_up"], FoldedPair) and "_down" not in state
    assert isinstance(state["_drift_down"], TailCalibrator)
    again = Detector.from_bytes(detector.to_bytes())
    assert list(again._drift_down._fifo) == list(detector._drift_down._fifo)
    assert list(again._down._fifo) == list(detector._down._fifo)


@pytest.mark.parametrize("name", ["adaptive", "seasonal"])
def test_a_windows_shared_computation_is_fresh_after_feedback_and_never_saved(name: str) -> None:
    """score_one, explain and learn_one of one window compute it once (a memo); feedback
    in between is seen, and neither the memo nor the located buckets enter the state."""
    rng = random.Random(4)
    detector = create(name)
    for i in range(600):
        detector.learn_one({"value": rng.gauss(100.0, 3.0), "t": i * STEP})
    x = {"value": 125.0, "t": 600 * STEP}
    before = detector.score_one(x)
    assert before >= 0.9
    detector.feedback(x, "false_positive")
    after = detector.score_one(x)
    assert after < before
    again = Detector.from_bytes(detector.to_bytes())
    assert "_memo" not in vars(again)
    assert again.score_one(x) == after
    scored, plain = (Detector.from_bytes(detector.to_bytes()) for _ in range(2))
    y = {"value": 101.0, "t": 601 * STEP}
    scored.score_one(y)
    scored.explain(y)
    scored.learn_one(y)
    plain.learn_one(y)
    z = {"value": 118.0, "t": 602 * STEP}
    assert scored.score_one(z) == plain.score_one(z)
    assert scored.to_bytes() == plain.to_bytes()


def test_calibrator_tail_is_monotone_and_never_saturates() -> None:
    calibrator = TailCalibrator()
    rng = random.Random(0)
    for _ in range(256):
        calibrator.add(abs(rng.gauss(0.0, 1.0)))
    deviations = [0.5, 1, 2, 4, 8, 16, 1e3, 1e6, 1e12]
    log_ps = [calibrator.log_p(d) for d in deviations]
    assert log_ps == sorted(log_ps, reverse=True)
    assert log_p_to_score(log_ps[-1]) < 1.0
    boundary = calibrator.deviation_at(score_to_log_p(0.9))
    assert log_p_to_score(calibrator.log_p(boundary)) == pytest.approx(0.9, abs=1e-6)


def test_a_jump_that_recurs_at_the_same_time_every_day_stops_alerting() -> None:
    # a square wave with a little noise: 20 all day, 80 from 09:00 to 18:00 (a nightly
    # batch looks the same)
    noise = random.Random(8)
    values = [(80.0 if 9 * 12 <= i % 288 < 18 * 12 else 20.0) + noise.gauss(0.0, 0.5)
              for i in range(288 * 10)]

    def first_alerts(fine_seconds: float, daily: float = 0.0
                     ) -> tuple[list[int], AdaptiveDetector, list[int]]:
        # the burst rule off: this weighs the time-of-day memory and the daily repeat alone
        detector = AdaptiveDetector(fine_seconds=fine_seconds, daily_repeat_seconds=daily,
                                    burst_runs=0)
        scores = feed(detector, values)
        morning_steps = [day for day in range(10)
                         if max(scores[day * 288 + 9 * 12:day * 288 + 9 * 12 + 4]) >= 0.9]
        return sorted({i // 288 for i, s in enumerate(scores) if s >= 0.9}), detector, \
            morning_steps

    days_without_memory, _, steps_without_memory = first_alerts(0.0)
    days, detector, _ = first_alerts(300.0)
    assert len(days_without_memory) >= 7  # the hourly profile alone blurs the step daily
    # no more unusual than yesterday at this time: the daily repeat alone quiets the
    # morning step on some days (a day scoring higher than the day before still alerts)
    _, _, steps_with_daily_repeat = first_alerts(0.0, daily=900.0)
    # (the third day's step may report just under the threshold: the calibration has just
    # restarted on the hourly profile, and the step then scores no higher than the
    # windows that alerted yesterday, which the repeat count holds)
    assert len(steps_without_memory) >= 9, steps_without_memory
    assert len(steps_with_daily_repeat) < len(steps_without_memory), steps_with_daily_repeat
    assert days and max(days) <= 3, days  # with the memory: learned within the first days
    # a jump at another time of day still alerts on day 11
    assert detector.score_one({"value": 80.0, "t": (288 * 10 + 3 * 12) * STEP}) >= 0.9


def test_a_state_of_the_previous_layout_starts_a_fresh_baseline() -> None:
    from dqpulse.detectors.base import DetectorStateError
    from dqpulse.detectors.scoring import SeriesScorer

    detector = AdaptiveDetector()
    feed(detector, [10.0] * 50)
    blob = bytearray(detector.to_bytes())
    version_at = blob.index(b"adaptive") + len(b"adaptive")
    blob[version_at:version_at + 2] = (1).to_bytes(2, "big")  # written by the version-1 layout
    with pytest.raises(DetectorStateError):
        Detector.from_bytes(bytes(blob))
    # the scorer catches it and starts a fresh baseline for the series
    from dqpulse.spec import DatasetSpec
    scorer = SeriesScorer(DatasetSpec(name="orders", topic="orders"))
    fresh = scorer._detector("volume.bytes|", "adaptive", {}, {"volume.bytes|": bytes(blob)})
    assert isinstance(fresh, AdaptiveDetector) and fresh.n_learned == 0
    same = scorer._detector("volume.bytes|", "adaptive", {},
                            {"volume.bytes|": detector.to_bytes()})
    assert isinstance(same, AdaptiveDetector) and same.n_learned == 50


def episodes(scores: list[float], threshold: float = 0.9) -> int:
    """Runs of windows at or above the threshold."""
    return sum(1 for i, score in enumerate(scores)
               if score >= threshold and (i == 0 or scores[i - 1] < threshold))


def test_a_burst_that_recurs_through_the_day_stops_opening_alerts() -> None:
    def bursts(**params: float) -> list[float]:
        rng = random.Random(17)
        # spike_memory 0: bursts stay out of the calibration, only the repeat count acts
        detector = AdaptiveDetector(spike_memory=0.0, **params)  # type: ignore[arg-type]
        feed(detector, [100.0 + rng.gauss(0.0, 3.0) for _ in range(600)])
        values = [100.0 + rng.gauss(0.0, 3.0) + (80.0 if i % 20 == 0 else 0.0)
                  for i in range(200)]
        return feed(detector, values, start=600)

    plain, counted = bursts(repeat_windows=0), bursts()
    assert episodes(plain) == 10, "without the count every burst alerts"
    # the first bursts alert while they are news (a burst a little more unusual than
    # every earlier one still does); once four of the last day were as unusual, none
    assert 1 <= episodes(counted) <= 6
    assert max(counted[120:]) < 0.9


def test_a_defect_seen_once_today_alerts_again_and_a_third_time_is_a_pattern() -> None:
    def plateaus(**params: int) -> list[float]:
        rng = random.Random(5)
        detector = AdaptiveDetector(**params)  # type: ignore[arg-type]
        feed(detector, [40.0 + rng.gauss(0.0, 2.0) for _ in range(600)])
        # the same 5-window shift (x3) at three times of one day, an hour or more apart
        starts = (20, 80, 140)
        values = [40.0 + rng.gauss(0.0, 2.0)
                  + (80.0 if any(s <= i < s + 5 for s in starts) else 0.0)
                  for i in range(240)]
        scores = feed(detector, values, start=600)
        return [max(scores[s:s + 6]) for s in starts]

    one_run, two_runs = plateaus(repeat_runs=1), plateaus(repeat_runs=2)
    assert one_run[0] >= 0.9 and one_run[1] < 0.9, one_run  # 5 windows of one earlier run
    assert two_runs[0] >= 0.9 and two_runs[1] >= 0.9, two_runs  # one earlier run: news
    assert two_runs[2] < 0.9, two_runs  # two earlier runs today: how the series behaves


def test_a_shift_hovering_about_the_threshold_is_one_alert_not_one_per_crossing() -> None:
    detector = AdaptiveDetector(adopt_after=None, record_windows=0, repeat_windows=0)
    reference = AdaptiveDetector(adopt_after=None, record_windows=0, repeat_windows=0, hold=0)
    rng = random.Random(23)
    warm = [100.0 + rng.gauss(0.0, 2.0) for _ in range(500)]
    feed(detector, warm)
    feed(reference, warm)
    # alternating windows far out and a little out
    hovering = [100.0 + (30.0 if i % 2 == 0 else 8.0) for i in range(12)]
    held, plain = feed(detector, hovering, start=500), feed(reference, hovering, start=500)
    assert episodes(plain) > 1
    assert episodes(held) == 1


def test_a_value_beyond_weeks_of_history_ranks_above_the_same_residual_inside_it() -> None:
    rng = random.Random(29)
    values = [100.0 + rng.gauss(0.0, 3.0) for _ in range(1200)]
    values[300] = 140.0  # once, long ago, the series went this high
    with_record = AdaptiveDetector()
    without = AdaptiveDetector(record_windows=0)
    feed(with_record, values)
    feed(without, values)
    probe = {"value": 125.0, "t": 1200 * STEP}
    beyond = {"value": 145.0, "t": 1200 * STEP}
    assert with_record.score_one(probe) == pytest.approx(without.score_one(probe))
    assert with_record.score_one(beyond) > without.score_one(beyond)


def test_a_daily_job_whose_start_wanders_alerts_on_its_first_days_only() -> None:
    # a 2-window burst every day at about 03:00, its start moved by up to 30 minutes
    def daily_job(**params: int) -> tuple[list[float], AdaptiveDetector]:
        rng = random.Random(7)
        starts = [36 + rng.randint(-6, 6) for _ in range(12)]
        values = [100.0 + rng.gauss(0.0, 3.0)
                  + (60.0 + rng.gauss(0.0, 6.0) if 0 <= i % 288 - starts[i // 288] < 2 else 0.0)
                  for i in range(288 * 12)]
        detector = AdaptiveDetector(**params)  # type: ignore[arg-type]
        scores = feed(detector, values)
        return [max(scores[day * 288 + start - 1:day * 288 + start + 3])
                for day, start in enumerate(starts)], detector

    jobs, detector = daily_job()
    every_day, _ = daily_job(daily_job_days=0)
    assert jobs[0] >= 0.9 and jobs[1] >= 0.9, jobs  # news on its first two days
    assert sum(score >= 0.9 for score in every_day[2:]) >= 6, every_day
    assert sum(score >= 0.9 for score in jobs[2:]) <= 2, jobs
    # a break beyond every earlier value (the job's included) at the job's time alerts
    assert detector.score_one({"value": 1000.0, "t": (288 * 12 + 36) * STEP}) >= 0.9
    with pytest.raises(ValueError, match="daily_job_days"):
        AdaptiveDetector(daily_job_days=3)


def test_a_daily_job_a_little_higher_than_before_is_still_the_daily_job() -> None:
    # a quiet, quantised CPU (0.07-0.13) with a daily job at 12:30 (one window at 1.45):
    # on the next days it runs 5 % higher (a few % of the range beyond every earlier
    # value) or half again as high
    def days(growth: float, **params: float) -> list[float]:
        rng = random.Random(1)
        values = [rng.choice([0.066, 0.132, 0.134]) for _ in range(288 * 3)]
        for day in range(3):
            values[day * 288 + 150] = 1.45 * growth ** day
        scores = feed(AdaptiveDetector(**params), values)  # type: ignore[arg-type]
        return [scores[day * 288 + 150] for day in range(3)]

    assert [score >= 0.9 for score in days(1.05, daily_job_margin=0.0)] == [True] * 3
    assert [score >= 0.9 for score in days(1.05)] == [True, False, False]  # the job
    assert [score >= 0.9 for score in days(1.5)] == [True] * 3  # beyond by far: news


def test_a_daily_repeat_saved_before_it_kept_a_third_day_loads() -> None:
    daily = DailyRepeat(900.0)
    daily.add(86400.0 + 3600.0, 0.95)
    state = dict(daily.__dict__)
    del state["before2"]  # as pickled by the previous dqpulse
    loaded = DailyRepeat.__new__(DailyRepeat)
    loaded.__setstate__(state)
    assert loaded.yesterday(2 * 86400.0 + 3600.0) == pytest.approx(0.95, abs=1e-4)
    assert loaded.each_day(3 * 86400.0 + 3600.0) == 0.0  # not two days running
    loaded.add(2 * 86400.0 + 3600.0, 0.93)
    assert loaded.each_day(3 * 86400.0 + 3600.0) == pytest.approx(0.93, abs=1e-4)


def test_a_young_series_first_windows_do_not_hide_its_next_break(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # integer counts about 20: the second window's z is standardised by the floors alone
    # (no residual seen yet) and can be 10; in the calibration, that made a 5x category
    # explosion 60 windows later score under 0.9 in some of these series. (A series whose
    # unit is unknown: a distinct count's unit of 1 alone keeps that z small.)
    def explosion_scores() -> list[float]:
        scores = []
        for seed in range(20):
            rng = random.Random(seed)
            detector = create("adaptive", lower=0.0)
            feed(detector, [float(round(rng.gauss(20.0, 1.5))) for _ in range(60)])
            scores.append(detector.score_one({"value": 100.0, "t": 60 * STEP}))
        return scores

    assert min(explosion_scores()) >= 0.9
    monkeypatch.setattr(adaptive, "YOUNG_WINDOWS", 0)  # the first windows' z as they come
    assert sum(score < 0.9 for score in explosion_scores()) >= 4


def test_a_recurring_shift_held_for_windows_alerts_though_the_first_entered_the_tail(
) -> None:
    # a field's mean x3 for 6 windows, and again x2.5 seven hours later: the first burst's
    # deviations entered the calibration (spike_memory), so the second one's windows are
    # each just beyond the boundary by their own tail probability and just under it after
    # the report share; held for three windows in a row, it reports its own probability
    def second_caught(sustain_windows: int) -> tuple[int, int]:
        caught = elsewhere = 0
        for seed in range(1, 11):
            rng = random.Random(seed)
            detector = AdaptiveDetector(min_scale=1e-6, sustain_windows=sustain_windows)
            first, second = 288 * 4, 288 * 4 + 6 + 84
            scores = []
            for i in range(second + 40):
                value = 40.0 + rng.gauss(0.0, 2.0)
                value *= 3.0 if first <= i < first + 6 else 2.5 if second <= i < second + 6 else 1
                x = {"value": value, "t": i * 300.0}
                scores.append(detector.score_one(x))
                detector.learn_one(x)
            caught += max(scores[second:second + 8]) >= 0.9
            elsewhere += sum(s >= 0.9 for i, s in enumerate(scores[288:], start=288)
                             if not (first <= i < first + 8 or second <= i < second + 8))
        return caught, elsewhere

    held, plain = second_caught(2), second_caught(0)
    assert held[0] == 10, held
    assert plain[0] <= 8, plain  # without it, the recurrence is missed on some seeds
    assert held[1] <= plain[1] + 4  # and it costs few alerts elsewhere (noise held 3 windows)



def test_a_remembered_burst_does_not_raise_the_cap_of_the_next() -> None:
    # a series constant at 6, bursting to about 150 for 7 windows every two hours: each
    # burst that ended entered the calibration (spike_memory) capped at 5x the boundary,
    # and the cap was taken from a boundary the earlier bursts had raised, so it grew 5x
    # per burst: the third burst scored 0.84 and was learned, its first step became the
    # series' resolution (28), and the fourth scored under 0.83 from end to end
    detector = create("adaptive", lower=0.0)  # spike_memory 5, no unit
    burst = [52.0, 182.0, 185.0, 183.0, 172.0, 171.0, 134.0]
    small = [34.0, 97.0, 116.0, 106.0, 126.0, 91.0, 75.0]
    starts = {300: burst, 420: burst, 540: small, 660: burst}
    values = [6.0] * 800
    for start, shape in starts.items():
        values[start:start + len(shape)] = shape
    scores = feed(detector, values)
    for start, shape in starts.items():
        assert min(scores[start:start + len(shape)]) >= 0.9, (start, scores[start:start + 7])
    quiet = [s for i, s in enumerate(scores[100:], start=100)
             if not any(a <= i < a + 10 for a in starts)]
    assert max(quiet) < 0.9  # and the return to 6 is no drop


def test_a_distinct_count_moves_by_whole_values() -> None:
    # a flag field with its 2 values in every window, then a window without a single
    # flagged record (3 % of 180 records: once in about 230 windows): one value less is one
    # unit off, not 50 scales of 1 % of 2; an explosion of a 6-value field still alerts on
    # each of its windows, and the return to 6 is quiet
    def scores(params: dict[str, float], normal: float, change: list[float]) -> list[float]:
        detector = create("adaptive", **params)
        return feed(detector, [normal] * 300 + change + [normal] * 20)[300:]

    defaults = default_params_for("distribution.distinct_count")
    assert scores(defaults, 2.0, [1.0])[0] < 0.9
    assert scores({**defaults, "unit": 0.0}, 2.0, [1.0])[0] >= 0.9  # as before the unit
    explosion = scores(defaults, 6.0, [52.0, 182.0, 185.0, 134.0])
    assert min(explosion[:4]) >= 0.9 and max(explosion[4:]) < 0.9, explosion
    # and every explosion alerts, however often it comes back: 4 in 6 hours, then the 5th
    # the next day 20 minutes after the time of the 1st (the repeat count and the same
    # time yesterday would hold the 3rd on under the threshold)
    detector = create("adaptive", **defaults)
    values = [6.0] * (864 + 288 + 60)  # three quiet days first: the daily profile is warm
    starts = [864, 936, 1008, 1080, 864 + 288 + 4]
    for start in starts:
        values[start:start + 4] = [52.0, 182.0, 185.0, 134.0]
    seen = feed(detector, values)
    assert all(min(seen[a:a + 4]) >= 0.9 for a in starts), [seen[a:a + 4] for a in starts]
    repeated = create("adaptive", **{**defaults, "repeat_windows": 288,
                                     "daily_repeat_seconds": 900.0})
    held = feed(repeated, values)
    assert min(held[1008:1012]) < 0.9 and min(held[1156:1160]) < 0.9  # the repeat rules


def test_hourly_windows_are_forecast_by_their_own_hour() -> None:
    # Hourly windows stamped on the hour, a daily rise at 9: interpolating from the buckets'
    # middles, the profile forecast 09:00 halfway between the 08:00 and 09:00 buckets (50,
    # not 80), and half of every morning's rise was read as noise
    for seed in range(3):
        rng = random.Random(seed)
        detector = AdaptiveDetector()
        for h in range(24 * 10 + 9):
            day, hour = divmod(h, 24)
            value = (80.0 if 9 <= hour < 18 else 20.0) + rng.gauss(0.0, 1.0)
            detector.learn_one({"value": value, "t": h * 3600.0})
        x = {"value": 80.0, "t": (24 * 10 + 9) * 3600.0}
        assert abs(detector.explain(x)["expected"] - 80.0) < 3.0
        assert detector.score_one(x) < 0.5


def _hourly_day(hour: int, rng: random.Random, peak: float = 80.0) -> float:
    return (peak if 9 <= hour < 18 else 20.0) + rng.gauss(0.0, 1.0)


def test_a_doubled_daily_peak_alerts_on_hourly_windows() -> None:
    # the calibration held the first two days' morning rises, forecast by a level (z 40 to
    # 140), for ten days of hourly windows: a day whose peak doubled (z 14 by the hourly
    # profile) scored 0.5-0.6. The first window the profile forecasts restarts it.
    for seed in range(4):
        rng = random.Random(seed)
        detector = AdaptiveDetector()
        peak_scores = []
        for h in range(24 * 11):
            day, hour = divmod(h, 24)
            x = {"value": _hourly_day(hour, rng, 150.0 if day == 10 else 80.0),
                 "t": h * 3600.0}
            score = detector.score_one(x)
            if day < 10 and h >= 24 * 3:
                assert score < 0.9, (seed, h, score)
            if day == 10 and 9 <= hour < 18:
                peak_scores.append(score)
            detector.learn_one(x)
        assert peak_scores[0] >= 0.9, (seed, peak_scores)


def test_only_a_season_profile_that_clearly_fits_better_restarts_the_calibration() -> None:
    rng = random.Random(3)
    daily = AdaptiveDetector()
    for h in range(47):
        daily.learn_one({"value": _hourly_day(h % 24, rng), "t": h * 3600.0})
    assert not daily._season_found and max(daily._up._sorted) > 20.0  # the first rise
    for h in range(47, 60):
        daily.learn_one({"value": _hourly_day(h % 24, rng), "t": h * 3600.0})
    assert daily._season_found and len(daily._up) < 13 and max(daily._up._sorted) < 5.0
    # white noise (this seed): the hourly profile wins by chance, the history stays
    noise = random.Random(4)
    flat = AdaptiveDetector()
    for h in range(24 * 6):
        flat.learn_one({"value": 50.0 + noise.gauss(0.0, 1.0), "t": h * 3600.0})
    assert flat._season_found and len(flat._up) >= 24 * 6 - 4


def test_a_daily_step_that_alerted_on_a_new_series_first_day_does_not_on_its_second() -> None:
    # business hours from the first day: about 20 at night, about 70 from 09:00 to 18:00;
    # a level forecasts the series until a daily profile has seen two days
    rng = random.Random(5)
    values = [(70.0 + rng.gauss(0.0, 2.0)) if 108 <= i % 288 < 216 else 20.0 + rng.gauss(0.0, 1.0)
              for i in range(288 + 180)]

    def fed(upto: int, **params: int) -> tuple[list[float], AdaptiveDetector]:
        detector = AdaptiveDetector(**params)  # type: ignore[arg-type]
        return feed(detector, values[:upto]), detector

    scores, _ = fed(len(values))
    first_open, second_open = scores[108:120], scores[288 + 108:288 + 120]
    assert max(first_open) >= 0.9, first_open  # news on the first day
    assert max(second_open) < 0.9, second_open  # the same step on the second is not
    unruled, _ = fed(len(values), daily_job_days=0)  # without the rule it alerts again
    assert max(unruled[288 + 108:288 + 120]) >= 0.9
    # an opening step beyond every value the series has had still alerts
    _, before_opening = fed(288 + 108)
    assert before_opening.score_one({"value": 400.0, "t": (288 + 108) * STEP}) >= 0.9


def _backup_bursts(rng: random.Random,
                   height: Callable[[int], float]) -> tuple[list[float], list[int]]:
    """(values, where each burst starts) of a quiet series (40-110) with a backup job's
    10 bursts (14 kB, ``height(k)`` bytes, 9 kB), 8-20 windows apart, after 600 windows."""
    values = [rng.choice([42.0, 68.4, 86.4, 113.0]) for _ in range(600)]
    bursts = []
    for k in range(10):
        values += [rng.choice([42.0, 68.4]) for _ in range(rng.randint(8, 20))]
        bursts.append(len(values))
        values += [1.4e4, height(k), 9e3]
    values += [rng.choice([42.0, 68.4]) for _ in range(30)]
    return values, bursts


def _bursts_alerted(values: list[float], bursts: list[int],
                    **params: object) -> tuple[list[bool], Detector]:
    """Whether each burst alerted under the distribution.mean defaults with ``params``,
    and the detector after the series."""
    detector = create("adaptive", **{**default_params_for("distribution.mean"), **params})
    scores = feed(detector, values)  # type: ignore[arg-type]
    return [max(scores[at:at + 3]) >= 0.9 for at in bursts], detector


def test_bursts_that_come_every_hour_stop_alerting_after_the_fourth() -> None:
    """A quiet series (40-110) that bursts to millions every 8-20 windows for hours (a
    backup job on NAB's ec2_network_in_5abac7): each burst scores 0.99+, a little higher
    than the last as the series stays quiet between them, so the repeat count (scores
    as high) never holds one. After ``burst_runs`` separate alerts in ``repeat_windows``,
    a burst no bigger than those seen is the pattern; a bigger one still alerts."""
    rng = random.Random(12)
    values, bursts = _backup_bursts(rng, lambda _: 5.2e6 * rng.uniform(0.99, 1.0))
    without, _ = _bursts_alerted(values, bursts, burst_runs=0)
    assert sum(without) >= 8, without  # every one far out: the repeat count holds few
    with_rule, _ = _bursts_alerted(values, bursts)
    assert with_rule[:4] == [True] * 4, with_rule  # the first four are incidents
    assert sum(with_rule[4:]) <= 1, with_rule
    # a burst bigger than every one before still alerts
    detector = create("adaptive", **default_params_for("distribution.mean"))
    feed(detector, values)  # type: ignore[arg-type]
    assert detector.score_one({"value": 5.0e7, "t": len(values) * STEP}) >= 0.9


def test_long_bursts_are_counted_as_runs_though_their_scores_fill_the_counter() -> None:
    """A disk that writes nothing, then writes 40-140 MB for half an hour every hour or
    two (NAB's ec2_disk_write_bytes_1ef3de on its second day). Each burst's six windows
    score 0.99+, and the repeat counter keeps the 16 highest scores: three bursts fill
    it, and the fifth burst on counted only the runs left in it (a burst after four
    alerted again). Runs at alert level are logged apart, every one counted."""
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.0, 2048.0]) for _ in range(600)]
    bursts = []
    for _ in range(8):
        values += [rng.choice([0.0, 2048.0]) for _ in range(rng.randint(10, 25))]
        bursts.append(len(values))
        values += [1.4e8 * rng.uniform(0.3, 1.0) for _ in range(6)]
    detector = create("adaptive", **default_params_for("distribution.mean"))
    scores = feed(detector, values)  # type: ignore[arg-type]
    alerted = [max(scores[at:at + 6]) >= 0.9 for at in bursts]
    assert alerted[:4] == [True] * 4, alerted
    assert not any(alerted[4:]), alerted
    # the counter itself: five runs of rising scores, the 16 highest kept
    repeats = RepeatCounter(windows=288)
    for run in range(5):
        for window in range(6):
            repeats.add(0.99 + 0.001 * run + 0.0001 * window)
        for _ in range(10):
            repeats.add(0.1)
    assert repeats.runs(0.9) == 3 and repeats.alert_runs() == 5
    # a counter saved before the run log: its runs are those of its kept scores, and
    # its next window builds the log from them
    old = RepeatCounter(windows=288)
    for score in (0.95, 0.1, 0.1, 0.1, 0.1, 0.96):
        old.add(score)
    del old.__dict__["_alert_runs"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.alert_runs() == 2
    for score in (0.1, 0.1, 0.1, 0.1, 0.97):
        restored.add(score)
    assert restored.alert_runs() == 3 and restored.alert_runs(ended=True) == 2


def test_a_window_no_more_unusual_than_twelve_alerts_of_two_weeks_opens_none() -> None:
    """How the series behaves over two weeks: once it has raised ``long_repeat_runs``
    separate alerts at least as unusual in the last ``record_windows``, the next opens
    none. The alert history is written straight into the run log here (pure logic: the
    rule's arithmetic and where it reports); ``RunPeaks`` is tested by its doctest."""
    rng = random.Random(5)
    values = [100.0 + rng.gauss(0.0, 3.0) for _ in range(2000)]
    probe = {"value": 140.0, "t": 2000 * STEP}

    def after_alerts(runs: int, peak_above: float, **params: int) -> AdaptiveDetector:
        detector = AdaptiveDetector(**params)  # type: ignore[arg-type]
        feed(detector, values)
        for _ in range(runs):  # a run of one window, then quiet long enough to end it
            for score in (peak_above, 0.0, 0.0, 0.0, 0.0):
                if detector._peaks is not None:
                    detector._peaks.add(score)
        return detector

    plain = after_alerts(0, 0.0, long_repeat_runs=0)
    score = plain.score_one(probe)
    assert score >= 0.9  # news on a quiet series
    assert after_alerts(0, 0.0).score_one(probe) == pytest.approx(score)
    ruled = after_alerts(12, score + 1e-4)
    assert ruled.threshold - 0.001 < ruled.score_one(probe) < ruled.threshold
    assert "repeat" in ruled.explain(probe)["evidence"]
    assert after_alerts(11, score + 1e-4).score_one(probe) >= 0.9  # eleven: news
    assert after_alerts(12, score - 1e-3).score_one(probe) >= 0.9  # more unusual than all
    assert after_alerts(12, score + 1e-4, long_repeat_runs=0).score_one(probe) >= 0.9


def test_bursts_each_a_hair_above_the_last_are_no_new_records() -> None:
    """The same job's bursts, each 0.1 % bigger than the one before (NAB's
    ec2_network_in_5abac7 on its first days: 5,234,830 then 5,245,440 bytes). Without a
    margin each is a record, so the burst rule never holds one and each alerts boosted;
    with ``record_margin`` (1 % of the range) the fifth on is the pattern, and a burst
    clearly beyond the range still alerts."""
    values, bursts = _backup_bursts(random.Random(31), lambda k: 5.2e6 * (1.0 + 0.001 * k))
    every_one, _ = _bursts_alerted(values, bursts, record_margin=0.0)
    assert sum(every_one) >= 7, every_one
    with_margin, detector = _bursts_alerted(values, bursts)
    assert with_margin[:4] == [True] * 4, with_margin
    assert sum(with_margin[4:]) <= 1, with_margin
    assert detector.score_one({"value": 5.2e6 * 1.05, "t": len(values) * STEP}) >= 0.9


def _taxi(t: float, rng: random.Random, factor: float = 1.0) -> float:
    """A city's trips per half hour: two daily peaks, weekends at 80 %, 5 % noise."""
    hour = (t % 86400.0) / 3600.0
    shape = 0.25 + 0.75 * (math.exp(-(((hour - 9.0) / 2.5) ** 2))
                           + 1.1 * math.exp(-(((hour - 19.0) / 3.0) ** 2)))
    weekend = 0.8 if int(t // 86400.0 + 3) % 7 >= 5 else 1.0  # day 0 is a Thursday
    return 20000.0 * shape * weekend * factor * (1.0 + rng.gauss(0.0, 0.05))


def test_a_day_of_low_traffic_is_taken_back_and_a_later_one_alerts() -> None:
    # A holiday at 40 % of the traffic is held long enough to be adopted. Moved by the
    # median difference, the night hours of the daily profiles went below zero; the next
    # morning (back to normal, which the time-of-day memory explains: no episode to adopt
    # back) the profiles relearned at their season step while their errors grew to the
    # size of the move, and a day at 65 % six weeks later scored 0.58-0.68 on these four
    # seeds (NAB's nyc_taxi has five such days in seven months). Now the profiles move by
    # the ratio and the adoption is taken back when the old level returns: 0.94-0.98.
    for seed in range(4):
        rng = random.Random(seed)
        detector = AdaptiveDetector()
        step, holiday, later = 1800.0, 40, 80
        later_scores, normal_scores, expected = [], [], []
        reloaded = False
        for i in range(48 * (later + 2)):
            t = i * step
            day = i // 48
            factor = {holiday: 0.4, later: 0.65}.get(day, 1.0)
            x = {"value": _taxi(t, rng, factor), "t": t}
            score = detector.score_one(x)
            if day == later:
                later_scores.append(score)
            elif holiday + 2 <= day < later:
                normal_scores.append(score)
                expected.append(detector.explain(x)["expected"])
            detector.learn_one(x)
            if detector._adopted is not None and not reloaded:
                # the scorer saves and loads a state every window: a pending undo survives
                again = Detector.from_bytes(detector.to_bytes())
                assert isinstance(again, AdaptiveDetector)
                assert again._adopted == detector._adopted
                detector, reloaded = again, True
        assert reloaded and detector.adoptions_undone >= 1, seed
        assert min(expected) > 0.0, seed
        assert max(later_scores) >= 0.9, (seed, max(later_scores))
        assert sum(score >= 0.9 for score in normal_scores) <= 2, seed


def test_a_whole_day_off_the_profile_alerts_before_it_widens_the_band() -> None:
    # Three special days (a holiday at 60 %, a storm at 1.4x, a day at 65 %; all
    # weekdays), each from midnight on: 2-3 scales off the profile at night, where each
    # window used to teach the scale at full weight, so by the daytime peaks the band
    # had widened until the day no longer stood out, and the more so after earlier
    # special days (4 of these 12 days scored 0.69-0.89). A residual on the side where
    # the persistence EWMA has held for an hour now teaches the scale at a quarter
    # weight (``held_noise_weight``; 1.0 is the old behaviour).
    special = {40: 0.6, 61: 1.4, 85: 0.65}

    def run(seed: int, **params: float) -> tuple[list[float], int, float]:
        rng = random.Random(seed)
        detector = AdaptiveDetector(**params)
        best = dict.fromkeys(special, 0.0)
        false_alerts = 0
        scale_before = scale_after = 0.0
        for i in range(48 * 86):
            t = i * 1800.0
            day = i // 48
            x = {"value": _taxi(t, rng, special.get(day, 1.0)), "t": t}
            score = detector.score_one(x)
            if day in special:
                best[day] = max(best[day], score)
            elif day >= 30 and day - 1 not in special:
                false_alerts += score >= 0.9
            if i == 48 * 61:
                scale_before = detector._z(x["value"], t)[2]
            detector.learn_one(x)
            if i == 48 * 61 + 12:  # 06:00 on the storm day
                scale_after = detector._z(x["value"], t)[2]
        return list(best.values()), false_alerts, scale_after / scale_before

    caught = caught_before = 0
    for seed in range(4):
        best, false_alerts, widened = run(seed)
        # session 32's behaviour: no held-noise weight, no weekly move of the memory
        best_before, _, widened_before = run(seed, held_noise_weight=1.0, weekly_memory=0.0)
        assert false_alerts <= 2, seed
        assert widened < widened_before, (seed, widened, widened_before)
        caught += sum(score >= 0.9 for score in best)
        caught_before += sum(score >= 0.9 for score in best_before)
    assert caught >= 11 and caught_before <= 9, (caught, caught_before)


def _special_days_run(seed: int, days: int, special: dict[int, float],
                      usual: Callable[[int], float],
                      **params: float) -> tuple[list[float], int]:
    """The taxi series at 30-minute windows for ``days`` days, each day at ``usual(day)`` of
    the traffic or at its factor in ``special``: the highest score of each special day, and
    the false alert episodes from day 30 on (the day after a special day left out)."""
    rng = random.Random(seed)
    detector = AdaptiveDetector(**params)
    best = dict.fromkeys(special, 0.0)
    other: list[float] = []
    for i in range(48 * days):
        t = i * 1800.0
        day = i // 48
        x = {"value": _taxi(t, rng, special.get(day, usual(day))), "t": t}
        score = detector.score_one(x)
        if day in special:
            best[day] = max(best[day], score)
        elif day >= 30 and day - 1 not in special:
            other.append(score)
        detector.learn_one(x)
    return list(best.values()), episodes(other)


def test_a_weekend_day_at_a_weekday_level_is_not_explained_by_the_weekdays_memory() -> None:
    # A Saturday or Sunday at 1.3-1.4x its usual traffic is about a weekday's level. The
    # time-of-day memory (one value per time of day, mostly weekdays) explained it: these
    # days scored 0.43-0.80 on four seeds. Moved by the hour-of-week profile's difference
    # from the hour-of-day profile (``weekly_memory``), it explains what recurs daily and
    # no longer the weekend at a weekday's level.
    special = {37: 1.35, 59: 1.3, 79: 1.4}  # day 0 is a Thursday: Sat, Sun, Sat

    def run(seed: int, **params: float) -> tuple[list[float], int]:
        return _special_days_run(seed, 86, special, lambda day: 1.0, **params)

    caught = caught_before = 0
    for seed in range(4):
        best, false_episodes = run(seed)
        best_before, _ = run(seed, weekly_memory=0.0)
        assert false_episodes <= 1, seed
        assert sum(best) > sum(best_before) + 0.6, (seed, best, best_before)
        caught += sum(score >= 0.9 for score in best)
        caught_before += sum(score >= 0.9 for score in best_before)
    assert caught >= 8 and caught_before <= 1, (caught, caught_before)


def test_a_special_day_inside_a_quieter_season_alerts() -> None:
    # Twelve days at 80 % of the traffic (a holiday fortnight) with a day at half the
    # traffic inside it, on its 4th and 11th day. The hour-of-week profile learns a bucket
    # once a week and kept forecasting the old level; its one-step error (the scale) grew
    # until the special days scored 0.5-0.84 on these seeds. Times a level that follows
    # the last day (``level_seconds``), the week's shape forecasts the season's level.
    inner = {63: 0.5, 70: 0.5}

    def run(seed: int, **params: float) -> tuple[list[float], int]:
        return _special_days_run(seed, 76, inner,
                                 lambda day: 0.8 if 60 <= day < 72 else 1.0, **params)

    for seed in range(4):
        best, false_episodes = run(seed)
        best_before, false_before = run(seed, level_seconds=0.0)
        assert best[1] >= 0.9 and max(best_before) < 0.9, (seed, best, best_before)
        assert best[0] > best_before[0], (seed, best, best_before)
        assert false_episodes <= max(false_before, 2), seed


def test_a_state_saved_before_the_levelled_profile_gains_it_when_loaded() -> None:
    # The scorer sets a param that a saved state predates to its configured value and keeps
    # the learned baseline; the levelled weekly profile is then added, not a crash.
    rng = random.Random(3)
    detector = AdaptiveDetector(level_seconds=0.0)
    del detector.level_seconds  # what a state saved before the param holds: the class's 0
    assert len(detector._forecasters) == 4
    for i in range(48 * 20):
        x = {"value": _taxi(i * 1800.0, rng), "t": i * 1800.0}
        detector.score_one(x)
        detector.learn_one(x)
    loaded = Detector.from_bytes(detector.to_bytes())
    assert isinstance(loaded, AdaptiveDetector) and loaded.level_seconds == 0.0
    loaded.level_seconds = 86400.0
    for i in range(48 * 20, 48 * 24):
        x = {"value": _taxi(i * 1800.0, rng), "t": i * 1800.0}
        assert loaded.score_one(x) < 0.9
        loaded.learn_one(x)
    assert [f.name for f in loaded._forecasters][-1] == "weekly_level"
    assert len(loaded._fit_error) == len(loaded._noise_count) == 5
    t = 48 * 24 * 1800.0
    weekly, levelled = loaded._forecasts(t)[3:]
    assert weekly is not None and levelled is not None
    assert abs(levelled / weekly - 1.0) < 0.1  # the same level as the weekly profile
    again = Detector.from_bytes(loaded.to_bytes())
    probe = {"value": 9000.0, "t": t}
    assert again.score_one(probe) == loaded.score_one(probe)


def test_a_permanent_drop_on_a_5_minute_seasonal_series_alerts_once_then_is_quiet() -> None:
    # The held-noise weight must not keep the scale small once a shift is the new normal:
    # without the hour a side must hold first, the hourly profile's misfit within an hour
    # kept the 5-minute scale small: 22 false episodes over 8 seeds in the 19 days around
    # a permanent 30 % drop, against 6 without the weight (docs/benchmarks.md, session 33)
    for seed in range(4):
        rng = random.Random(seed)
        detector = AdaptiveDetector()
        at_drop, after = [], []
        for i in range(36 * 288):
            t = i * 300.0
            day = t / 86400.0
            x = {"value": _taxi(t, rng, 0.7 if day >= 25.3 else 1.0), "t": t}
            score = detector.score_one(x)
            if 25.3 <= day < 25.6:
                at_drop.append(score)
            elif day >= 25.6:
                after.append(score)
            detector.learn_one(x)
        assert max(at_drop) >= 0.9, seed
        assert episodes(after) <= 1, seed


def test_a_held_shift_moves_a_profile_by_its_ratio_and_a_level_by_its_difference() -> None:
    from dqpulse.detectors.regimes import _held_move

    # a daily shape at 60 %: scaled, every window is explained; shifted, they are not
    forecasts = [1000.0, 4000.0, 9000.0, 4000.0, 1000.0, 2000.0, 8000.0, 3000.0]
    (by_ratio, ratio), spread = _held_move([(0.6 * f, f) for f in forecasts])
    assert by_ratio and ratio == pytest.approx(0.6) and spread == pytest.approx(0.0)
    # a flat level that jumped: both explain it equally, and the difference is kept (a
    # ratio of 20 would make the level's small wiggles 20x as large)
    flat = [(55.3, 2.1), (54.6, 1.9), (55.1, 2.05), (54.8, 1.95), (55.4, 2.0), (54.9, 2.1)]
    (by_ratio, delta), _ = _held_move(flat)
    assert not by_ratio and delta == pytest.approx(53.0, abs=1.0)
    # a series that goes negative moves by the difference
    (by_ratio, delta), _ = _held_move([(-5.0, 1.0), (-4.0, 2.0), (-6.0, 1.5)])
    assert not by_ratio and delta == pytest.approx(-6.0)


def _value_scoring(detector: AdaptiveDetector, t: float, low: float, high: float,
                   target: float) -> float:
    """A value above ``low`` whose score (by ``score_one``, which changes nothing) is about
    ``target``: bisection between ``low`` (scoring under it) and ``high`` (over it)."""
    for _ in range(60):
        middle = (low + high) / 2.0
        if detector.score_one({"value": middle, "t": t}) < target:
            low = middle
        else:
            high = middle
    return high


def test_a_lone_marginal_window_alerts_with_the_next_or_not_at_all() -> None:
    # a window whose own score is just past the threshold (0.9-0.92) opens no alert by
    # itself: it reports just under the threshold and the alert opens on the next window
    # if that one is raised too (0.5 or more), at once if the window scores past 0.92
    rng = random.Random(5)
    detector = AdaptiveDetector(min_scale=1e-6)
    feed(detector, [100.0 + rng.gauss(0.0, 1.0) for _ in range(700)])
    t = 700 * STEP

    def copy_of(confirm_below: float) -> AdaptiveDetector:
        copy = AdaptiveDetector.from_bytes(detector.to_bytes())
        assert isinstance(copy, AdaptiveDetector)
        copy.confirm_below = confirm_below
        return copy

    marginal = _value_scoring(copy_of(0.0), t, 100.0, 200.0, 0.905)
    strong = _value_scoring(copy_of(0.0), t, 100.0, 200.0, 0.95)
    assert copy_of(0.92).score_one({"value": 100.5, "t": t}) < 0.5  # noise is quiet

    def after(confirm_below: float, value: float, then: float | None = None
              ) -> tuple[list[float], list[list[str]]]:
        copy = copy_of(confirm_below)
        scores, grounds = [], []
        for i, v in enumerate([value] if then is None else [value, then]):
            x = {"value": v, "t": t + i * STEP}
            scores.append(copy.score_one(x))
            grounds.append(copy.explain(x).get("evidence", []))
            copy.learn_one(x)
        return scores, grounds

    # without the rule the marginal window alerts by itself
    alone, _ = after(0.0, marginal)
    assert 0.9 <= alone[0] < 0.92, alone
    # with it, it waits, and says why
    scores, grounds = after(0.92, marginal, 100.0)
    assert scores[0] < 0.9 and scores[1] < 0.9, scores
    assert "lone" in grounds[0], grounds
    # a next window still raised opens the alert
    raised = _value_scoring(copy_of(0.0), t + STEP, 100.0, 200.0, 0.6)  # its own score
    scores, grounds = after(0.92, marginal, raised)
    assert scores[0] < 0.9 <= scores[1], scores
    assert "follows_lone" in grounds[1], grounds
    # a window past ``confirm_below`` alerts at once
    scores, _ = after(0.92, strong)
    assert scores[0] >= 0.9, scores
    # a state saved before the param loads with it off (the scorer then sets the default)
    old = copy_of(0.92)
    del old.__dict__["confirm_below"], old.__dict__["_waiting"]
    restored = AdaptiveDetector.from_bytes(old.to_bytes())
    assert restored.score_one({"value": marginal, "t": t}) >= 0.9
