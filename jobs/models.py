"""What users see of a job: the job, its items (one per input line) and their results.

The engine (:mod:`jobs.engine`) only moves work; these tables are the truth. An item is run by
whoever holds its lease (``lease_owner`` until ``lease_expires``, renewed by the worker's
heartbeat); its result is a row of its own, unique per item, written in the same transaction
that marks the item done, so a re-run item (its worker was killed) can never appear twice.
"""

import uuid

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ItemState(models.TextChoices):
    PENDING = "pending"  # waiting for its chunk's task
    LEASED = "leased"  # claimed by a worker's chunk, not started
    RUNNING = "running"  # its program call started (a kill now may call it twice)
    DONE = "done"  # its result row exists
    CANCELLED = "cancelled"  # the job was cancelled before it started


UNFINISHED = (ItemState.PENDING, ItemState.LEASED, ItemState.RUNNING)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.CharField(max_length=200)
    version = models.CharField(max_length=100, blank=True, help_text="the version asked for ('': production)")
    api_key_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="who submitted (null: no keys)"
    )
    api_key_name = models.CharField(max_length=140, blank=True)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    chunks = models.PositiveIntegerField(default=0)
    # Filled when the job finishes (while it runs they are counted from the results).
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    error = models.TextField(blank=True, help_text="why the whole job failed")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["api_key_id", "-created_at"], name="jobs_job_key_created")]

    def __str__(self) -> str:
        return f"job {self.id} ({self.program}, {self.status})"


class JobItem(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    line = models.PositiveIntegerField(help_text="1-based line of the upload")
    custom_id = models.CharField(max_length=200, blank=True, help_text="'': the line had none (it fails)")
    raw = models.TextField(help_text="the line as uploaded")
    chunk = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=ItemState.choices, default=ItemState.PENDING)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="program calls started (2+: re-run)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "line"], name="jobs_item_line"),
            models.UniqueConstraint(
                fields=["job", "custom_id"], condition=~models.Q(custom_id=""), name="jobs_item_custom_id"
            ),
        ]
        indexes = [
            models.Index(fields=["job", "chunk", "state"], name="jobs_item_chunk_state"),
            models.Index(fields=["state", "lease_expires"], name="jobs_item_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} line {self.line}"


class JobResult(models.Model):
    """One finished item: its results line, pre-rendered (``GET /api/jobs/{id}/results`` joins them)."""

    item = models.OneToOneField(JobItem, on_delete=models.CASCADE, related_name="result")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="results")
    line = models.PositiveIntegerField()
    status = models.PositiveSmallIntegerField()
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    body = models.TextField(help_text="the JSON results line")
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["job", "line"], name="jobs_result_job_line")]

    def __str__(self) -> str:
        return f"{self.job_id} line {self.line}: {self.status}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Run(models.Model):
    """A background run (``POST /{P}/runs``): one program call on a worker, then its webhook."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.CharField(max_length=200)
    version = models.CharField(max_length=100, blank=True)
    api_key_id = models.PositiveBigIntegerField(null=True, blank=True)
    api_key_name = models.CharField(max_length=140, blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    inputs = models.TextField(help_text="the program's inputs (JSON)")
    answer = models.TextField(blank=True, help_text="GET /api/runs/{id}'s body once finished (the webhook's)")
    webhook_url = models.URLField(max_length=2000, blank=True)
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    webhook_status = models.CharField(max_length=200, blank=True, help_text="the last attempt's outcome")
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["api_key_id", "-created_at"], name="jobs_run_key_created")]

    def __str__(self) -> str:
        return f"run {self.id} ({self.program}, {self.status})"
