"""The loop's tables: call traces, feedback, datasets (docs/LOOP.md).

Calls are referenced by their ``request_id`` (a string), not by a foreign key to the telemetry
log row: the log is written in batches by another thread, pruned on its own schedule, and may be
on a partitioned table; a trace or a piece of feedback outlives neither of those concerns.
"""

from django.db import models

THUMBS = "thumbs"


class CallTrace(models.Model):
    """The LM calls of one captured program call: each one's messages and raw completion, in order."""

    request_id = models.CharField(max_length=128, unique=True)
    program = models.CharField(max_length=200)
    version = models.CharField(max_length=100, blank=True)
    # [{"messages": [...], "completion": ..., "usage": {...}, "cost_usd", "duration_ms", "model", ...}]
    lm_calls = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["program", "-created_at"], name="loop_trace_program_recent")]

    def __str__(self) -> str:
        return f"trace {self.request_id} ({self.program})"


class Feedback(models.Model):
    """One judgement of one call: a score in [0, 1] or a label, a comment, a corrected output.

    Unique per (request id, name, author): the same caller sending the same metric again updates
    it. ``program`` and ``version`` are copied from the call when the feedback arrives, so the
    aggregates per program and version read this table alone.
    """

    request_id = models.CharField(max_length=128)
    name = models.CharField(max_length=100, default=THUMBS)
    # Who gave it: "key <id>", "user <name>" (a staff session), or "" (API keys off).
    author = models.CharField(max_length=160, blank=True)
    api_key_id = models.PositiveBigIntegerField(null=True, blank=True)
    program = models.CharField(max_length=200)
    version = models.CharField(max_length=100, blank=True)
    score = models.FloatField(null=True, blank=True)
    value = models.CharField(max_length=200, blank=True)
    comment = models.TextField(blank=True)
    correction = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "name", "author"], name="loop_feedback_one_per_author"
            )
        ]
        indexes = [
            models.Index(fields=["program", "version", "name"], name="loop_feedback_program"),
            models.Index(fields=["request_id"], name="loop_feedback_request"),
        ]

    def __str__(self) -> str:
        shown = self.value or self.score
        return f"{self.name}={shown} on {self.request_id}"


class Dataset(models.Model):
    """A named set of examples for one program: inputs and labels (the outputs it should give)."""

    name = models.CharField(max_length=200, unique=True)
    program = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.program})"


class DatasetItem(models.Model):
    """One example: ``dspy.Example(**inputs, **labels).with_inputs(*inputs)``."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    inputs = models.JSONField()
    labels = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True, help_text="the call it came from, if any")
    feedback = models.JSONField(default=dict, blank=True, help_text="the call's feedback when it was added")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"item {self.pk} of {self.dataset_id}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Evaluation(models.Model):
    """One program version scored on one dataset with one metric; its items in EvaluationItem."""

    program = models.CharField(max_length=200)
    version = models.CharField(max_length=100, blank=True, help_text='"": the default (production)')
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="evaluations")
    metric = models.CharField(max_length=300)
    field = models.CharField(
        max_length=200, blank=True, help_text="the output field scored (all labels if blank)"
    )
    judge = models.CharField(max_length=200, blank=True, help_text="llm_judge: the judging program")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    score = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.program} on {self.dataset_id}"


class EvaluationItem(models.Model):
    """One dataset item's result: unique per (evaluation, item), so a re-run item is claimed once."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="items")
    item = models.ForeignKey(DatasetItem, on_delete=models.CASCADE, related_name="+")
    outputs = models.JSONField(null=True, blank=True)
    score = models.FloatField(default=0.0)
    request_id = models.CharField(max_length=128, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["item_id"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "item"], name="loop_evaluation_item_once")
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} of evaluation {self.evaluation_id}: {self.score}"


class Optimization(models.Model):
    """A DSPy optimizer compiling a program version on a dataset; the compiled state, its validation
    score, and the version registered from it (the versions app's registry); never promoted here."""

    program = models.CharField(max_length=200)
    from_version = models.CharField(max_length=100, blank=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="optimizations")
    valset = models.ForeignKey(Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    metric = models.CharField(max_length=300)
    field = models.CharField(max_length=200, blank=True)
    optimizer = models.CharField(max_length=300)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    score = models.FloatField(
        null=True, blank=True, help_text="the compiled program's mean metric on the valset"
    )
    state = models.JSONField(null=True, blank=True, help_text="module.dump_state() of the compiled program")
    request_id = models.CharField(max_length=128, blank=True, help_text="the logged call of its LM calls")
    version = models.CharField(max_length=100, blank=True, help_text="the version registered from it (v5)")
    # {"stage": "started" | "compiling" | "compiled" | "validated" | "registered", "trials": metric
    # calls so far, "stages": [{"stage", "at": ISO time}, ...]}
    progress = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"optimization {self.pk} of {self.program} ({self.optimizer})"
