"""Trainer kinds: each with its config JSON Schema and presets (what the launch form renders)."""

from __future__ import annotations

from rest_framework import generics

from trainers.base import all_specs
from webapp.api import serializers as s


def trainer_to_dict(spec) -> dict:
    return {
        "kind": spec.kind,
        "title": spec.title,
        "description": spec.description,
        "queue": spec.queue,
        "config_schema": spec.json_schema(),
        "presets": spec.presets,
        "preset_hardware": spec.preset_hardware,
        "sweep_presets": spec.sweep_presets,
        "primary_metrics": list(spec.primary_metrics),
        # what the platform offers this kind's runs besides training (TrainerSpec's capabilities)
        "capabilities": {
            "policy_checkpoints": spec.policy_checkpoints,
            "evaluate_checkpoints": spec.evaluator is not None,
            "score_datasets": spec.scorer is not None,
            "publishes_datasets": list(spec.publishes_datasets),
            "panels": list(spec.panels),
        },
    }


class TrainerListApi(generics.ListAPIView):
    """Every trainer kind, with its config JSON Schema and presets (what the launch form renders)."""

    serializer_class = s.TrainerSerializer
    filter_backends = []

    def get_queryset(self):
        return all_specs()

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([trainer_to_dict(spec) for spec in page])
