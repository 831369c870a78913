"""Channels (who may change them, what a valid one is) and the deliveries written for run ends,
rule events and tests. Deliveries are written in a transaction and their messages sent after it
commits (webapp.notify.sender.schedule)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from webapp.errors import ServiceError
from webapp.notify import addresses, payloads, sender
from webapp.notify.models import RUN_END_STATUSES, Channel, Delivery
from webapp.projects.models import Membership, Project

MAX_EMAILS = 20
MAX_RULE_IDS = 500
#: what a new channel notifies about when the request does not say: every end but interrupted
#: (an interrupted run is usually re-queued by its worker's shutdown)
DEFAULT_RUN_STATUSES = ["succeeded", "failed", "lost", "cancelled"]


class NotifyError(ServiceError):
    """A channel request that cannot be carried out (400 naming the fields)."""


class NotOwner(ServiceError):
    """Channels are managed by the project's owners; members only see them."""

    status = 403


def is_owner(user, project: Project) -> bool:
    return (
        project.owner_id == user.pk
        or Membership.objects.filter(project=project, user=user, role=Membership.Role.OWNER).exists()
    )


def require_owner(user, project: Project) -> None:
    if not is_owner(user, project):
        raise NotOwner(
            "only the project's owners manage its notification channels",
            {"project": ["you are a member, not an owner, of this project"]},
        )


def secret_hint(secret: str) -> str:
    """What is shown of a secret: its length and last 4 characters, never the whole."""
    return f"{'•' * 4}{secret[-4:]} ({len(secret)} characters)" if secret else ""


def _clean(data: Mapping[str, Any], channel: Channel | None) -> dict[str, Any]:
    """The channel fields of ``data`` checked against each other and the kind (field errors: 400)."""
    kind = channel.kind if channel is not None else data.get("kind")
    out = dict(data)
    errors: dict[str, list[str]] = {}
    if kind == Channel.Kind.WEBHOOK:
        url = out.get("url", channel.url if channel else "")
        if not url:
            errors["url"] = ["a webhook needs a URL"]
        elif "url" in out:
            try:
                addresses.resolve(url)
            except addresses.AddressRefused as exc:
                errors["url"] = [str(exc)]
        if "emails" in out and out["emails"]:
            errors["emails"] = ["a webhook channel has no e-mail addresses"]
    elif kind == Channel.Kind.EMAIL:
        emails = out.get("emails", channel.emails if channel else [])
        if not emails:
            errors["emails"] = ["an e-mail channel needs at least one address"]
        for i, address in enumerate(out.get("emails") or []):
            try:
                validate_email(address)
            except ValidationError:
                errors[f"emails[{i}]"] = [f"{address!r} is not an e-mail address"]
        if len(out.get("emails") or []) > MAX_EMAILS:
            errors["emails"] = [f"at most {MAX_EMAILS} addresses"]
        if out.get("url"):
            errors["url"] = ["an e-mail channel has no URL"]
        if out.get("secret"):
            errors["secret"] = ["an e-mail channel has no secret"]
    for i, status in enumerate(out.get("run_statuses") or []):
        if status not in RUN_END_STATUSES:
            errors[f"run_statuses[{i}]"] = [f"one of {', '.join(RUN_END_STATUSES)}"]
    if "run_statuses" in out:
        out["run_statuses"] = sorted(set(out["run_statuses"]), key=RUN_END_STATUSES.index)
    rules = out.get("rules", channel.rules if channel else Channel.Rules.ALL)
    rule_ids = out.get("rule_ids", channel.rule_ids if channel else [])
    if len(rule_ids) > MAX_RULE_IDS:
        errors["rule_ids"] = [f"at most {MAX_RULE_IDS} rules"]
    elif rules == Channel.Rules.CHOSEN and not rule_ids:
        errors["rule_ids"] = ["choose at least one rule (or subscribe to all rules, or none)"]
    if "rule_ids" in out:
        out["rule_ids"] = sorted(set(out["rule_ids"]))
    if errors:
        raise NotifyError("invalid channel", errors)
    return out


def channel_create(*, user, project: Project, data: Mapping[str, Any]) -> tuple[Channel, str]:
    """A new channel; returns it and the secret when the server generated one (shown to the creator
    once, never again). A webhook without a secret gets a random one."""
    require_owner(user, project)
    fields = _clean(data, None)
    generated = ""
    if fields.get("kind") == Channel.Kind.WEBHOOK and not fields.get("secret"):
        generated = fields["secret"] = secrets.token_urlsafe(32)
    fields.setdefault("run_statuses", list(DEFAULT_RUN_STATUSES))
    try:
        with transaction.atomic():
            channel = Channel.objects.create(project=project, created_by=user, **fields)
    except IntegrityError:
        raise NotifyError(
            "name taken", {"name": ["this project already has a channel of this name"]}
        ) from None
    return channel, generated


def channel_update(*, user, channel: Channel, data: Mapping[str, Any]) -> Channel:
    require_owner(user, channel.project)
    if "kind" in data and data["kind"] != channel.kind:
        raise NotifyError(
            "invalid channel", {"kind": ["the kind of a channel cannot change; create another"]}
        )
    fields = _clean({k: v for k, v in data.items() if k != "kind"}, channel)
    if "secret" in fields and not fields["secret"]:
        del fields["secret"]  # an empty secret keeps the old one (the page never has it to send back)
    for name, value in fields.items():
        setattr(channel, name, value)
    try:
        with transaction.atomic():
            channel.save()
    except IntegrityError:
        raise NotifyError(
            "name taken", {"name": ["this project already has a channel of this name"]}
        ) from None
    return channel


def channel_delete(*, user, channel: Channel) -> None:
    require_owner(user, channel.project)
    channel.delete()


@transaction.atomic
def send_test(*, user, channel: Channel) -> Delivery:
    """A test delivery to ``channel`` (owners only), sent as any other."""
    require_owner(user, channel.project)
    delivery = Delivery.objects.create(
        channel=channel,
        subject=Delivery.Subject.TEST,
        key=f"test:{uuid.uuid4().hex}",
        payload=payloads.test(channel, user),
    )
    sender.schedule([delivery.pk])
    return delivery


def _write(rows: Iterable[tuple[Channel, str, dict]], **fields) -> list[int]:
    """Deliveries for (channel, key, payload) rows; a key already delivered to a channel is skipped
    (the same run end or event reported twice). Returns the ids of the new ones."""
    created = []
    for channel, key, payload in rows:
        delivery, new = Delivery.objects.get_or_create(
            channel=channel, key=key, defaults={"payload": payload, **fields}
        )
        if new:
            created.append(delivery.pk)
    return created


def _channels_by_project(project_ids: Iterable[int]) -> dict[int, list[Channel]]:
    by_project: dict[int, list[Channel]] = {}
    for channel in Channel.objects.filter(project_id__in=set(project_ids), enabled=True).select_related(
        "project"
    ):
        by_project.setdefault(channel.project_id, []).append(channel)
    return by_project


def deliveries_for_runs(run_ids: Iterable[int]) -> list[int]:
    """A delivery per (subscribed channel, ended run): one per attempt and end status."""
    from webapp.runs.models import Run

    runs = list(Run.objects.filter(pk__in=list(run_ids)).select_related("project"))
    channels = _channels_by_project(r.project_id for r in runs)
    created: list[int] = []
    with transaction.atomic():
        for run in runs:
            if run.status not in RUN_END_STATUSES:
                continue  # resumed meanwhile: its next end notifies
            payload = payloads.run_ended(run)
            for channel in channels.get(run.project_id, []):
                if run.status in channel.run_statuses:
                    key = f"run:{run.pk}:{run.attempt}:{run.status}"
                    created += _write([(channel, key, payload)], subject=Delivery.Subject.RUN_END, run=run)
        sender.schedule(created)
    return created


def _event_parts(event) -> tuple[int | None, Any, Any]:
    """(project id, run, rule) of a webapp.alerts event, read from whichever it carries."""
    run = getattr(event, "run", None)
    rule = getattr(event, "rule", None)
    project_id = getattr(event, "project_id", None)
    if project_id is None and run is not None:
        project_id = run.project_id
    if project_id is None and rule is not None:
        project_id = getattr(rule, "project_id", None)
    return project_id, run, rule


def deliveries_for_event(event) -> list[int]:
    """A delivery per channel of the event's project subscribed to its rule (all rules, or chosen
    ones including it)."""
    project_id, run, rule = _event_parts(event)
    if project_id is None:
        return []
    rule_id = getattr(event, "rule_id", None) or getattr(rule, "pk", None)
    project = Project.objects.get(pk=project_id)
    payload = payloads.rule_fired(event, project, run=run, rule=rule)
    created: list[int] = []
    with transaction.atomic():
        for channel in _channels_by_project([project_id]).get(project_id, []):
            wanted = channel.rules == Channel.Rules.ALL or (
                channel.rules == Channel.Rules.CHOSEN and rule_id in channel.rule_ids
            )
            if wanted:
                created += _write(
                    [(channel, f"event:{event.pk}", payload)],
                    subject=Delivery.Subject.EVENT,
                    event_id=event.pk,
                    run=run,
                )
        sender.schedule(created)
    return created
