"""Admin: jobs with a progress bar, their first per-item errors, and a cancel action (read-only
otherwise: jobs are written by the API and the workers)."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from jobs import services
from jobs.models import FINISHED, Job
from telemetry.admin import ReadOnlyAdmin


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "program",
        "status",
        "progress_bar",
        "total",
        "api_key_name",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "program")
    search_fields = ("id", "program", "api_key_name")
    date_hierarchy = "created_at"
    actions = ("cancel_jobs",)
    readonly_fields = (
        "id", "program", "version", "status", "progress_bar", "total", "succeeded", "failed", "tokens",
        "cost_usd", "api_key_name", "created_at", "started_at", "finished_at", "error", "item_errors",
    )  # fmt: skip
    fields = readonly_fields

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        view = services.as_view(job)
        percent = round(view["progress"] * 100, 1)
        return format_html(
            '<progress max="100" value="{}"></progress> {}% ({} ok, {} failed)',
            percent, percent, view["succeeded"], view["failed"],
        )  # fmt: skip

    @admin.display(description="first failed items")
    def item_errors(self, job: Job) -> str:
        rows = services.item_errors(job)
        if not rows:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "", "<li>{}: {} {}</li>", ((r["custom_id"], r["status"], r.get("error", {})) for r in rows)
            ),
        )

    @admin.action(description="Cancel the selected jobs (no new item starts)")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in queryset.exclude(status__in=FINISHED):
            services.cancel(job.id, None)
            cancelled += 1
        self.message_user(request, f"{cancelled} job(s) cancelled", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
