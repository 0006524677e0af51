"""One row per run of a cron job: the claim of its fire time, then what the run did.

The unique constraint on (job, fire time) is what makes a run happen once: every process that
serves the project tries to insert the row when the time comes, and only the insert that wins runs
the job.
"""

from django.db import models
from django_prometheus.models import ExportModelOperationsMixin


class CronRun(ExportModelOperationsMixin("cronrun"), models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        OK = "ok"  # every item ran and its on_complete returned (also: no items)
        PARTIAL = "partial"  # some items ok, others failed or were not run
        FAILED = "failed"  # no item ok, or get_pipeline_inputs raised
        INTERRUPTED = "interrupted"  # the process stopped during the run

    job = models.CharField(max_length=300, help_text="<Program>.<CronGateway class>")
    fire_time = models.DateTimeField(help_text="the scheduled time this run is for")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    items = models.PositiveIntegerField(default=0, help_text="inputs get_pipeline_inputs returned")
    ok = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=100, help_text="host:pid of the process that ran it")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="why the run stopped, or its first item errors")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "fire_time"], name="cron_run_once")]
        indexes = [models.Index(fields=["-fire_time"], name="cron_run_recent")]
        ordering = ["-fire_time"]

    def __str__(self) -> str:
        return f"{self.job} @ {self.fire_time:%Y-%m-%d %H:%M}"

    @property
    def not_run(self) -> int:
        """Items never started: the run stopped early (max_errors, shutdown)."""
        return max(0, self.items - self.ok - self.failed)
