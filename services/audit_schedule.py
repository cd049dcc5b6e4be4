"""Audit schedules: a cron expression in an explicit IANA time zone, or a fixed interval; pure and clock-free.

Every function takes the current time as an argument, so the scheduler can be tested with a controlled clock.
A schedule yields *slots*: the instants at which a run is due. Each slot has a stable key; a run is stored
under (audit, slot key) uniquely, which is what makes a duplicated tick harmless.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.errors import ConfigError

MAX_CRON_LENGTH = 120
# Long enough for the rarest satisfiable expression (29 February on a given weekday recurs within 28 years).
HORIZON_DAYS = 366 * 28 + 7
# Daylight-saving changes move wall-clock time by at most two hours; scanning this far past the first
# candidate finds the true latest/earliest instant when a skipped or repeated hour reorders them.
DST_WINDOW = timedelta(hours=3)
INTERVAL_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
WEEKDAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, WEEKDAYS),
)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts "²", which int() refuses


def _value(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    raw = text.strip().lower()
    number = names.get(raw)
    if number is None:
        if not _is_number(raw):
            raise ConfigError(
                f"cron {field} field: {text!r} is not a number"
                + (f" or a name ({', '.join(names)})" if names else "")
            )
        number = int(raw)
    if not low <= number <= high:
        raise ConfigError(f"cron {field} field: {number} is outside {low}…{high}")
    return number


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) < 1:
                raise ConfigError(
                    f"cron {field} field: step {step_text!r} in {part!r} must be a positive integer"
                )
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = (_value(v, field, low, high, names) for v in (first, last))
            if start > end:
                raise ConfigError(f"cron {field} field: range {body!r} runs backwards")
        elif body:
            start = _value(body, field, low, high, names)
            end = high if slash else start  # "5/15" means 5, 20, 35, 50
        else:
            raise ConfigError(f"cron {field} field: empty item in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """Five-field cron (minute hour day-of-month month day-of-week), with Vixie cron's day rule."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse `text` (fields, lists, ranges, steps, month/day names, @daily-style macros)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("the cron expression is empty; e.g. '0 3 * * 1' is 03:00 every Monday")
        if len(text) > MAX_CRON_LENGTH:
            raise ConfigError(f"the cron expression is longer than {MAX_CRON_LENGTH} characters")
        raw = text.strip()
        expanded = MACROS.get(raw.lower(), raw)
        if expanded.startswith("@"):
            raise ConfigError(f"unknown cron macro {raw!r}; known: {', '.join(MACROS)}")
        parts = expanded.split()
        if len(parts) != 5:
            raise ConfigError(
                f"cron expression {raw!r} has {len(parts)} field(s); it needs 5: "
                "minute hour day-of-month month day-of-week (e.g. '0 3 * * 1')"
            )
        sets = [_parse_field(part, *spec) for part, spec in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[4])  # 7 is Sunday too
        expression = cls(
            raw,
            sets[0],
            sets[1],
            sets[2],
            sets[3],
            weekdays,
            days_restricted=not parts[2].startswith("*"),
            weekdays_restricted=not parts[4].startswith("*"),
        )
        if expression.next_after(datetime(2000, 1, 1, tzinfo=UTC), ZoneInfo("UTC")) is None:
            raise ConfigError(f"cron expression {raw!r} never fires (no such calendar day)")
        return expression

    def matches_day(self, day: date) -> bool:
        """Whether `day` is a firing day; with both day fields restricted either may match (as in cron)."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def _wall_times(self, start: datetime, step: int) -> Iterator[datetime]:
        """Matching naive wall-clock times from `start`'s day on, descending (step -1) or ascending (+1)."""
        times = sorted((time(h, m) for h in self.hours for m in self.minutes), reverse=step < 0)
        for offset in range(HORIZON_DAYS):
            day = start.date() + timedelta(days=step * offset)
            if self.matches_day(day):
                yield from (datetime.combine(day, moment) for moment in times)

    def latest_at_or_before(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """The last firing instant ≤ `now` (UTC), or None within the horizon."""
        now_utc = now.astimezone(UTC)
        ceiling = now_utc.astimezone(zone).replace(tzinfo=None) + DST_WINDOW
        best: datetime | None = None
        hit_wall: datetime | None = None
        for wall in self._wall_times(ceiling, -1):
            if wall > ceiling:
                continue
            if hit_wall is not None and wall < hit_wall - DST_WINDOW:
                break
            instant = _instant(wall, zone)
            if instant <= now_utc:
                best = instant if best is None else max(best, instant)
                hit_wall = hit_wall or wall
        return best

    def next_after(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """The first firing instant > `now` (UTC), or None within the horizon."""
        now_utc = now.astimezone(UTC)
        floor = now_utc.astimezone(zone).replace(tzinfo=None) - DST_WINDOW
        best: datetime | None = None
        hit_wall: datetime | None = None
        for wall in self._wall_times(floor, +1):
            if wall < floor:
                continue
            if hit_wall is not None and wall > hit_wall + DST_WINDOW:
                break
            instant = _instant(wall, zone)
            if instant > now_utc:
                best = instant if best is None else min(best, instant)
                hit_wall = hit_wall or wall
        return best


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    # fold=0: a wall time skipped by a daylight-saving change lands one hour later that day, a repeated one
    # fires at its first occurrence; either way each day's slot fires exactly once.
    return wall.replace(tzinfo=zone).astimezone(UTC)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone such as Europe/Paris or UTC (ConfigError for anything else)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("the time zone is empty; give an IANA name such as UTC or Europe/Paris")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"unknown time zone {name!r}; give an IANA name such as UTC, Europe/Paris or America/New_York"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """When an audit is due: a cron expression in `timezone`, or every `interval_s` seconds from 1970-01-01 UTC."""

    cron: CronExpression | None = None
    timezone: ZoneInfo | None = None
    interval_s: int | None = None

    @classmethod
    def build(
        cls, *, cron: str | None, interval_s: int | None, timezone: str | None, min_interval_s: int = 60
    ) -> Schedule | None:
        """Validate a stored or requested schedule; None when the audit runs only on demand or on new versions."""
        if cron is not None and interval_s is not None:
            raise ConfigError("give either a cron expression or an interval, not both")
        if cron is not None:
            if timezone is None:
                raise ConfigError(
                    "a cron schedule needs an explicit time zone, e.g. timezone=UTC or Europe/Paris"
                )
            return cls(cron=CronExpression.parse(cron), timezone=parse_timezone(timezone))
        if timezone is not None:
            raise ConfigError(
                "the time zone applies to cron schedules only; an interval counts from 1970-01-01 00:00 UTC"
            )
        if interval_s is None:
            return None
        if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s < min_interval_s:
            raise ConfigError(
                f"the interval must be a whole number of seconds ≥ {min_interval_s}, got {interval_s!r}"
            )
        return cls(interval_s=interval_s)

    def _zone(self) -> ZoneInfo:
        if self.timezone is None:  # build() refuses a cron schedule without one
            raise ConfigError("a cron schedule needs an explicit time zone")
        return self.timezone

    def _interval(self) -> int:
        if self.interval_s is None:  # build() returns None instead of an empty schedule
            raise ConfigError("a schedule needs a cron expression or an interval")
        return self.interval_s

    def _latest_interval_slot(self, now: datetime) -> datetime:
        interval_s = self._interval()
        elapsed = (now.astimezone(UTC) - INTERVAL_ORIGIN).total_seconds()
        return INTERVAL_ORIGIN + timedelta(seconds=math.floor(elapsed / interval_s) * interval_s)

    def latest_slot(self, now: datetime) -> datetime | None:
        """The last due instant ≤ `now` (UTC): after downtime only this one runs, never a burst of missed ones."""
        if self.cron is not None:
            return self.cron.latest_at_or_before(now, self._zone())
        return self._latest_interval_slot(now)

    def next_slot(self, now: datetime) -> datetime | None:
        """The first due instant after `now` (UTC)."""
        if self.cron is not None:
            return self.cron.next_after(now, self._zone())
        return self._latest_interval_slot(now) + timedelta(seconds=self._interval())


def slot_key(slot: datetime) -> str:
    """The unique key of a scheduled slot: its UTC instant to the second."""
    return "at:" + slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manual_slot_key(token: str) -> str:
    """A key of its own for each "run now" request (never collides with a schedule slot)."""
    return f"manual:{token}"


def version_slot_key(model_id: int) -> str:
    """One run per newly registered model version, however often the trigger is delivered."""
    return f"version:{int(model_id)}"
