from django.contrib import admin

from webapp.datasets.models import Dataset, PreferencePair, Problem


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "kind", "project", "status", "row_count", "created_at"]
    list_filter = ["kind", "status", "project"]
    search_fields = ["name", "sha256"]


@admin.register(PreferencePair)
class PreferencePairAdmin(admin.ModelAdmin):
    list_display = ["dataset", "row", "source", "kept", "drop_reason"]
    list_filter = ["kept", "source"]
    raw_id_fields = ["dataset"]


@admin.register(Problem)
class ProblemAdmin(admin.ModelAdmin):
    list_display = ["dataset", "row", "domain"]
    list_filter = ["domain"]
    raw_id_fields = ["dataset"]
