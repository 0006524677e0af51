"""Cron fire times: crontab semantics through croniter, what is refused, and the scaled test clock."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduling.schedules import Clock, ScheduleError, dspy_cli_reads_differently, parse_schedule

MONDAY = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def fires(expression: str, start: datetime = MONDAY, count: int = 3) -> list[str]:
    schedule = parse_schedule(expression, UTC)
    out, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        out.append(moment.strftime("%a %d %H:%M"))
    return out


def test_every_minute_and_steps_fire_strictly_after_the_start() -> None:
    assert fires("* * * * *") == ["Mon 02 00:01", "Mon 02 00:02", "Mon 02 00:03"]
    assert fires("*/15 * * * *") == ["Mon 02 00:15", "Mon 02 00:30", "Mon 02 00:45"]


def test_weekdays_are_crontabs_zero_and_seven_are_sunday_one_is_monday() -> None:
    assert fires("0 9 * * 1", count=2) == ["Mon 02 09:00", "Mon 09 09:00"]
    assert fires("0 9 * * 0", count=1) == fires("0 9 * * 7", count=1) == ["Sun 08 09:00"]
    assert fires("0 9 * * mon-fri", count=2) == ["Mon 02 09:00", "Tue 03 09:00"]


def test_day_of_month_and_weekday_both_set_match_when_either_does() -> None:
    # The 13th or any Friday (crontab); APScheduler 3, hence dspy-cli, wants a Friday the 13th.
    assert fires("0 0 13 * 5", count=3) == ["Fri 06 00:00", "Fri 13 00:00", "Fri 20 00:00"]


def test_fire_times_follow_the_timezone_across_a_dst_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    schedule = parse_schedule("0 9 * * *", paris)
    first = schedule.next_after(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    second = schedule.next_after(first)  # Paris moves from UTC+1 to UTC+2 in between
    assert (first.astimezone(paris).hour, second.astimezone(paris).hour) == (9, 9)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=23)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "out of range"),
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),  # croniter would read seconds; crontab has none
        ("0 0 31 2 *", "never fires"),
        ("each minute of every day", "not acceptable"),
        (None, "crontab string"),
    ],
)
def test_an_invalid_schedule_is_refused_with_its_reason(expression: object, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        parse_schedule(expression, UTC)


def test_expressions_dspy_cli_reads_differently_are_spotted() -> None:
    assert dspy_cli_reads_differently("0 9 * * 1")
    assert dspy_cli_reads_differently("0 0 13 * fri")
    assert not dspy_cli_reads_differently("0 9 * * mon-fri")
    assert not dspy_cli_reads_differently("*/5 * * * *")


def test_a_scaled_clock_runs_faster_from_its_origin_and_processes_agree() -> None:
    origin = MONDAY.timestamp()
    fast, twin, real = Clock(60.0, origin), Clock(60.0, origin), Clock()
    assert fast.now() > real.now() + timedelta(days=1)  # months of real time since the origin, x60
    assert abs(fast.now() - twin.now()) < timedelta(seconds=60)  # same origin and scale: same time
    minute_ahead = fast.now() + timedelta(minutes=1)
    assert 0 < fast.seconds_until(minute_ahead) <= 1  # a scaled minute is a real second
    assert real.seconds_until(real.now() - timedelta(seconds=5)) < 0
