"""What the local system shows (the table, the summary, the demo's checks): what the API says, as
`kubectl get` would show it, with the MQTT view and ingest's latest readings. A part of LocalSystem (the
mixin keeps `self`)."""

from __future__ import annotations

from kubernetes import client

from ..models import SensorFleet
from ..models.fleet import RolloutStatus
from ..reconcilers.plan import PLAN_CONFIGMAP
from .options import HOST
from .table import DeviceRow, RolloutRow


def fleet_key(fleet: SensorFleet) -> str:
    return f"{fleet.metadata.namespace}/{fleet.metadata.name}"


class ApiViews:
    def _custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    def fleet_statuses(self) -> dict[str, RolloutStatus]:
        """Each fleet's rollout status as the operator wrote it."""
        out = {}
        if self.api is None:
            return out
        try:
            items = self._custom().list_cluster_custom_object("weatherfleet.io", "v1alpha1", "sensorfleets")[
                "items"
            ]
        except Exception:  # the API server is stopping
            return out
        for item in items:
            rollout = (item.get("status") or {}).get("rollout")
            if rollout:
                out[f"{item['metadata']['namespace']}/{item['metadata']['name']}"] = (
                    RolloutStatus.model_validate(rollout)
                )
        return out

    def sensor_statuses(self) -> dict[str, dict]:
        """deviceId -> the WeatherSensor's status as the operator wrote it."""
        if self.api is None:
            return {}
        try:
            items = self._custom().list_cluster_custom_object(
                "weatherfleet.io", "v1alpha1", "weathersensors"
            )["items"]
        except Exception:
            return {}
        return {i["spec"]["deviceId"]: i.get("status") or {} for i in items}

    def plan_text(self) -> dict[str, str]:
        """The rollout plan ConfigMap's data, as OtaFlux has it mounted."""
        folder = self.mount("otaflux", "rollout-plan")
        return {p.name: p.read_text() for p in sorted(folder.glob("*.json"))} if folder.exists() else {}

    def store(self):
        from ..ingest.sqlite_store import SQLiteStore

        if self._store is None and self.workdir.store_path.exists():
            self._store = SQLiteStore(self.workdir.store_path)
        return self._store

    def device_rows(self) -> list[DeviceRow]:
        view = self.view.snapshot()
        statuses = self.sensor_statuses()
        store = self.store()
        latest = store.latest_readings() if store else {}
        rows = []
        for sensor in sorted(self.resources.sensors, key=lambda s: s.spec.device_id):
            device = sensor.spec.device_id
            sighting = view.get(device)
            obs = sighting.observation if sighting else None
            reading = latest.get(device)
            status = statuses.get(device, {})
            online = next(
                (c["status"] for c in status.get("conditions", []) if c.get("type") == "Online"), None
            )
            seen = [
                t for t in (reading.time if reading else None, sighting.last_seen if sighting else None) if t
            ]
            rows.append(
                DeviceRow(
                    device=device,
                    location=sensor.spec.location,
                    online={"True": True, "False": False}.get(online)
                    if online
                    else (obs.online if obs else None),
                    last_seen=max(seen, default=None),
                    reading=reading.values if reading else {},
                    reported=(obs.reported_version if obs else None)
                    or (status.get("firmware") or {}).get("reported"),
                    desired=(status.get("firmware") or {}).get("desired"),
                    ota_state=obs.ota_state if obs else (status.get("firmware") or {}).get("state"),
                    ota_progress=(status.get("firmware") or {}).get("progress"),
                )
            )
        return rows

    def rollout_rows(self) -> list[RolloutRow]:
        statuses = self.fleet_statuses()
        return [
            RolloutRow(fleet=fleet_key(f), waves=len(f.spec.rollout.waves), status=statuses[fleet_key(f)])
            for f in self.resources.fleets
            if fleet_key(f) in statuses
        ]

    def summary(self) -> str:
        ports = self.state.ports
        return "\n".join(
            [
                f"  kubectl       KUBECONFIG={self.kubeconfig} kubectl get weatherfleet -A",
                f"  API server    {self.apiserver.url if self.apiserver else '?'}  (objects kept in {self.workdir.root / 'apiserver'})",
                f"  operator      weatherfleet operator (log: {self.workdir.logs / 'operator.log'})",
                f"  MQTT (mTLS)   {HOST}:{ports['mqtt']}  ({'NanoMQ logins' if self.nanomq else 'identity = certificate CN'})",
                f"  registry      {self.registry_url}",
                f"  OtaFlux       http://{HOST}:{ports['otaflux']}  (metrics :{ports['otaflux_metrics']})",
                f"  rollout plan  {self.mount('otaflux', 'rollout-plan')}  (ConfigMap {PLAN_CONFIGMAP}, mounted)",
                f"  store         {self.workdir.store_path}",
                f"  devices       {len(self.resources.sensors)} emulated, flash in {self.workdir.root / 'devices'}",
                f"  logs          {self.workdir.logs}",
                f"  CR folder     {self.options.directory} (applied again on change)",
            ]
        )
