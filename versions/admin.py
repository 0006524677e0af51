"""The registry in the Django admin: each program's versions (what changed: instructions and demo
counts per predictor, a diff against the previous version), a state upload, promote to an alias
and roll back, the aliases and their history (who, when, from -> to)."""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from programs.runtime import get_runtime
from versions import registry
from versions.models import Alias, AliasHistory, Version
from versions.routing import TargetInvalid
from versions.states import StateMismatch, summary


class UploadForm(forms.ModelForm):
    """A new version: the program and the JSON file ``module.save()`` wrote."""

    state_file = forms.FileField(help_text="the JSON file module.save() wrote")
    alias = forms.CharField(required=False, help_text="also point this alias at it (e.g. staging)")

    class Meta:
        model = Version
        fields = ("program", "note")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        program = get_runtime().programs.get(data.get("program", ""))
        if program is None:
            raise forms.ValidationError(f"no served program {data.get('program')!r}")
        try:
            state = json.loads(data["state_file"].read())
            self.registered = registry.register(program, state, note=data.get("note", ""), by=self.by)
        except (ValueError, KeyError) as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin):
    list_display = ("program", "label", "aliases", "what", "score", "note", "created_by", "created_at")
    list_filter = ("program",)
    readonly_fields = ("program", "label", "what", "changes", "score", "lineage", "code_sha256",
                       "state_sha256", "model_alias", "note", "created_by", "created_at")  # fmt: skip
    actions = ("promote_to_production",)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """Filtered to one program (the list's program filter): its versions side by side (calls, error rate,
        p50/p95, tokens, cost), one grouped read of its log rows; never for every program at once."""
        from telemetry.api import version_metrics

        program = request.GET.get("program__exact")  # the program filter of the list
        if program in get_runtime().programs:
            extra_context = {
                **(extra_context or {}),
                "side_by_side": version_metrics(program),
                "side_by_side_program": program,
            }
        return super().changelist_view(request, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            form = UploadForm
            form.by = request.user.get_username()
            return form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("program", "note", "state_file", "alias") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # versions never change

    def save_model(self, request: HttpRequest, obj: Version, form: Any, change: bool) -> None:
        version, created = form.registered
        obj.pk = version.pk
        alias = form.cleaned_data.get("alias")
        if alias:
            by = request.user.get_username()
            try:
                registry.set_alias(version.program, alias, {"version": version.label}, by=by)
            except (TargetInvalid, LookupError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
        verb = "registered" if created else "was already registered as"
        self.message_user(request, f"{version.program} {verb} {version.label}")

    def response_add(self, request: HttpRequest, obj: Version, post_url_continue: Any = None) -> Any:
        return HttpResponseRedirect(reverse("admin:versions_version_changelist"))

    @admin.display(description="version")
    def label(self, obj: Version) -> str:
        return obj.label

    @admin.display(description="aliases")
    def aliases(self, obj: Version) -> str:
        entry = next((e for e in registry.versions_listing(obj.program) if e["version"] == obj.label), None)
        return ", ".join(entry["aliases"]) if entry else ""

    @admin.display(description="per predictor")
    def what(self, obj: Version) -> str:
        return "; ".join(f"{p['predictor']}: {p['demos']} demos" for p in summary(obj.state))

    @admin.display(description="what changed since the previous version")
    def changes(self, obj: Version) -> str:
        earlier = Version.objects.filter(program=obj.program, number__lt=obj.number)
        previous = earlier.order_by("-number").first()
        before = {p["predictor"]: p for p in summary(previous.state)} if previous else {}
        rows = []
        for now in summary(obj.state):
            was = before.get(now["predictor"], {"instructions": "", "demos": 0})
            name = now["predictor"]
            rows.append((name, was["demos"], now["demos"], was["instructions"], now["instructions"]))
        header = f"against {previous.label}" if previous else "the first version"
        return format_html(
            "<p>{}</p><table><tr><th>predictor</th><th>demos</th><th>instructions</th></tr>{}</table>",
            header,
            format_html_join(
                "", "<tr><td>{}</td><td>{} &rarr; {}</td><td><del>{}</del><br><ins>{}</ins></td></tr>", rows
            ),
        )

    @admin.action(description="Promote the selected version to production")
    def promote_to_production(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version", messages.ERROR)
            return
        version = queryset.get()
        try:
            registry.set_alias(version.program, registry.PRODUCTION, {"version": version.label},
                               by=request.user.get_username())  # fmt: skip
        except (TargetInvalid, LookupError, StateMismatch) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{version.program}@production -> {version.label}")


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    list_display = ("program", "name", "target", "updated_by", "updated_at")
    list_filter = ("program",)
    readonly_fields = ("program", "name", "target", "updated_by", "updated_at")
    actions = ("roll_back",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # moves go through promote, the API or the command (each kept in the history)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Roll the selected aliases back to their previous target")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Alias]) -> None:
        for alias in queryset:
            try:
                moved = registry.rollback(alias.program, alias.name, by=request.user.get_username())
            except (LookupError, registry.NothingToRollBack) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{alias}: back to {json.dumps(moved.target)}")


@admin.register(AliasHistory)
class AliasHistoryAdmin(admin.ModelAdmin):
    list_display = ("at", "program", "alias", "action", "before", "after", "by")
    list_filter = ("program", "alias", "action")
    readonly_fields = ("program", "alias", "before", "after", "action", "rolled_back", "by", "at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
