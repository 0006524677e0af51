"""The registry: immutable versions of a program (a saved state for its code), aliases naming
which version answers (one version, or a weighted split, plus an optional shadow), and every move
of an alias (who, when, from → to)."""

from django.db import models


class Version(models.Model):
    """One saved state of a program (what ``module.save()`` writes), numbered ``v1``, ``v2``... per
    program. Never changed: registering the same content again returns the existing one."""

    program = models.CharField(max_length=200)
    number = models.PositiveIntegerField()
    state = models.JSONField(help_text="the module's saved state (dump_state), per predictor")
    state_sha256 = models.CharField(max_length=64)
    code_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the module's source file")
    model_alias = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Where it came from, when an optimization compiled it: {"optimization": id, "from_version",
    # "dataset", "valset", "optimizer", "params", "metric"}; {} for an uploaded or loaded state.
    lineage = models.JSONField(default=dict, blank=True)
    score = models.FloatField(null=True, blank=True, help_text="its validation score (an optimization's)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["program", "number"], name="versions_version_number"),
            models.UniqueConstraint(
                fields=["program", "state_sha256", "code_sha256", "model_alias"],
                name="versions_version_content",
            ),
        ]
        ordering = ["program", "number"]

    def __str__(self) -> str:
        return f"{self.program} {self.label}"

    @property
    def label(self) -> str:
        return f"v{self.number}"


class Alias(models.Model):
    """A name (``production``, ``staging``...) for what answers a program's calls.

    ``target``: ``{"version": "v3"}``, or ``{"split": {"v3": 90, "v4": 10}, "sticky": "key" |
    "header:<Name>" | "none"}``; either may add ``"shadow": {"version": "v5", "fraction": 0.2}``.
    """

    program = models.CharField(max_length=200)
    name = models.CharField(max_length=100)
    target = models.JSONField()
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "name"], name="versions_alias_name")]
        verbose_name_plural = "aliases"
        ordering = ["program", "name"]

    def __str__(self) -> str:
        return f"{self.program}@{self.name}"


class AliasHistory(models.Model):
    """One move of an alias. A rollback restores ``before`` of the latest move not yet rolled back.

    Its id is also the registry's change counter (with the versions'): every worker polls the
    highest one to see that something changed (versions.live)."""

    program = models.CharField(max_length=200)
    alias = models.CharField(max_length=100)
    before = models.JSONField(null=True, blank=True, help_text="null: the alias did not exist")
    after = models.JSONField()
    action = models.CharField(max_length=20, default="set")  # set | rollback
    rolled_back = models.BooleanField(default=False)
    by = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["program", "alias", "-id"], name="versions_history_recent")]
        verbose_name_plural = "alias history"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.program}@{self.alias}: {self.before} -> {self.after}"
