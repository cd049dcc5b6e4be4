"""Audit schedules with a controlled clock: cron parsing, latest/next slots, time zones and DST, intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit_schedule import (
    CronExpression,
    Schedule,
    manual_slot_key,
    parse_timezone,
    slot_key,
    version_slot_key,
)
from services.errors import ConfigError

PARIS = "Europe/Paris"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(text: str, zone: str = "UTC") -> Schedule:
    return Schedule.build(cron=text, interval_s=None, timezone=zone)


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("5/20 * * * *", "minutes", {5, 25, 45}),
        ("0 9-17/4 * * *", "hours", {9, 13, 17}),
        ("0 0 * jan,JUL *", "months", {1, 7}),
        ("0 0 * * sun,7,mon-wed", "weekdays", {0, 1, 2, 3}),
        ("@hourly", "minutes", {0}),
    ],
)
def test_fields_parse_lists_ranges_steps_and_names(text, field, values):
    assert getattr(CronExpression.parse(text), field) == frozenset(values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("* * * *", "needs 5"),
        ("61 * * * *", "outside 0…59"),
        ("0 24 * * *", "outside 0…23"),
        ("0 0 0 * *", "outside 1…31"),
        ("0 0 * foo *", "not a number"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("1,,2 * * * *", "empty item"),
        ("@reboot", "unknown cron macro"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_expressions_are_refused_with_a_reason(text, message):
    with pytest.raises(ConfigError, match=message):
        CronExpression.parse(text)


def test_unknown_time_zones_and_conflicting_schedules_are_refused():
    for name in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ConfigError, match="time zone"):
            parse_timezone(name)
    with pytest.raises(ConfigError, match="explicit time zone"):
        Schedule.build(cron="0 3 * * *", interval_s=None, timezone=None)
    with pytest.raises(ConfigError, match="either"):
        Schedule.build(cron="0 3 * * *", interval_s=3600, timezone="UTC")
    with pytest.raises(ConfigError, match="cron schedules only"):
        Schedule.build(cron=None, interval_s=3600, timezone="UTC")
    with pytest.raises(ConfigError, match="≥ 60"):
        Schedule.build(cron=None, interval_s=59, timezone=None)
    assert Schedule.build(cron=None, interval_s=None, timezone=None) is None


def test_latest_and_next_slots_of_a_weekly_cron():
    monday_3am = cron("0 3 * * mon")
    now = utc(2025, 11, 26, 12, 0)  # a Wednesday
    assert monday_3am.latest_slot(now) == utc(2025, 11, 24, 3, 0)
    assert monday_3am.next_slot(now) == utc(2025, 12, 1, 3, 0)
    # exactly at the slot: it is due now, and the next one is a week later
    assert monday_3am.latest_slot(utc(2025, 12, 1, 3, 0)) == utc(2025, 12, 1, 3, 0)
    assert monday_3am.next_slot(utc(2025, 12, 1, 3, 0)) == utc(2025, 12, 8, 3, 0)


def test_cron_runs_in_its_own_time_zone():
    paris = cron("30 9 * * *", PARIS)
    assert paris.latest_slot(utc(2025, 1, 15, 12)) == utc(2025, 1, 15, 8, 30)  # CET = UTC+1
    assert paris.latest_slot(utc(2025, 7, 15, 12)) == utc(2025, 7, 15, 7, 30)  # CEST = UTC+2
    assert paris.next_slot(utc(2025, 7, 15, 12)) == utc(2025, 7, 16, 7, 30)


def test_a_wall_time_skipped_or_repeated_by_dst_fires_once():
    paris = cron("30 2 * * *", PARIS)
    # 2025-03-30: 02:00 → 03:00 in Paris; 02:30 does not exist and fires at 03:30 CEST (01:30 UTC).
    spring = [paris.next_slot(utc(2025, 3, 29, 12))]
    spring.append(paris.next_slot(spring[-1]))
    assert spring == [utc(2025, 3, 30, 1, 30), utc(2025, 3, 31, 0, 30)]
    # 2025-10-26: 03:00 → 02:00; 02:30 happens twice and fires at its first occurrence (00:30 UTC) only.
    autumn = [paris.next_slot(utc(2025, 10, 25, 12))]
    autumn.append(paris.next_slot(autumn[-1]))
    assert autumn == [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)]
    assert paris.latest_slot(utc(2025, 10, 26, 1, 45)) == utc(2025, 10, 26, 0, 30)


def test_day_of_month_and_weekday_match_either_when_both_are_restricted():
    either = CronExpression.parse("0 0 13 * fri")
    assert either.matches_day(datetime(2025, 6, 13).date())  # a Friday the 13th
    assert either.matches_day(datetime(2025, 6, 20).date())  # any Friday
    assert either.matches_day(datetime(2025, 7, 13).date())  # any 13th
    assert not either.matches_day(datetime(2025, 7, 14).date())
    both = CronExpression.parse("0 0 */2 * *")
    assert both.matches_day(datetime(2025, 7, 13).date()) and not both.matches_day(
        datetime(2025, 7, 14).date()
    )


def test_a_leap_day_cron_looks_years_back_and_ahead():
    leap = cron("0 12 29 2 *")
    assert leap.latest_slot(utc(2027, 1, 1)) == utc(2024, 2, 29, 12)
    assert leap.next_slot(utc(2027, 1, 1)) == utc(2028, 2, 29, 12)


def test_interval_slots_are_anchored_at_the_epoch_and_only_the_latest_is_due():
    hourly = Schedule.build(cron=None, interval_s=3600, timezone=None)
    now = utc(2025, 11, 26, 10, 59, 59)
    assert hourly.latest_slot(now) == utc(2025, 11, 26, 10)
    assert hourly.next_slot(now) == utc(2025, 11, 26, 11)
    # a scheduler back after a day of downtime sees one due slot, the latest, not 24 missed ones
    assert hourly.latest_slot(now + timedelta(days=1)) == utc(2025, 11, 27, 10)
    odd = Schedule.build(cron=None, interval_s=90, timezone=None)
    assert odd.latest_slot(utc(1970, 1, 1, 0, 4)) == utc(1970, 1, 1, 0, 3)


def test_slot_keys_are_stable_and_distinct_per_trigger():
    paris_time = datetime(2025, 11, 26, 4, 0, tzinfo=ZoneInfo(PARIS))
    assert slot_key(paris_time) == slot_key(utc(2025, 11, 26, 3)) == "at:2025-11-26T03:00:00Z"
    assert manual_slot_key("abc") == "manual:abc" and version_slot_key(7) == "version:7"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_schedule_or_a_config_error(text):
    try:
        expression = CronExpression.parse(text)
    except ConfigError:
        return
    assert expression.next_after(utc(2025, 1, 1), ZoneInfo("UTC")) is not None


def field(*items: str):
    return st.lists(st.sampled_from(("*", *items)), min_size=1, max_size=3).map(",".join)


CRON = st.tuples(
    field("*/7", "*/15", "0", "30", "10-20/5", "45/5"),
    field("*/5", "0", "2", "3", "1-4", "22"),
    field("1", "15", "29", "31", "*/10", "1-7"),
    field("2", "3", "10", "jan", "*/4"),
    field("0", "mon-fri", "sun", "6", "7"),
).map(" ".join)


def around(*start) -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=datetime(*start), max_value=datetime(*start) + timedelta(hours=4))


# Anywhere in three years, and often within hours of the 2025 daylight-saving changes of Paris and New York.
NOW = st.one_of(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31)),
    around(2025, 3, 29, 23),
    around(2025, 10, 25, 23),
    around(2025, 3, 9, 5),
    around(2025, 11, 2, 4),
)


@settings(max_examples=300, deadline=None)
@given(CRON, st.sampled_from(["UTC", PARIS, "America/New_York"]), NOW)
def test_the_latest_slot_and_the_next_one_bracket_now(expression, zone, naive_now):
    try:
        schedule = cron(expression, zone)
    except ConfigError as error:  # e.g. day 31 of February only
        assert "never fires" in str(error)
        return
    now = naive_now.replace(tzinfo=UTC)
    latest, upcoming = schedule.latest_slot(now), schedule.next_slot(now)
    assert upcoming is not None and now < upcoming
    if latest is not None:
        assert latest <= now and schedule.next_slot(latest) == upcoming
