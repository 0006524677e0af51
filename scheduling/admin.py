"""Admin: the cron runs, read-only (written only by the scheduler)."""

from django.contrib import admin

from scheduling.models import CronRun
from telemetry.admin import ReadOnlyAdmin


@admin.register(CronRun)
class CronRunAdmin(ReadOnlyAdmin):
    list_display = ("job", "fire_time", "status", "items", "ok", "failed", "not_run", "duration_ms", "worker")
    list_filter = ("status", "job")
    search_fields = ("job", "worker", "error")
    date_hierarchy = "fire_time"
    readonly_fields = (*list_display, "started_at", "finished_at", "error")
    fields = readonly_fields
