"""Notification channels and deliveries as the API reads and writes them (webapp.notify)."""

from __future__ import annotations

from rest_framework import serializers

from webapp.api.serializers import TextField
from webapp.notify.models import RUN_END_STATUSES, Channel, Delivery
from webapp.notify.services import secret_hint


class ChannelWriteSerializer(serializers.Serializer):
    """A channel's fields as sent (create: ``name`` and ``kind`` required; update: any subset). The
    address checks (public URL, e-mail syntax, fields of the other kind) are webapp.notify.services'."""

    name = TextField(max_length=100, min_length=1)
    kind = serializers.ChoiceField(choices=Channel.Kind.choices)
    url = TextField(max_length=2000, required=False, allow_blank=True, help_text="webhook: http(s) URL")
    secret = TextField(
        max_length=200,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        help_text="webhook: the HMAC-SHA256 key (omitted on create: generated and returned once; "
        "empty on update: kept)",
    )
    emails = serializers.ListField(
        child=TextField(max_length=254), required=False, max_length=20, help_text="e-mail: the addresses"
    )
    run_statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=RUN_END_STATUSES),
        required=False,
        max_length=len(RUN_END_STATUSES),
        help_text="the run ends that notify (default: succeeded, failed, lost, cancelled)",
    )
    rules = serializers.ChoiceField(
        choices=Channel.Rules.choices, required=False, help_text="health-rule events: all, chosen or none"
    )
    rule_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=500,
        help_text="rules: chosen: the rule ids (webapp.alerts)",
    )
    enabled = serializers.BooleanField(required=False)

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("a name is required")
        return value.strip()


class ChannelSerializer(serializers.ModelSerializer):
    secret_hint = serializers.SerializerMethodField(help_text="the secret's last 4 characters (never all)")
    secret = serializers.SerializerMethodField(
        help_text="the generated secret, in the creation's answer only (null everywhere else)"
    )

    class Meta:
        model = Channel
        fields = [
            "id", "project", "name", "kind", "url", "emails", "run_statuses", "rules", "rule_ids",
            "enabled", "secret_hint", "secret", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_secret_hint(self, channel: Channel) -> str:
        return secret_hint(channel.secret)

    def get_secret(self, channel: Channel) -> str | None:
        return self.context.get("generated_secret") or None


class DeliverySerializer(serializers.ModelSerializer):
    channel_name = serializers.CharField(source="channel.name", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id", "channel", "channel_name", "subject", "run", "event_id", "status", "attempts", "last_error",
            "next_attempt_at", "sent_at", "created_at", "payload",
        ]  # fmt: skip
        read_only_fields = fields
