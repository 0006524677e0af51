from django.contrib import admin
from django.urls import include, path

from dspysite.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("loop.urls")),  # the call page: /ui/calls/<request id>
    path("", include("ui.urls")),  # the playground: GET / and /ui/<Program> (browser paths)
    path("", api.urls),
]
