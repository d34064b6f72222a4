"""The SensorFleet reconciler: broker configuration, Grafana, the rollout plan and the fleet status.

Pure: the caller passes everything it observed in a `FleetObservation` (the WeatherSensors of the fleet's
namespace, FirmwareReleases by name, device observations, broker passwords, last-seen times, `now`) and gets
back a `FleetResult`. Rollout decisions are `weatherfleet.rollout.next_status` / `fleet_plan`; this module
only gathers their inputs and turns the outcome into children, conditions and events.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from .. import identities
from ..models.common import Condition, ConditionStatus, set_condition
from ..models.fleet import SensorCounts, SensorFleet, SensorFleetStatus
from ..models.release import FirmwareRelease
from ..models.sensor import WeatherSensor
from ..rollout import DeviceObservation, FleetPlan, downgrade_refusal, fleet_plan, next_status, transitions
from . import broker, grafana
from .certificates import broker_certificate
from .common import (
    CONFIG_HASH_ANNOTATION,
    Event,
    Object,
    content_hash,
    labels,
    metadata,
    owner_references,
    sorted_children,
)
from .plan import plan_key_of
from .sensor import is_online

# A ConfigMap or Secret may hold at most 1 MiB; leave room for metadata.
MAX_OBJECT_DATA = 1_000_000


class FleetObservation(BaseModel):
    """What the caller observed for one fleet. Missing entries mean "not known yet".

    - `now`: the time of the observation (the reconcilers read no clock);
    - `sensors`: the WeatherSensors of the fleet's namespace; the selector is applied here;
    - `fleets`: the SensorFleets of the namespace: a sensor that several select belongs to the first by
      name only (`members_of`); empty: this fleet alone;
    - `rollout_key`: the operator's rollout key, which signs the downgrade authorisation of a halted or
      rolled-back plan (rollout.authorisation); None: no authorisation, devices keep the candidate;
    - `releases` (by metadata.name), `devices` (device observations by deviceId), `last_seen` (by deviceId);
    - `passwords`: broker username -> password (NanoMQ: devices and services; Mosquitto: services); None
      leaves the password Secret out (render: its output goes to git);
    - `trust_unverified_releases`: roll out a release whose required signature has not been verified yet
      (render only: it cannot reach the registry; the operator never sets this);
    - `provisioned_alerts`: what the fleet's alert files held so far (its alert ConfigMaps as they are, or
      in the previous render): rules and contact points gone since are deleted in Grafana;
    - `telegram_token`: the bot token from alerting.telegram.botTokenSecretRef; None: not available, so no
      contact point is provisioned and rules use Grafana's default notification policy;
    - `assume_telegram_token`: route rules to the Telegram contact point without the token (render only:
      its output holds no Secret; the operator never sets this).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    now: datetime
    sensors: list[WeatherSensor] = Field(default_factory=list)
    fleets: list[SensorFleet] = Field(default_factory=list)
    rollout_key: Ed25519PrivateKey | None = None
    releases: dict[str, FirmwareRelease] = Field(default_factory=dict)
    devices: dict[str, DeviceObservation] = Field(default_factory=dict)
    passwords: dict[str, str] | None = None
    last_seen: dict[str, datetime] = Field(default_factory=dict)
    trust_unverified_releases: bool = False
    provisioned_alerts: grafana.ProvisionedAlerts | None = None
    telegram_token: str | None = None
    assume_telegram_token: bool = False


class FleetResult(BaseModel):
    """Everything one fleet reconciliation decides."""

    children: list[Object] = Field(description="to apply (server-side apply), sorted by kind and name")
    status: SensorFleetStatus
    plan: FleetPlan = Field(description="this fleet's entry of the rollout plan ConfigMap")
    plan_key: str = Field(description="its key there: <namespace>.<fleet>.json")
    members: list[str] = Field(description="device ids of the selected sensors, sorted")
    config_hash: str = Field(description="sha256 of the broker ACL and password file")
    broker_patch: Object | None = Field(
        default=None,
        description="partial Deployment for server-side apply: the broker's pod-template config-hash annotation",
    )
    events: list[Event] = Field(default_factory=list)


def selects(fleet: SensorFleet, sensor: WeatherSensor) -> bool:
    """Whether the fleet's selector picks the sensor (same namespace, labels match)."""
    return fleet.metadata.namespace == sensor.metadata.namespace and fleet.spec.selector.matches(
        sensor.metadata.labels
    )


def select_members(fleet: SensorFleet, sensors: list[WeatherSensor]) -> list[WeatherSensor]:
    """The sensors of the fleet's namespace its selector matches, sorted by deviceId (whether or not
    another fleet claims them first: `members_of` decides membership)."""
    return sorted((s for s in sensors if selects(fleet, s)), key=lambda s: s.spec.device_id)


def fleet_for_sensor(sensor: WeatherSensor, fleets: list[SensorFleet]) -> SensorFleet | None:
    """The fleet a sensor belongs to: the first by name, in its namespace, whose selector matches it."""
    for fleet in sorted(fleets, key=lambda f: f.metadata.name):
        if selects(fleet, sensor):
            return fleet
    return None


def members_of(
    fleet: SensorFleet, sensors: list[WeatherSensor], fleets: list[SensorFleet] | None = None
) -> list[WeatherSensor]:
    """THE membership rule, used by the operator, `render` and the local mode: the sensors whose fleet
    (`fleet_for_sensor` among `fleets` and this one) is this fleet, sorted by deviceId. A sensor two
    fleets select belongs to the first by name; the other fleet neither configures nor waits for it."""
    others = [f for f in fleets or () if fleet_key(f) != fleet_key(fleet)]
    if not others:
        return select_members(fleet, sensors)
    every = [fleet, *others]
    return [s for s in select_members(fleet, sensors) if fleet_for_sensor(s, every) is fleet]


def fleet_key(fleet: SensorFleet) -> str:
    return f"{fleet.metadata.namespace}/{fleet.metadata.name}"


def _release_version(
    fleet: SensorFleet, obs: FleetObservation
) -> tuple[str | None, FirmwareRelease | None, str]:
    """(version to roll out or None, the release, why not)."""
    name = fleet.spec.rollout.release
    if name is None:
        return None, None, "no release selected"
    release = obs.releases.get(name)
    if release is None:
        return None, None, f"FirmwareRelease {name} not found in namespace {fleet.metadata.namespace}"
    if (
        release.spec.signature.required
        and release.status.signature_verified is not True
        and not obs.trust_unverified_releases
    ):
        ready = _ready(release)
        if release.status.devices is not None and ready is not None and ready.status == "False":
            return None, release, f"FirmwareRelease {name}: {ready.message}"
        return None, release, f"FirmwareRelease {name}: signature not verified yet"
    return release.spec.version, release, ""


def _ready(release: FirmwareRelease) -> Condition | None:
    return next((c for c in release.status.conditions if c.type == "Ready"), None)


def _unavailable_reason(release: FirmwareRelease | None) -> str:
    """The ReleaseAvailable=False reason: the per-device release's own Ready reason, else as before."""
    if release is None:
        return "NotFound"
    ready = _ready(release)
    if release.status.devices is not None and ready is not None and ready.status == "False":
        return ready.reason
    return "SignatureNotVerified"


def _exclusions(members: list[WeatherSensor], release: FirmwareRelease | None) -> list[str]:
    """Devices the candidate is never offered to: OTA disabled, subscribed to another channel, or (per-device
    releases) whose artifact the operator found missing or badly signed (`status.unavailableDevices`)."""
    unavailable = {u.device_id for u in release.status.unavailable_devices} if release is not None else set()
    out = []
    for s in members:
        if (
            not s.spec.features.ota
            or (release is not None and s.spec.firmware.channel != release.spec.channel)
            or s.spec.device_id in unavailable
        ):
            out.append(s.spec.device_id)
    return sorted(out)


def _device_views(
    fleet: SensorFleet, members: list[WeatherSensor], excluded: set[str], obs: FleetObservation
) -> list[DeviceObservation]:
    views = []
    for s in members:
        device_id = s.spec.device_id
        if device_id in excluded:
            continue  # never offered the candidate, so never pending on it
        seen = obs.last_seen.get(device_id) or s.status.last_seen
        known = obs.devices.get(device_id)
        fresh = (
            is_online(s, fleet, seen, known, obs.now)
            if seen is not None
            else (known is not None and known.online)
        )
        view = known or DeviceObservation(device_id=device_id)
        update = {"online": fresh, "pinned_version": s.spec.firmware.pinned_version}
        created = (s.metadata.model_extra or {}).get("creationTimestamp")
        if created:
            update["member_since"] = created if isinstance(created, datetime) else _timestamp(created)
        views.append(view.model_copy(update=update))
    return views


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _configmap(
    name: str,
    ns: str,
    lbl: dict[str, str],
    owners: list[Object],
    data: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, ns, lbl, owners, annotations),
        "data": data,
    }


def _broker_children(
    fleet: SensorFleet,
    device_ids: list[str],
    obs: FleetObservation,
    lbl: dict[str, str],
    owners: list[Object],
) -> tuple[list[Object], str, str]:
    spec = fleet.spec.broker
    ns = fleet.metadata.namespace
    children: list[Object] = (
        [broker_certificate(fleet, lbl, owners)] if fleet.spec.broker.manage_server_certificate else []
    )
    if spec.kind == "mosquitto":
        # the ACL and the whole mosquitto.conf (issue 14: boards' client ids bound to their certificates,
        # services on their own listener); the Secret holds the service logins that listener admits
        acl = broker.mosquitto_acl(fleet.metadata.name, device_ids, spec.topic_prefix)
        conf = broker.mosquitto_config(broker.CLUSTER_MOSQUITTO_PATHS, device_port=spec.port)
        data = {broker.MOSQUITTO_ACL_KEY: acl, broker.MOSQUITTO_CONFIG_KEY: conf}
        children.append(_configmap(spec.acl_config_map, ns, lbl, owners, data))
        logins = {u: p for u, p in (obs.passwords or {}).items() if u in identities.SERVICES}
        key, pwd = broker.MOSQUITTO_PASSWORD_KEY, broker.mosquitto_passwords(logins)
        acl += conf
    else:
        acl = broker.nanomq_acl(fleet.metadata.name, spec.topic_prefix)
        children.append(_configmap(spec.acl_config_map, ns, lbl, owners, {broker.NANOMQ_ACL_KEY: acl}))
        allowed = set(device_ids) | set(identities.SERVICES)
        logins = {u: p for u, p in (obs.passwords or {}).items() if u in allowed}
        key, pwd = broker.NANOMQ_PASSWORD_KEY, broker.nanomq_passwords(fleet.metadata.name, logins)
    if obs.passwords is None:
        return children, acl, ""
    children.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(spec.credentials_secret, ns, lbl, owners),
            "type": "Opaque",
            "stringData": {key: pwd},
        }
    )
    return children, acl, pwd


def _counts(fleet: SensorFleet, members: list[WeatherSensor], obs: FleetObservation) -> SensorCounts:
    online = stale = 0
    for s in members:
        seen = obs.last_seen.get(s.spec.device_id) or s.status.last_seen
        if seen is None:
            continue
        if is_online(s, fleet, seen, obs.devices.get(s.spec.device_id), obs.now):
            online += 1
        else:
            stale += 1
    return SensorCounts(total=len(members), online=online, stale=stale)


def reconcile_fleet(fleet: SensorFleet, observation: FleetObservation) -> FleetResult:
    """Desired children, rollout plan and status of one SensorFleet.

    Children (sorted; labelled managed-by/part-of weatherfleet and weatherfleet.io/fleet; owned by the fleet
    when it has a uid): with `broker.manageServerCertificate` the broker's server Certificate
    `<broker.host>-server`; the broker ACL ConfigMap
    `spec.broker.aclConfigMap` (NanoMQ key `nanomq_acl.conf`, Mosquitto key `mosquitto.acl`); for NanoMQ
    with `observation.passwords` the Secret `spec.broker.credentialsSecret` (key `nanomq_pwd.conf`); the
    dashboard ConfigMap `<fleet>-dashboard` (label grafana_dashboard "1"); the alert ConfigMaps
    `<fleet>-alerts[-N]` (label grafana_alert "1"; the first also deletes in Grafana the rules and contact
    point that `observation.provisioned_alerts` had and the fleet has no more); with alerting.telegram and
    `observation.telegram_token` the contact point Secret `<fleet>-alerts-contact-point` (see
    `grafana.grafana_children`).

    Also: `plan` (put it into `rollout_plan_configmap` under `plan_key`), `status` (sensor counts, rollout
    from `rollout.next_status`, conditions Ready / BrokerConfigured / ReleaseAvailable / RolloutHealthy / AlertingConfigured,
    observedGeneration), `config_hash` and `broker_patch` (apply it so NanoMQ restarts on ACL changes), and
    `events` to emit on the fleet. Deterministic: the same fleet and observation give the same result.
    """
    now = observation.now
    ns, name = fleet.metadata.namespace, fleet.metadata.name
    members = members_of(fleet, observation.sensors, observation.fleets)
    device_ids = [s.spec.device_id for s in members]
    lbl = labels(name)
    owners = owner_references(fleet.api_version, fleet.kind, fleet.metadata)

    broker_objs, acl, pwd = _broker_children(fleet, device_ids, observation, lbl, owners)
    telegram = fleet.spec.alerting.telegram
    routed = telegram is not None and (
        observation.telegram_token is not None or observation.assume_telegram_token
    )
    grafana_objs = grafana.grafana_children(
        fleet,
        members,
        lbl,
        owners,
        previous=observation.provisioned_alerts,
        bot_token=observation.telegram_token,
        routed=routed,
    )
    children = sorted_children(broker_objs + grafana_objs)
    config_hash = content_hash(acl, pwd)

    version, release, why_not = _release_version(fleet, observation)
    excluded = _exclusions(members, release)
    views = _device_views(fleet, members, set(excluded), observation)
    old_rollout = fleet.status.rollout
    rollout = next_status(fleet.spec.rollout, old_rollout, version, views, fleet_key(fleet), now)
    if why_not and fleet.spec.rollout.release is not None:
        rollout = rollout.model_copy(update={"reason": why_not})
    refusal = downgrade_refusal(fleet.spec.rollout, old_rollout, version)
    pins = {
        s.spec.device_id: s.spec.firmware.pinned_version for s in members if s.spec.firmware.pinned_version
    }
    plan = fleet_plan(
        rollout, fleet_key(fleet), device_ids, pins, excluded, observation.rollout_key, fleet.spec.rollout
    )

    gen = fleet.metadata.generation or None
    conds: list[Condition] = list(fleet.status.conditions)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, now, gen)

    too_big = max(len(acl), len(pwd)) > MAX_OBJECT_DATA
    missing = []
    if fleet.spec.broker.kind == "nanomq" and observation.passwords is not None:
        missing = [d for d in device_ids if d not in observation.passwords]
    if too_big:
        put(
            "BrokerConfigured",
            "False",
            "TooLarge",
            f"broker configuration of {len(device_ids)} devices exceeds the 1 MiB object limit: split the fleet",
        )
    elif missing:
        put(
            "BrokerConfigured",
            "False",
            "CredentialsPending",
            f"{len(missing)} devices have no broker password yet: {', '.join(missing[:5])}",
        )
    else:
        put(
            "BrokerConfigured",
            "True",
            "Configured",
            f"{fleet.spec.broker.kind} ACL for {len(device_ids)} devices",
        )
    if fleet.spec.rollout.release is None:
        put("ReleaseAvailable", "Unknown", "NoReleaseSelected", "spec.rollout.release is not set")
    elif version is None:
        put("ReleaseAvailable", "False", _unavailable_reason(release), why_not)
    elif refusal:
        put("ReleaseAvailable", "False", "OlderThanStable", refusal)
    else:
        member_ids = set(device_ids)
        left_out = [
            u for u in (release.status.unavailable_devices if release else []) if u.device_id in member_ids
        ]
        note = (
            f"; excluded (artifact {'/'.join(sorted({u.reason for u in left_out}))}): "
            + ", ".join(u.device_id for u in left_out[:10])
            + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "")
            if left_out
            else ""
        )
        put(
            "ReleaseAvailable",
            "True",
            "Available",
            f"{fleet.spec.rollout.release} is version {version}{note}",
        )
    if telegram is None:
        put(
            "AlertingConfigured", "True", "NoContactPoint", "alerts use Grafana's default notification policy"
        )
    elif routed:
        put(
            "AlertingConfigured",
            "True",
            "ContactPointProvisioned",
            f"alerts go to {telegram.chat_id} on Telegram",
        )
    else:
        ref = telegram.bot_token_secret_ref
        put(
            "AlertingConfigured",
            "False",
            "TelegramTokenMissing",
            f"Secret {ref.name} has no key {ref.key}: alerts use Grafana's default notification policy",
        )
    if rollout.phase == "Halted":
        put("RolloutHealthy", "False", "FailureThresholdReached", rollout.reason)
    else:
        put("RolloutHealthy", "True", rollout.phase, rollout.reason or rollout.phase)
    by_type = {c.type: c for c in conds}
    blocking = [
        t for t in ("BrokerConfigured", "ReleaseAvailable", "RolloutHealthy") if by_type[t].status == "False"
    ]
    if blocking:
        put("Ready", "False", "NotReady", "; ".join(f"{t}: {by_type[t].message}" for t in blocking))
    else:
        put("Ready", "True", "Reconciled", f"{len(device_ids)} sensors configured")

    events = [
        Event(type=t.type, reason=t.reason, message=t.message) for t in transitions(old_rollout, rollout)
    ]
    old_conds = {c.type: c.status for c in fleet.status.conditions}
    for cond in conds:
        if cond.type == "ReleaseAvailable" and cond.status == "False" and old_conds.get(cond.type) != "False":
            events.append(Event(type="Warning", reason="ReleaseUnavailable", message=cond.message))
        if (
            cond.type == "BrokerConfigured"
            and cond.reason == "TooLarge"
            and old_conds.get(cond.type) != "False"
        ):
            events.append(Event(type="Warning", reason="BrokerConfigTooLarge", message=cond.message))

    broker_patch = None
    if fleet.spec.broker.deployment:
        broker_patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": fleet.spec.broker.deployment, "namespace": ns},
            "spec": {"template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: config_hash}}}},
        }
    status = SensorFleetStatus(
        observedGeneration=gen,
        conditions=conds,
        sensors=_counts(fleet, members, observation),
        rollout=rollout,
    )
    return FleetResult(
        children=children,
        status=status,
        plan=plan,
        plan_key=plan_key_of(fleet),
        members=device_ids,
        config_hash=config_hash,
        broker_patch=broker_patch,
        events=events,
    )
