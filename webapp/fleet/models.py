"""What the workers say about themselves, and what each launch was checked against.

A worker's main process reports every few seconds (workers/registry.py): its queues, slots, GPUs and
their memory, whether vLLM and DeepSpeed import, and the catalogue of models under its model roots.
One row per worker name, overwritten in place; a row older than ORLAB_WORKER_STALE_AFTER seconds (or
one whose worker shut down) is stale and no launch is validated against it."""

from django.db import models


class WorkerReport(models.Model):
    name = models.CharField(max_length=255, unique=True, help_text="Celery node name, e.g. gpu1@host")
    host = models.CharField(max_length=255)
    queues = models.JSONField(default=list, help_text="queues the worker consumes")
    slots = models.PositiveIntegerField(default=1, help_text="tasks it runs at once (concurrency)")
    visible_gpus = models.PositiveIntegerField(default=0, help_text="GPUs its processes can see")
    gpus = models.JSONField(default=list, help_text="[{index, name, total_bytes, free_bytes}]")
    torch_version = models.CharField(max_length=64, blank=True)
    has_vllm = models.BooleanField(default=False)
    vllm_version = models.CharField(max_length=64, blank=True)
    has_deepspeed = models.BooleanField(default=False)
    deepspeed_version = models.CharField(max_length=64, blank=True)
    catalogue = models.JSONField(default=list, help_text="model entries (trainers.common.model_roots)")
    notes = models.JSONField(default=list, help_text="what the operator should know (missing roots, ...)")
    started_at = models.DateTimeField()
    reported_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True, help_text="set by a clean shutdown")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.queues)})"

    @property
    def gpu_memory_bytes(self) -> int | None:
        """Total memory of the worker's smallest visible GPU (None without GPUs)."""
        totals = [g.get("total_bytes") for g in self.gpus if g.get("total_bytes")]
        return min(totals) if totals else None

    def consumes(self, queue: str) -> bool:
        return queue in self.queues


class LaunchCheck(models.Model):
    """The workers a run's config was checked against at launch; none means it was accepted unchecked
    because no worker of its queue had reported (the run page says so)."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="launch_check")
    queue = models.CharField(max_length=64)
    workers = models.JSONField(default=list, help_text="names of the fresh workers of the queue")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"run {self.run_id}: {'checked' if self.workers else 'unchecked'} on {self.queue}"

    @property
    def checked(self) -> bool:
        return bool(self.workers)
