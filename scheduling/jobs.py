"""The cron jobs of the loaded programs: every ``CronGateway`` a module declares, checked at start-up.

A job is named ``<Program>.<GatewayClass>``: the name on its runs and, as ``entry``, on the
inference log rows of its items. An invalid schedule or batch setting stops start-up with one line
naming the module file, the job and the value.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo

import dspy

from programs.gateways import CronGateway
from programs.program import Program
from scheduling.schedules import Schedule, ScheduleError, dspy_cli_reads_differently, parse_schedule

logger = logging.getLogger(__name__)


class JobError(ValueError):
    """A cron gateway that cannot be scheduled; the message is the whole one-line explanation."""


@dataclass(frozen=True)
class CronJob:
    id: str
    program: Program
    gateway: CronGateway
    schedule: Schedule
    # Items in flight at once: num_threads in batch mode, else 1 (dspy-cli runs them one by one).
    concurrency: int
    # Batch mode: no new item is started once this many have failed (None: no limit).
    max_errors: int | None


def cron_jobs(programs: Iterable[Program], timezone: tzinfo) -> list[CronJob]:
    jobs: dict[str, CronJob] = {}
    for program in programs:
        for gateway in program.gateways:
            if isinstance(gateway, CronGateway):
                job = _job(program, gateway, timezone)
                if job.id in jobs:
                    raise JobError(f"{program.module_file.name}: cron job {job.id} is declared twice")
                jobs[job.id] = job
    return list(jobs.values())


def _job(program: Program, gateway: CronGateway, timezone: tzinfo) -> CronJob:
    job_id = f"{program.name}.{type(gateway).__name__}"
    where = f"{program.module_file.name}: cron job {job_id}"
    expression = getattr(gateway, "schedule", None)
    try:
        schedule = parse_schedule(expression, timezone)
    except ScheduleError as exc:
        raise JobError(f"{where}: invalid schedule {expression!r}: {exc}") from None
    if dspy_cli_reads_differently(schedule.expression):
        logger.warning(
            "Cron job %s: schedule %r follows crontab (weekday 0 and 7 = Sunday; day and weekday both "
            "set: either matches); dspy-cli 0.1.13 read it with APScheduler 3 (0 = Monday; both must match)",
            job_id, schedule.expression,
        )  # fmt: skip
    concurrency, max_errors = 1, None
    if gateway.use_batch:
        # dspy-cli hands None to module.batch(), i.e. DSPy's settings: 8 threads, stop after 10 errors.
        concurrency = _positive(gateway.num_threads, dspy.settings.num_threads, f"{where}: num_threads")
        max_errors = _positive(gateway.max_errors, dspy.settings.max_errors, f"{where}: max_errors")
    return CronJob(job_id, program, gateway, schedule, concurrency, max_errors)


def _positive(value: object, default: int, what: str) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise JobError(f"{what} must be a positive integer or None, not {value!r}")
    return value
