"""One reconcile of a channel: read -> decide (pure modules) -> apply children -> Auth0 -> status.

Level-triggered: every pass derives everything from the channel, its Secrets and its children,
so a kick from any watch (or a restart) converges to the same result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast

import kopf

from . import cleanup, endpoints, metrics, names, receipt_tokens, render, rotation, secret_watch, selector_migration, status
from .auth0 import Auth0Credentials, Auth0Error, DesiredIntegration, RoutingRefused, routing, sync as auth0_sync
from .auth0.model import DesiredLogStream, Integration
from .kube import Applied, KubeApi, KubeError
from .runtime import (
    ChannelMemory,
    ChildKey,
    ChildrenMemory,
    Prepared,
    ReportMemory,
    Runtime,
    child_key,
    child_token,
    digest,
    jittered,
    read_rollout,
    rollout_signal,
)
from .secrets import SECRET_NOT_FOUND, SecretProblem, check_state_password, checksum, new_signing_key, secret_value, signing_keys
from .spec import ChannelSpec, SpecError, parse_channel

# Retry delays after Auth0 failures that may clear by themselves, and for those that need a
# human (a Secret change or spec change kicks the channel sooner).
TRANSIENT_BACKOFF = (2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STALLED_RECHECK = 300.0
# While the tenant does not route OTPs to us, look again this often (a person may fix it).
ROUTING_RECHECK = 60.0
# The referenced Secrets, as messages name them (each has its own grace while missing).
SMS_API_KEY, AUTH0_CREDENTIALS, STATE_PASSWORD = "8x8 API key", "Auth0 credentials", "state store password"
LEGACY_HOOK_EOL = ("legacy-hook is end-of-life: Auth0 Hooks reached end of life on 2026-11-18; "
                   "move to integration phone-provider")


def _creation_time(meta: Mapping[str, Any]) -> float | None:
    stamp = meta.get("creationTimestamp")
    if not stamp:
        return None
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def auth0_backoff(error: Auth0Error, failures: int) -> float:
    if error.reason in status.STALLED_REASONS:
        return STALLED_RECHECK
    base = jittered(TRANSIENT_BACKOFF[min(failures, len(TRANSIENT_BACKOFF)) - 1])
    return max(base, error.retry_after or 0.0)


def credentials_for(ch: ChannelSpec, secret: Mapping[str, Any] | None) -> Auth0Credentials:
    return Auth0Credentials(
        domain=ch.auth0.domain,
        client_id=secret_value(secret, ch.auth0.client_id_ref, ch.namespace),
        client_secret=secret_value(secret, ch.auth0.client_secret_ref, ch.namespace),
    )


def desired_integration(ch: ChannelSpec, signing_key: str) -> DesiredIntegration:
    return DesiredIntegration(
        owner=ch.owner,
        integration=cast(Integration, ch.auth0.integration),  # one of INTEGRATIONS (parse_channel)
        name=ch.auth0.name,
        relay_url=ch.relay.public_url,
        signing_key=signing_key,
        replace_foreign_provider=ch.auth0.replace_foreign_provider,
        replace_foreign_action=ch.auth0.replace_foreign_action,
        manage_routing=ch.auth0.manage_routing,
        flows=ch.auth0.flows,
        voice=ch.voice is not None,
        offer_voice=ch.voice is not None and ch.voice.offer,
    )


def _event(body: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    (kopf.warn if warning else kopf.info)(dict(body), reason=reason, message=message)


async def _apply_children(
    rt: Runtime, mem: ChannelMemory, body: Mapping[str, Any], children: render.Children,
    read_now: Mapping[tuple[str, str], dict[str, Any] | None],
) -> dict[str, Any]:
    """Apply in dependency order (the Secret before the Deployment); returns the live Deployment.
    ``read_now``: children this reconcile has just read, by (kind, name)."""
    kube, known = rt.kube, mem.children
    rt.check_not_deleting(body)
    await _refuse_foreign(rt, body, children.apply, read_now)
    secret, deployment, *rest = children.apply
    markers = {id(m): rt.cache.marker(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"])
               for m in children.apply}
    known.applying = True
    try:
        results: list[tuple[dict[str, Any], Applied]] = [(secret, await kube.apply(secret))]
        applied = await asyncio.gather(selector_migration.apply_deployment(kube, deployment),
                                       *(kube.apply(m) for m in rest))
    finally:
        known.applying = False
    results.extend(zip((deployment, *rest), applied))
    changes = []
    for manifest, outcome in results:
        change = _record_child(known, manifest, outcome)
        if change is not None:
            changes.append(change)
        meta = manifest["metadata"]
        rt.cache.stored(manifest["kind"], meta["namespace"], meta["name"], outcome.obj, markers[id(manifest)])
    known.converged_at = None
    # Events that arrived during the apply were not judged (our own create would look foreign
    # before we had its token): judge them now, from the newest event of each child.
    known.dirty = any(_changed_by_others(rt, known, m) for m in children.apply)
    if known.dirty:
        rt.wakeups.kick(body["metadata"]["namespace"], body["metadata"]["name"])
    _child_events(body, changes)
    pending = [ref for ref in children.delete if child_key(ref.kind, ref.name) not in known.absent_confirmed]
    existed = await asyncio.gather(*(_delete_optional(rt, body, ref) for ref in pending))
    for ref, was_there in zip(pending, existed):
        if was_there:
            _event(body, "Deleted", f"deleted {ref.describe()} (no longer in the spec)")
        known.absent_confirmed.add(child_key(ref.kind, ref.name))
        known.tokens.pop(child_key(ref.kind, ref.name), None)
    for manifest in children.apply:
        known.absent_confirmed.discard(_key_of(manifest))
    return rt.cache.get("Deployment", deployment["metadata"]["namespace"], deployment["metadata"]["name"]) \
        or applied[0].obj


def _key_of(manifest: Mapping[str, Any]) -> ChildKey:
    return child_key(manifest["kind"], manifest["metadata"]["name"])


def _changed_by_others(rt: Runtime, known: ChildrenMemory, manifest: Mapping[str, Any]) -> bool:
    """Whether the newest watch event of an applied child shows a change other than ours: it is
    gone, re-created, or has a newer generation (or, for kinds without one, another
    resourceVersion) than our apply left."""
    kind, meta = manifest["kind"], manifest["metadata"]
    if not rt.cache.known(kind, meta["namespace"], meta["name"]):
        return False
    seen = rt.cache.get(kind, meta["namespace"], meta["name"])
    if seen is None:
        return True
    seen_uid, seen_version = child_token(seen)
    our_uid, our_version = known.tokens[child_key(kind, meta["name"])]
    if seen_uid != our_uid:
        return True
    if (seen.get("metadata") or {}).get("generation"):
        return int(seen_version) > int(our_version)
    return seen_version != our_version


async def _delete_optional(rt: Runtime, body: Mapping[str, Any], ref: render.ChildRef) -> bool:
    """Delete a child the spec no longer asks for, if it exists and is ours; whether it did."""
    if rt.cache.known(ref.kind, ref.namespace, ref.name):
        current = rt.cache.get(ref.kind, ref.namespace, ref.name)
    elif not body.get("status"):
        # The channel's first pass: nothing can point to its new uid yet, and a child carrying
        # its labels would have come through the watch (into the cache).
        return False
    else:
        current = await rt.kube.find(ref.api_version, ref.kind, ref.namespace, ref.name)
    if current is None or not owned_by(current, body["metadata"]["uid"], body["metadata"]["name"]):
        return False
    return await rt.kube.delete(ref.api_version, ref.kind, ref.namespace, ref.name)


def owned_by(obj: Mapping[str, Any], channel_uid: str, channel: str) -> bool:
    """Ours: it points to this channel, or (restored from a backup, say) it carries our labels
    for this channel and no other controller claims it."""
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(ref.get("uid") == channel_uid for ref in refs):
        return True
    labels = meta.get("labels") or {}
    return (not any(ref.get("controller") for ref in refs)
            and labels.get(names.LABEL_MANAGED_BY) == names.OPERATOR_NAME and labels.get(names.LABEL_CHANNEL) == channel)


async def _refuse_foreign(rt: Runtime, body: Mapping[str, Any], manifests: tuple[dict[str, Any], ...],
                          read_now: Mapping[tuple[str, str], dict[str, Any] | None]) -> None:
    """Server-side apply with force would silently take over an unrelated object that happens to
    have a child's name: refuse instead, naming it."""
    meta = body["metadata"]

    async def existing(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        kind, namespace, name = manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        if rt.cache.known(kind, namespace, name):
            return rt.cache.get(kind, namespace, name)
        if (kind, name) in read_now:  # e.g. the relay's Secrets, which the cache only keeps once labelled
            return read_now[kind, name]
        marker = rt.cache.marker(kind, namespace, name)
        found = await rt.kube.find(manifest["apiVersion"], kind, namespace, name)
        if found is None:
            rt.cache.stored(kind, namespace, name, None, marker)
        return found

    found = await asyncio.gather(*(existing(m) for m in manifests))
    foreign = [f"{m['kind']} {m['metadata']['namespace']}/{m['metadata']['name']}"
               for m, obj in zip(manifests, found) if obj is not None and not owned_by(obj, meta["uid"], meta["name"])]
    if foreign:
        raise KubeError(409, f"{', '.join(foreign)} already exists and does not belong to this OtpChannel; "
                             "the operator does not take over objects it did not create: delete or rename it")


@dataclasses.dataclass(frozen=True)
class ChildChange:
    """What an apply did to a child, worth an Event."""

    reason: str
    what: str
    warning: bool


def _record_child(known: ChildrenMemory, manifest: Mapping[str, Any], outcome: Applied) -> ChildChange | None:
    """Remember what was applied; returns what happened when worth an Event."""
    meta = outcome.obj.get("metadata") or {}
    key = _key_of(manifest)
    token = child_token(outcome.obj)
    applied_digest = digest(manifest)
    before, before_digest = known.tokens.get(key), known.digests.get(key)
    describe = f"{manifest['kind']} {meta.get('namespace')}/{meta.get('name')}"
    known.tokens[key] = token
    known.digests[key] = applied_digest
    if outcome.created:
        return (ChildChange("Created", describe, False) if before is None
                else ChildChange("Repaired", f"re-created {describe} (it was deleted)", True))
    if before is not None and before != token:
        if before_digest == applied_digest:
            return ChildChange("Repaired", f"restored {describe} (edited outside the operator)", True)
        return ChildChange("Updated", describe, False)
    return None


def _child_events(body: Mapping[str, Any], changes: list[ChildChange]) -> None:
    """One Event per reason and reconcile (not per child): Events are API writes too."""
    for reason in dict.fromkeys(change.reason for change in changes):
        items = [change.what for change in changes if change.reason == reason]
        warning = any(change.warning for change in changes if change.reason == reason)
        verb = {"Created": "created ", "Updated": "updated "}.get(reason, "")
        _event(body, reason, verb + "; ".join(items), warning=warning)


async def _write_status(
    kube: KubeApi, body: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    current = body.get("status") or {}
    changed = {key: value for key, value in new.items() if current.get(key) != value}
    if changed:
        meta = body["metadata"]
        await kube.patch_channel_status(meta["namespace"], meta["name"], changed)


def _observe_ready(report: ReportMemory, generation: int, conditions: list[dict[str, Any]], now: float) -> None:
    ready = (status.find(conditions, status.READY) or {}).get("status") == "True"
    if ready and report.ready_generation != generation:
        started = report.generation_seen_at.pop(generation, None)
        if started is not None:
            metrics.TIME_TO_READY.observe(max(0.0, now - started))
        if report.ready_generation is None:
            metrics.READY_CHANNELS.inc()
        report.ready_generation = generation
    elif not ready and report.ready_generation is not None:
        metrics.READY_CHANNELS.dec()
        report.ready_generation = None


@dataclasses.dataclass(frozen=True)
class Pass:
    """What one reconcile pass is about: the channel as read, once, and what the pass may use
    beside the runtime (kopf's credentials index; ``rt.clock`` gives the time)."""

    body: Mapping[str, Any]
    namespace: str
    name: str
    generation: int
    current: Mapping[str, Any]  # status as read
    previous_conditions: list[dict[str, Any]]
    mem: ChannelMemory
    stamp: str
    credentials_index: Mapping[Any, Any]  # kopf's channels_needing_credentials (kept live by kopf)
    # Where a pass leaves work that only waits on Auth0 (the head start while the relay rolls
    # out), for its caller to run after the pass; None: the pass runs it itself.
    deferred: list[Callable[[], Awaitable[None]]] | None = None

    @classmethod
    def of(cls, rt: Runtime, body: Mapping[str, Any], credentials_index: Mapping[Any, Any] | None = None,
           deferred: list[Callable[[], Awaitable[None]]] | None = None) -> "Pass":
        meta = body["metadata"]
        current = body.get("status") or {}
        return cls(body, meta["namespace"], meta["name"], int(meta.get("generation") or 1), current,
                   current.get("conditions") or [], rt.memory(meta["namespace"], meta["name"]), rt.clock.stamp(),
                   credentials_index if credentials_index is not None else {}, deferred)

    async def later(self, work: Callable[[], Awaitable[None]]) -> None:
        if self.deferred is None:
            await work()
        else:
            self.deferred.append(work)

    def guard(self, rt: Runtime) -> Callable[[], None]:
        """Run before each Auth0 write of this pass: stops it once the channel's deletion began."""
        return lambda: rt.check_not_deleting(self.body)

    def waiting_for_relay(self) -> status.Verdict:
        return _auth0_waiting(self.previous_conditions)


@dataclasses.dataclass
class Outcome:
    """What a pass found, for the one place that writes status (``_finish``): the verdicts, the
    status fields beside the conditions, and when to look again (None: only on a change).

    ``kind`` says what else ``_finish`` does: a ``"pass"`` counts itself, tracks readiness and
    posts the Event of a new failure; ``"suspended"`` only counts itself; ``"error"`` (after an
    unexpected failure, counted by the loop) and ``"deleting"`` (the deletion is blocked; its
    handler posts the Events) only write, and not observedGeneration: they finished no pass."""

    relay: status.Verdict | status.Kept
    auth0: status.Verdict | status.Kept
    routing: status.Part = None
    delivering: status.Part = None
    # KEPT (a pass that stopped before the Auth0 phase): ConversionTracking stays as it was,
    # so a stream still to delete is not forgotten; None: conversion is off, no condition
    conversion: status.Part = status.KEPT
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    delay: float | None = None
    kind: Literal["pass", "suspended", "error", "deleting"] = "pass"
    ready: status.Verdict | None = None  # instead of the summary of the parts (after an error)


@dataclasses.dataclass(frozen=True)
class RelayPhase:
    """The relay's side once its children are applied."""

    verdict: status.Verdict
    available: int
    rolled_out: bool
    secrets_checksum: str
    signing_plan: rotation.SigningPlan
    log_tokens: tuple[str, ...] = ()  # the log stream's bearer tokens (spec.conversion), oldest first


@dataclasses.dataclass
class Auth0Phase:
    verdict: status.Verdict
    routing: status.Verdict | None
    recorded: dict[str, Any] | None  # status.auth0
    signing_state: rotation.SigningState
    delays: list[float]
    conversion: status.Verdict | None = None


async def reconcile(rt: Runtime, body: Mapping[str, Any], logger: logging.Logger,
                    credentials_index: Mapping[Any, Any] | None = None,
                    deferred: list[Callable[[], Awaitable[None]]] | None = None) -> float | None:
    """Bring one channel to its desired state; returns seconds until it should run again.
    ``credentials_index``: kopf's channels_needing_credentials index; ``deferred``: see Pass."""
    run = Pass.of(rt, body, credentials_index, deferred)
    report = run.mem.report
    if run.generation not in report.generation_seen_at:
        created = _creation_time(body["metadata"]) if run.generation == 1 else None
        report.generation_seen_at[run.generation] = created or rt.clock.wall()
    return await _finish(rt, run, await _phases(rt, run))


async def _phases(rt: Runtime, run: Pass) -> Outcome:
    """Gather, then the relay phase, then the Auth0 phase; any early stop is an Outcome too."""
    config, now = rt.config, rt.clock.wall()
    try:
        ch = parse_channel(run.namespace, run.name, run.body.get("spec") or {})
        endpoints.check_channel(ch, config.endpoints, config.relay_image)  # before any Secret is read or sent
        render.check_store_capacity(ch)
    except SpecError as error:
        verdict = status.false(error.reason, str(error))
        return Outcome(verdict, verdict)
    if ch.suspend:  # the conditions stay as they were (status.KEPT)
        return Outcome(status.KEPT, status.KEPT, status.KEPT, status.KEPT, kind="suspended")

    store = ch.relay.state_store
    if store is not None and store.password is not None:  # before anything is applied
        try:
            check_state_password(await rt.kube.get_metadata("v1", "Secret", run.namespace, store.password.name),
                                 store.password, run.namespace)
        except SecretProblem as problem:
            relay_v = _secret_verdict(run.mem, problem, STATE_PASSWORD, config.secret_grace, now)
            # the opt-in label is not watched (the operator never watches this Secret): look again
            return Outcome(relay_v, run.waiting_for_relay(), delay=_recheck_secret(
                run.mem, problem, STATE_PASSWORD, config.secret_grace, now) or secret_watch.STALLED_RECHECK)
        _secret_found(run.mem, STATE_PASSWORD)

    sms_secret, creds_secret, signing_secret, deployment, receipt_secret, log_secret = await asyncio.gather(
        secret_watch.read_referenced(rt, run.namespace, ch.sms.api_key.name),
        secret_watch.read_referenced(rt, run.namespace, ch.auth0.credentials_secret,
                                     names.FINALIZER_CREDENTIALS_IN_USE if cleanup.needs_credentials(ch) else None),
        rt.read("v1", "Secret", run.namespace, names.signing_key_secret_name(run.name)),
        rt.read("apps/v1", "Deployment", run.namespace, names.relay_name(run.name)),
        rt.read("v1", "Secret", run.namespace, names.receipt_token_secret_name(run.name)),
        _read_log_tokens(rt, run, ch),
    )
    try:
        api_key = secret_value(sms_secret, ch.sms.api_key, run.namespace)
    except SecretProblem as problem:
        return Outcome(_secret_verdict(run.mem, problem, SMS_API_KEY, config.secret_grace, now),
                       run.waiting_for_relay(), delay=_recheck_secret(run.mem, problem, SMS_API_KEY,
                                                                      config.secret_grace, now))
    _secret_found(run.mem, SMS_API_KEY)

    relay = await _relay_phase(rt, run, ch, api_key, signing_secret, deployment, receipt_secret, log_secret)
    if isinstance(relay, Outcome):
        return relay
    auth0 = await _auth0_phase(rt, run, ch, relay, creds_secret)
    rotation_delay = rotation.retry_after(
        rotation.SigningPlan(relay.signing_plan.keys, relay.signing_plan.auth0_key, auth0.signing_state),
        rt.clock.wall(),
        config.rotation_grace, config.key_propagation,
    )
    delays = [*auth0.delays, *([rotation_delay] if rotation_delay is not None else [])]
    fields: dict[str, Any] = {
        "relay": {
            "url": ch.relay.public_url,
            "serviceUrl": render.service_url(ch),
            "availableReplicas": relay.available,
            "secretsChecksum": relay.secrets_checksum,
            "limitsScope": render.limits_scope(ch),
            "atMostOneSms": render.at_most_one_sms(ch),
        },
        "signingKey": auth0.signing_state.as_status(len(relay.signing_plan.keys)),
    }
    if auth0.recorded:
        fields["auth0"] = auth0.recorded
    if ch.canary is None and run.current.get("canary"):
        fields["canary"] = None  # spec.canary removed: its record goes (merge patch)
    delivering = status.delivering_verdict(run.current.get("canary"), ch.auth0.integration,
                                           ch.canary.masked if ch.canary else "", ch.canary is not None)
    return Outcome(relay.verdict, auth0.verdict, auth0.routing, delivering, auth0.conversion, fields,
                   min(delays) if delays else None)


async def _read_log_tokens(rt: Runtime, run: Pass, ch: ChannelSpec) -> dict[str, Any] | None:
    """The log stream's token Secret: read with spec.conversion, or while ConversionTracking
    is still there (conversion was just turned off: the Secret goes); else no request at all."""
    if ch.conversion is None and status.find(run.previous_conditions, status.CONVERSION_TRACKING) is None:
        return None
    return await rt.read("v1", "Secret", run.namespace, names.log_stream_token_secret_name(run.name))


async def _relay_phase(rt: Runtime, run: Pass, ch: ChannelSpec, api_key: str, signing_secret: dict[str, Any] | None,
                       deployment: dict[str, Any] | None, receipt_secret: dict[str, Any] | None,
                       log_secret: dict[str, Any] | None = None) -> RelayPhase | Outcome:
    """Plan the signing key, render the children and apply them when something changed."""
    config, known, meta = rt.config, run.mem.children, run.body["metadata"]
    keys_now = signing_keys(signing_secret)
    # The log tokens are in the checksum: the relay pods roll when they change, so a rolled-out
    # relay has loaded every token before Auth0's stream is moved to the newest.
    log_tokens_now = tuple(receipt_tokens.LOG_STREAM.current(log_secret)[0])
    log_plan = receipt_tokens.LOG_STREAM.plan(log_secret, receipt_tokens.LOG_STREAM.requested(
        meta.get("annotations"))) if ch.conversion is not None else None
    rolled_out_now = render.relay_rollout(deployment, _checksum(
        api_key, keys_now, log_tokens_now if ch.conversion is not None else ())).rolled_out
    signing_plan = rotation.plan(
        keys_now,
        rotation.SigningState.from_status(run.current.get("signingKey")),
        (meta.get("annotations") or {}).get(names.ANNOTATION_ROTATE_SIGNING_KEY),
        rolled_out_now,
        rt.clock.wall(),
        config.rotation_grace,
        new_signing_key,
        config.key_propagation,
    )
    secrets_checksum = _checksum(api_key, list(signing_plan.keys), log_plan[0] if log_plan else ())
    children = render.render_children(
        ch,
        image=config.relay_image,
        signing_keys=signing_plan.keys,
        secrets_checksum=secrets_checksum,
        owner=render.owner_reference(meta["uid"], run.name),
        receipt_tokens=receipt_tokens.plan(
            receipt_secret, (meta.get("annotations") or {}).get(names.ANNOTATION_ROTATE_RECEIPT_TOKEN)),
        egress=config.egress,
        # without spec.conversion: a Secret still there (it was on) is deleted
        log_stream_tokens=log_plan or ((log_tokens_now, "") if log_secret is not None else None),
    )
    rendered_digests = {_key_of(m): digest(m) for m in children.apply}
    first_pass = child_key(names.SECRET.kind, names.signing_key_secret_name(run.name)) not in known.tokens
    # Re-apply only when something changed, a child was touched by someone else, or on the
    # drift timer (which also catches edits the watch cannot tell apart, e.g. labels).
    live_deployment = deployment
    if (known.dirty or any(known.digests.get(k) != d for k, d in rendered_digests.items())
            or (known.converged_at is not None
                and rt.clock.monotonic() - known.converged_at >= config.drift_interval)
            or any(child_key(ref.kind, ref.name) not in known.absent_confirmed for ref in children.delete)):
        try:
            live_deployment = await _apply_children(rt, run.mem, run.body, children, {
                ("Secret", names.signing_key_secret_name(run.name)): signing_secret,
                ("Secret", names.receipt_token_secret_name(run.name)): receipt_secret,
                ("Secret", names.log_stream_token_secret_name(run.name)): log_secret,
            })
        except KubeError as error:  # e.g. admission refused a child, quota, no Service IPs left
            known.dirty = True
            return Outcome(status.false("ApplyFailed", f"applying the relay's objects failed: {error.message}"),
                           run.waiting_for_relay(), delay=jittered(30.0))
    # A channel's first key comes with its Secret, which the Created Event names already.
    if signing_plan.event and (keys_now or not first_pass):
        _event(run.body, "SigningKey", signing_plan.event)
    rollout, verdict = read_rollout(live_deployment, secrets_checksum)
    known.secrets_checksum = secrets_checksum
    known.rollout_seen = rollout_signal(rollout, verdict)
    if known.converged_at is None and (rollout.rolled_out or ch.relay.replicas == 0):
        known.converged_at = rt.clock.monotonic()
    return RelayPhase(verdict, rollout.available, rollout.rolled_out, secrets_checksum, signing_plan,
                      log_plan[0] if log_plan else log_tokens_now)


async def _auth0_phase(rt: Runtime, run: Pass, ch: ChannelSpec, relay: RelayPhase,
                       creds_secret: dict[str, Any] | None) -> Auth0Phase:
    """Register (or check) the Auth0 side once the relay serves; prepare it while it rolls out."""
    config, mem, now = rt.config, run.mem, rt.clock.wall()
    phase = Auth0Phase(run.waiting_for_relay(), status.verdict_of(run.previous_conditions, status.PHONE_ROUTING),
                       run.current.get("auth0"), relay.signing_plan.state, [],
                       status.verdict_of(run.previous_conditions, status.CONVERSION_TRACKING))
    try:
        credentials = credentials_for(ch, creds_secret)
        mem.auth0.last_credentials = credentials
        _secret_found(mem, AUTH0_CREDENTIALS)
    except SecretProblem as problem:
        phase.verdict = _secret_verdict(mem, problem, AUTH0_CREDENTIALS, config.secret_grace, now)
        recheck = _recheck_secret(mem, problem, AUTH0_CREDENTIALS, config.secret_grace, now)
        if recheck is not None:
            phase.delays.append(recheck)
        return phase
    await _track_conversion(rt, run, ch, relay, credentials, creds_secret, phase)

    desired = desired_integration(ch, relay.signing_plan.auth0_key)
    auth0_input = digest(ch.auth0, ch.relay.public_url, relay.signing_plan.auth0_key, credentials.client_id)
    if not relay.rolled_out:
        phase.delays.append(config.progress_recheck)
        # Off the critical path while the relay rolls out: protect the credentials and get the
        # new action built and deployed (unbound), so activating it is all that is left the
        # moment the relay is available.
        await _protect_credentials(rt, run, ch, creds_secret)
        if phase.recorded or (mem.auth0.prepared and mem.auth0.prepared.auth0_input == auth0_input):
            rt.auth0.warm_up(credentials)
        else:
            await run.later(lambda: _prepare_auth0(rt, run, credentials, desired, auth0_input))
        return phase

    since_check = rt.clock.monotonic() - mem.auth0.checked_at
    if (mem.auth0.synced_input == auth0_input and since_check < config.drift_interval and phase.recorded
            and (phase.routing is None or phase.routing.ok)):
        phase.verdict = status.true("Synced", _synced_message(ch))
        phase.delays.append(config.drift_interval - since_check)
        return phase
    await _ensure_auth0(rt, run, ch, relay, credentials, creds_secret, desired, auth0_input, phase)
    return phase


async def _ensure_auth0(rt: Runtime, run: Pass, ch: ChannelSpec, relay: RelayPhase, credentials: Auth0Credentials,
                        creds_secret: dict[str, Any] | None, desired: DesiredIntegration, auth0_input: str,
                        phase: Auth0Phase) -> None:
    config, memory, kube = rt.config, run.mem.auth0, rt.kube
    try:
        await _protect_credentials(rt, run, ch, creds_secret)
        phase.recorded = await _retire_previous_integration(rt, run, ch, credentials, phase.recorded)
        prepared = (memory.prepared.recorded if memory.prepared and memory.prepared.auth0_input == auth0_input
                    else None)

        async def record_routing(changed: Mapping[str, Any]) -> None:
            # The one status write outside _finish, on purpose: the pass is not over, but each
            # tenant routing change must be on record before the next tenant write, so that a
            # failure half-way (or a crash) always leaves what to restore on deletion.
            phase.recorded = {**(phase.recorded or {}), "routingChanges": dict(changed)}
            await _write_status(kube, run.body, {"auth0": phase.recorded})

        result = await rt.auth0.ensure(credentials, desired, phase.recorded or prepared, record_routing,
                                       guard=run.guard(rt))
        if prepared and not phase.recorded and result.action_id == prepared["actionId"]:
            result = dataclasses.replace(result, created=True)  # made by prepare, live now
    except ValueError as error:  # our own input refused by the library (name, URL)
        metrics.AUTH0_CALLS.labels("ensure", "Auth0Invalid").inc()
        phase.verdict = status.false("Auth0Invalid", str(error))
        phase.delays.append(STALLED_RECHECK)
    except Auth0Error as error:
        memory.failures += 1
        metrics.AUTH0_CALLS.labels("ensure", error.reason).inc()
        phase.verdict = status.false(error.reason, error.message)
        phase.delays.append(auth0_backoff(error, memory.failures))
        if isinstance(error, RoutingRefused):
            phase.routing = _routing_verdict(error.verdict)
    else:
        metrics.AUTH0_CALLS.labels("ensure", "ok").inc()
        metrics.AUTH0_WRITES.inc(result.writes)
        memory.failures, memory.prepared = 0, None
        memory.synced_input, memory.checked_at = auth0_input, rt.clock.monotonic()
        phase.recorded = _auth0_status(ch, result, phase.recorded, run.stamp)
        _auth0_events(run.body, ch, result)
        phase.signing_state = rotation.after_auth0_synced(relay.signing_plan, rt.clock.wall())
        phase.verdict = status.true("Synced", _synced_message(ch))
        phase.delays.append(config.drift_interval)
        if result.routing is not None:
            phase.routing = _routing_verdict(result.routing)
            _routing_events(run.body, before=(run.current.get("auth0") or {}).get("routingChanges"),
                            after=result.routing.changed)
            if not phase.routing.ok:
                phase.delays.append(ROUTING_RECHECK)


async def _finish(rt: Runtime, run: Pass, outcome: Outcome) -> float | None:
    """The one place that builds conditions and writes status (conditions and the fields beside
    them) for a pass, an unexpected error and a blocked deletion alike; a pass also counts
    itself and posts the Event of a new failure."""
    conds = status.conditions(run.previous_conditions, run.generation, outcome.relay, outcome.auth0, run.stamp,
                              outcome.routing, outcome.delivering, outcome.conversion, ready=outcome.ready,
                              suspended=outcome.kind == "suspended")
    finished = outcome.kind in ("pass", "suspended")
    await _write_status(rt.kube, run.body, {**({"observedGeneration": run.generation} if finished else {}),
                                            "conditions": conds, **outcome.fields})
    if outcome.kind == "suspended":
        metrics.RECONCILES.labels("suspended").inc()
    elif outcome.kind == "pass":
        _observe_ready(run.mem.report, run.generation, conds, rt.clock.wall())
        ready = status.find(conds, status.READY) or {}
        _report(run.mem.report, run.body, "ok" if ready.get("status") == "True" else str(ready.get("reason")),
                str(ready.get("message")))
    return outcome.delay


async def report_error(rt: Runtime, body: Mapping[str, Any], error: Exception) -> None:
    """An unexpected failure must not leave a stale Ready=True: Ready goes Unknown with the error."""
    message = f"reconcile failed ({type(error).__name__}), retrying: {str(error)[:300]}"
    try:
        await _finish(rt, Pass.of(rt, body), Outcome(status.KEPT, status.KEPT, status.KEPT, status.KEPT, kind="error",
                                                     ready=status.unknown(status.RECONCILE_ERROR, message)))
    except Exception:  # noqa: BLE001 - the API server may be what failed; the loop retries anyway
        pass


async def report_deletion_blocked(rt: Runtime, body: Mapping[str, Any], reason: str, message: str) -> None:
    """The deletion waits for the Auth0 side: Auth0Synced says why; RelayAvailable stays as it was."""
    run = Pass.of(rt, body)
    relay = status.find(run.previous_conditions, status.RELAY_AVAILABLE) or {}
    relay_v = status.Verdict(str(relay.get("status") or "Unknown"), str(relay.get("reason") or "Deleting"),
                             str(relay.get("message") or "channel is being deleted"))
    await _finish(rt, run, Outcome(relay_v, status.false(reason, message), kind="deleting"))


async def _protect_credentials(rt: Runtime, run: Pass, ch: ChannelSpec, secret: Mapping[str, Any] | None) -> None:
    """Before any Auth0 write: the deletion will need these credentials, so the Secret keeps the
    in-use finalizer (released by the deletion, or here when the channel stops needing it)."""
    memory = run.mem.auth0
    needed_secret = ch.auth0.credentials_secret if cleanup.needs_credentials(ch) else ""
    previous = memory.credentials_secret
    if previous == needed_secret:
        return  # protected (or not needed) already
    if previous and not cleanup.credentials_users(run.credentials_index, ch.namespace, previous) - {ch.name}:
        await cleanup.release_credentials(rt, ch.namespace, previous)
    memory.credentials_secret = ""
    if not needed_secret or secret is None:
        return
    if names.FINALIZER_CREDENTIALS_IN_USE not in ((secret.get("metadata") or {}).get("finalizers") or ()):
        try:
            await cleanup.protect_credentials(rt, secret)
        except KubeError:  # changed since cached: once more with a fresh read
            fresh = await rt.kube.get("v1", "Secret", ch.namespace, needed_secret)
            if fresh is None:
                return
            await cleanup.protect_credentials(rt, fresh)
    memory.credentials_secret = needed_secret


async def _prepare_auth0(rt: Runtime, run: Pass, credentials: Auth0Credentials,
                         desired: DesiredIntegration, auth0_input: str) -> None:
    """A head start only: any failure is left for the ensure() after the rollout to report."""
    try:
        run.mem.auth0.prepared = Prepared(auth0_input, await rt.auth0.prepare(credentials, desired,
                                                                              guard=run.guard(rt)))
    except (Auth0Error, ValueError) as error:
        logging.getLogger(__name__).debug("preparing the Auth0 side failed (ensure retries): %s", error)


async def _retire_previous_integration(
    rt: Runtime, run: Pass, ch: ChannelSpec, credentials: Auth0Credentials, recorded: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """When spec.auth0.integration or .name changed, remove what the old one registered first."""
    if not recorded:
        return recorded
    old_integration, old_name = recorded.get("integration"), recorded.get("name")
    if (old_integration, old_name) == (ch.auth0.integration, ch.auth0.name) or not old_integration or not old_name:
        return recorded
    removed = await rt.auth0.remove(credentials, owner=ch.owner, integration=old_integration, name=old_name,
                                    recorded=recorded, guard=run.guard(rt))
    metrics.AUTH0_CALLS.labels("remove", "ok").inc()
    if removed:
        _event(run.body, "Auth0Removed", f"removed the previous {old_integration} {old_name!r}: {', '.join(removed)}")
    return None


def _checksum(api_key: str, keys: list[str], log_tokens: tuple[str, ...] = ()) -> str:
    values = {"sms-api-key": api_key, "signing-keys": "\n".join(keys)}
    if log_tokens:  # absent without spec.conversion: other channels' pods do not roll
        values["log-stream-tokens"] = "\n".join(log_tokens)
    return checksum(values)


def _secret_verdict(mem: ChannelMemory, problem: SecretProblem, what: str, grace: float, now: float) -> status.Verdict:
    """Each referenced Secret's grace runs from when this operator process first found it missing."""
    if problem.reason == SECRET_NOT_FOUND:
        mem.secrets_missing_since.setdefault(what, now)
    return status.secret_verdict(problem.reason, f"{problem.message} ({what})", _missing_for(mem, what, now), grace)


def _missing_for(mem: ChannelMemory, what: str, now: float) -> float:
    return now - mem.secrets_missing_since.get(what, now)


def _secret_found(mem: ChannelMemory, what: str) -> None:
    mem.secrets_missing_since.pop(what, None)


def _recheck_secret(mem: ChannelMemory, problem: SecretProblem, what: str, grace: float,
                    now: float) -> float | None:
    """A Secret that exists is labelled and watched (its change kicks the channel); a missing one
    is looked for again by GET (nothing announces its creation)."""
    if problem.reason != SECRET_NOT_FOUND:
        return None
    return secret_watch.recheck_missing(_missing_for(mem, what, now), grace)


def _auth0_waiting(previous_conditions: list[dict[str, Any]]) -> status.Verdict:
    before = status.find(previous_conditions, status.AUTH0_SYNCED)
    if before and before.get("status") == "True":
        return status.true(str(before.get("reason")), str(before.get("message")))
    return status.false(status.WAITING_FOR_RELAY, "waiting for the relay to be available before registering it in Auth0")


def _synced_message(ch: ChannelSpec) -> str:
    message = f"Auth0 {ch.auth0.integration} {ch.auth0.name!r} on {ch.auth0.domain} calls {ch.relay.public_url}"
    return f"{message} ({LEGACY_HOOK_EOL})" if ch.auth0.integration == "legacy-hook" else message


def _routing_verdict(routing: Any) -> status.Verdict:
    if routing.unknown:  # never True about what could not be found out
        return status.unknown(routing.reason, routing.message)
    return (status.true if routing.ok else status.false)(routing.reason, routing.message)


def _routing_events(body: Mapping[str, Any], before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
    added = sorted(set(routing.change_names(after)) - set(routing.change_names(before or {})))
    if added:
        _event(body, "Auth0RoutingChanged", "changed the tenant's phone routing (spec.auth0.manageRouting; "
               f"restored when the channel is deleted): {', '.join(added)}")


def _auth0_status(ch: ChannelSpec, result: Any, before: Mapping[str, Any] | None, stamp: str) -> dict[str, Any]:
    fields = dict(result.as_status())
    fields["name"] = ch.auth0.name
    if fields.get("deployedVersion") is not None:
        fields["deployedVersion"] = str(fields["deployedVersion"])  # the CRD declares a string
    fields["id"] = fields.get("actionId") or fields.get("hookId") or ""
    fields["lastSyncTime"] = stamp
    return {key: value for key, value in fields.items() if value not in (None, "")}


def _auth0_events(body: Mapping[str, Any], ch: ChannelSpec, result: Any) -> None:
    where = f"{ch.auth0.integration} {ch.auth0.name!r} on {ch.auth0.domain}"
    if ch.auth0.integration == "legacy-hook" and (result.created or result.updated or result.repaired):
        _event(body, "LegacyHookEndOfLife", f"{where}: {LEGACY_HOOK_EOL}", warning=True)
    if result.created:
        _event(body, "Auth0Created", f"registered {where}")
    elif result.repaired:
        _event(body, "Auth0Repaired", f"repaired drift in {where}: {', '.join(result.repaired)}", warning=True)
    elif result.updated:
        _event(body, "Auth0Updated", f"updated {where}: {', '.join(result.updated)}")


def _report(report: ReportMemory, body: Mapping[str, Any], result: str, message: str) -> None:
    """Count the reconcile; post an Event when the failure reason changes (not on every retry)."""
    metrics.RECONCILES.labels(result).inc()
    failing = result not in ("ok", "Progressing", "WaitingForRelay")
    if failing and report.last_reason != result:
        _event(body, result, message, warning=True)
    report.last_reason = result if failing else ""


def desired_log_stream(ch: ChannelSpec, tokens: tuple[str, ...]) -> DesiredLogStream:
    return DesiredLogStream(names.log_stream_name(ch.namespace, ch.name),
                            ch.relay.public_url + names.RELAY_AUTH0_LOGS_PATH, tokens)


async def _track_conversion(rt: Runtime, run: Pass, ch: ChannelSpec, relay: RelayPhase,
                            credentials: Auth0Credentials, creds_secret: dict[str, Any] | None,
                            phase: Auth0Phase) -> None:
    """spec.conversion's log stream (ConversionTracking): kept while it is on, deleted (and the
    condition dropped) once it is off. The stream gets the newest token only from a rolled-out
    relay (see the checksum in _relay_phase)."""
    if ch.conversion is None and phase.conversion is None:
        return  # never on, or its stream is gone already
    memory, desired = run.mem.auth0, desired_log_stream(ch, relay.log_tokens)
    stream_input = digest(desired.name, desired.endpoint, desired.tokens, ch.conversion is not None,
                          relay.rolled_out, credentials.client_id)
    checked = memory.log_stream_checked
    if (ch.conversion is not None and phase.conversion is not None and checked and checked[0] == stream_input
            and rt.clock.monotonic() - checked[1] < rt.config.drift_interval
            and phase.conversion.reason in (auth0_sync.LOG_STREAM_ACTIVE, auth0_sync.LOG_STREAM_WAITING)):
        return
    try:
        await _protect_credentials(rt, run, ch, creds_secret)
        if ch.conversion is None:
            removed = await rt.auth0.remove_log_stream(credentials, desired, guard=run.guard(rt))
            if removed:
                _event(run.body, "LogStreamDeleted", f"spec.conversion is off: deleted {', '.join(removed)}")
            phase.conversion, memory.log_stream_checked = None, None
            return
        result = await rt.auth0.ensure_log_stream(credentials, desired, relay.rolled_out, guard=run.guard(rt))
    except Auth0Error as error:
        metrics.AUTH0_CALLS.labels("log-stream", error.reason).inc()
        phase.conversion = status.unknown(error.reason, error.message)
        phase.delays.append(auth0_backoff(error, 1))
        return
    metrics.AUTH0_CALLS.labels("log-stream", "ok").inc()
    metrics.AUTH0_WRITES.inc(result.writes)
    memory.log_stream_checked = (stream_input, rt.clock.monotonic())
    if result.reason == auth0_sync.LOG_STREAM_WAITING:
        phase.conversion = status.unknown(result.reason, result.message)
        return
    phase.conversion = (status.true if result.ok else status.false)(result.reason, result.message)
    if not result.ok:
        phase.delays.append(STALLED_RECHECK)
    where = f"Auth0 log stream {desired.name!r} on {ch.auth0.domain}"
    if result.created:
        _event(run.body, "LogStreamCreated", f"created {where} sending to {desired.endpoint}")
    elif result.resumed:
        _event(run.body, "LogStreamResumed", f"{where} was paused or suspended by Auth0: set back to active",
               warning=True)
    if result.updated:
        _event(run.body, "LogStreamUpdated", f"updated {where}: {', '.join(result.updated)}")
