"""Fire times of a 5-field crontab expression, on the real clock or on a scaled one for tests.

Fire times come from croniter with crontab's own semantics: day-of-week 0 and 7 are Sunday, and
a day-of-month and a day-of-week that are both restricted match when either does. dspy-cli 0.1.13
reads the expression with APScheduler 3's ``CronTrigger.from_crontab``, where 0 is Monday and both
days must match; :func:`dspy_cli_reads_differently` spots the expressions where the two disagree.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from croniter import CroniterBadDateError, CroniterError, croniter

FIELDS = 5


class ScheduleError(ValueError):
    """The expression is not a 5-field crontab line croniter can read."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    timezone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``, as an aware datetime in ``timezone``."""
        return croniter(self.expression, moment.astimezone(self.timezone)).get_next(datetime)


def parse_schedule(expression: object, timezone: tzinfo) -> Schedule:
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a crontab string, not {type(expression).__name__}")
    fields = expression.split()
    if len(fields) != FIELDS:
        # croniter also reads a 6th (seconds) or 7th (year) field; crontab and dspy-cli do not.
        raise ScheduleError(f"{len(fields)} fields; a crontab schedule has 5 (minute hour day month weekday)")
    try:
        croniter(expression).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError("it never fires (no such date)") from None
    except CroniterError as exc:
        raise ScheduleError(str(exc)) from None
    return Schedule(" ".join(fields), timezone)


def dspy_cli_reads_differently(expression: str) -> bool:
    """Numeric weekdays (0 = Monday there), or day-of-month and weekday both set (both must match)."""
    _, _, day, _, weekday = expression.split()
    return any(char.isdigit() for char in weekday) or (day != "*" and weekday != "*")


@dataclass(frozen=True)
class Clock:
    """Wall-clock time, optionally running ``scale`` times faster from the instant ``origin``.

    ``scale`` is for tests only (``DSPY_SCHEDULER_TIME_SCALE``): at 60 a ``* * * * *`` job fires
    every real second while croniter still computes every fire time. Processes that share a
    database must share ``scale`` and ``origin`` (a Unix time), so they agree on what time it is.
    """

    scale: float = 1.0
    origin: float = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._scaled(time.time()), UTC)

    def seconds_until(self, moment: datetime) -> float:
        """Real seconds to wait until the clock shows ``moment`` (negative when it is past)."""
        return (moment.timestamp() - self._scaled(time.time())) / self.scale

    def _scaled(self, real: float) -> float:
        return self.origin + (real - self.origin) * self.scale
