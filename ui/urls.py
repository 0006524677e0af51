from django.urls import path, re_path
from django.views.generic import RedirectView

from ui import views

urlpatterns = [
    path("", views.index, name="ui-index"),
    path("ui/", RedirectView.as_view(url="/")),
    re_path(r"^ui/(?P<name>[A-Za-z_][A-Za-z0-9_]*)/?$", views.program_page, name="ui-program"),
]
