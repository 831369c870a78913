from django.contrib import admin

from webapp.fleet.models import LaunchCheck, WorkerReport


@admin.register(WorkerReport)
class WorkerReportAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "host",
        "queues",
        "slots",
        "visible_gpus",
        "has_vllm",
        "has_deepspeed",
        "reported_at",
    ]
    search_fields = ["name", "host"]
    readonly_fields = ["started_at", "reported_at", "stopped_at"]


@admin.register(LaunchCheck)
class LaunchCheckAdmin(admin.ModelAdmin):
    list_display = ["run", "queue", "workers", "created_at"]
    raw_id_fields = ["run"]
