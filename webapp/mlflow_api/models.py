from django.db import models

from webapp.runs.models import Run


class MlflowRun(models.Model):
    """What MLflow keeps about a run that orlab's Run has no field for. Created on first use (a run
    created through /mlflow, or any run of the caller's projects an MLflow call touches)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="mlflow")
    # key -> value exactly as sent (MLflow params are immutable strings); a typed copy is in run.config
    params = models.JSONField(default=dict, blank=True)
    # key -> value (MLflow tags, system tags mlflow.* included); user tags are mirrored in run.tags
    tags = models.JSONField(default=dict, blank=True)
    # log-inputs: the dataset inputs as sent, returned by runs/get
    inputs = models.JSONField(default=list, blank=True)
    # runs/delete: MLflow's lifecycle_stage "deleted" (the orlab run stays; restore clears it)
    deleted_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"mlflow state of run {self.run_id}"
