"""A small cert-manager for places without one (the local mode, the cluster-path tests): it watches
`Certificate` resources and signs them with their `ClusterIssuer`/`Issuer` (`selfSigned` or `ca`) into
`kubernetes.io/tls` Secrets, re-issues when the spec changes, the Secret goes or the renewal time comes
(`duration`, `renewBefore`), and reports on the Certificate as cert-manager does (`Ready`, `notBefore`,
`notAfter`, `renewalTime`, `revision`). It talks to the API server like any controller, through the
`kubernetes` client, so it runs against the embedded API server or a real cluster alike.

CertificateRequests are signed once approved (`requests`); a Certificate is issued directly, without one.
Not reproduced: ACME/Vault/… issuers, keystores, `additionalOutputFormats`,
`nameConstraints`, the webhook's validation (e.g. duration >= 1h)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any, Self

from kubernetes import client
from kubernetes.client.rest import ApiException

from ..coreapi import read_secret
from . import issuing
from .requests import RequestSigner
from .watchloop import WatchLoop

log = logging.getLogger(__name__)
GROUP, VERSION = "cert-manager.io", "v1"
Object = dict[str, Any]
READY_MESSAGE = "Certificate is up to date and has not expired"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int | None, old: list
) -> Object:
    previous = next((c for c in old if c.get("type") == type_), None)
    since = (
        previous["lastTransitionTime"] if previous and previous.get("status") == status else _rfc3339(_now())
    )
    cond = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


class NotReady(Exception):
    """The issuer cannot sign yet (missing, or its CA Secret is not there); retried on the next pass."""


class CertManager(WatchLoop):
    def __init__(
        self,
        api: client.ApiClient,
        cluster_resource_namespace: str = "cert-manager",
        resync_seconds: float = 30.0,
        retry_seconds: float = 2.0,
    ) -> None:
        super().__init__("cert-manager")
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.cluster_resource_namespace = cluster_resource_namespace
        self.resync_seconds = resync_seconds
        self.retry_seconds = retry_seconds
        self.issued = 0  # certificates signed since start
        self._due: dict[tuple[str, str], dt.datetime] = {}  # certificate -> next time to look again
        self.requests = RequestSigner(self)  # approved CertificateRequests (requests.py)

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Self:
        super().start()
        self.requests.start()
        return self

    def stop(self) -> None:
        self.requests.stop()
        super().stop()

    def _pass(self) -> None:
        self._watch_until_due(self.sync_all())

    def _watch_until_due(self, rv: str) -> None:
        """Follow Certificate changes until the next renewal (or resync) is due."""
        due = min(self._due.values(), default=_now() + dt.timedelta(seconds=self.resync_seconds))
        timeout = max(1, min(int((due - _now()).total_seconds()) + 1, int(self.resync_seconds)))
        for event in self._events(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            "certificates",
            resource_version=rv,
            timeout_seconds=timeout,
        ):
            obj = event["object"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self._reconcile_logged(obj)
            elif event["type"] == "DELETED":
                self._due.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)

    # -- passes -----------------------------------------------------------------------------------------
    def sync_all(self) -> str:
        """Issuers' readiness, then every Certificate; returns the list's resourceVersion to watch from."""
        for kind, plural in (("ClusterIssuer", "clusterissuers"), ("Issuer", "issuers")):
            try:
                issuers = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            for issuer in issuers:
                self._issuer_status(kind, issuer)
        listing = self.custom.list_cluster_custom_object(GROUP, VERSION, "certificates")
        for cert in listing["items"]:
            self._reconcile_logged(cert)
        return listing["metadata"]["resourceVersion"]

    def _reconcile_logged(self, cert: Object) -> None:
        key = (cert["metadata"]["namespace"], cert["metadata"]["name"])
        try:
            self._due[key] = self.reconcile(cert)
        except NotReady as exc:
            self._due[key] = _now() + dt.timedelta(seconds=self.retry_seconds)
            self._set_status(cert, {"conditions": self._conditions(cert, "False", "Pending", str(exc))})
        except ApiException as exc:
            self._due[key] = _now() + dt.timedelta(seconds=self.retry_seconds)
            log.warning("certificate %s/%s: API error %s, retrying", *key, exc.status)

    # -- one certificate --------------------------------------------------------------------------------
    def reconcile(self, cert: Object) -> dt.datetime:
        """Issue when needed and report; returns when to look at this Certificate again."""
        meta, spec = cert["metadata"], cert.get("spec") or {}
        namespace = meta["namespace"]
        ref = {"group": GROUP, "kind": "Issuer", **(spec.get("issuerRef") or {})}
        secret = read_secret(self.core, namespace, spec["secretName"])
        now = _now()
        reason = issuing.issuance_reason(spec, secret, ref, now)
        status = dict(cert.get("status") or {})
        if reason is not None:
            authority = self._authority(ref, namespace)
            existing = issuing.load_pair((secret or {}).get("data") or {})
            issued = issuing.issue(spec, authority, now, existing[1] if existing else None)
            self._write_secret(cert, secret, issuing.secret_data(issued, spec), ref)
            self.issued += 1
            status["revision"] = int(status.get("revision") or 0) + 1
            log.info("certificate %s/%s issued (%s)", namespace, meta["name"], reason[0])
            not_before, not_after = issued.not_before, issued.not_after
        else:
            cert_obj, _key = issuing.load_pair(secret["data"])  # type: ignore[index, misc]
            not_before, not_after = cert_obj.not_valid_before_utc, cert_obj.not_valid_after_utc
            status.setdefault("revision", 1)
        renewal = issuing.renewal_time(spec, not_before, not_after)
        status.update(
            {
                "conditions": self._conditions(cert, "True", "Ready", READY_MESSAGE),
                "notBefore": _rfc3339(not_before),
                "notAfter": _rfc3339(not_after),
                "renewalTime": _rfc3339(renewal),
            }
        )
        self._set_status(cert, status)
        return min(renewal, now + dt.timedelta(seconds=self.resync_seconds))

    def _conditions(self, cert: Object, status: str, reason: str, message: str) -> list[Object]:
        old = (cert.get("status") or {}).get("conditions") or []
        return [_condition("Ready", status, reason, message, cert["metadata"].get("generation"), old)]

    def _set_status(self, cert: Object, status: Object) -> None:
        if (cert.get("status") or {}) == status:
            return
        meta = cert["metadata"]
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], "certificates", meta["name"], {"status": status}
        )

    def _write_secret(self, cert: Object, old: Object | None, data: dict[str, str], ref: Object) -> None:
        spec = cert["spec"]
        template = spec.get("secretTemplate") or {}
        annotations = {
            **(template.get("annotations") or {}),
            issuing.ANN_NAME: cert["metadata"]["name"],
            issuing.ANN_ISSUER_NAME: ref.get("name", ""),
            issuing.ANN_ISSUER_KIND: ref.get("kind", "Issuer"),
            issuing.ANN_ISSUER_GROUP: ref.get("group", GROUP),
            issuing.ANN_COMMON_NAME: spec.get("commonName", ""),
            issuing.ANN_ALT_NAMES: ",".join(spec.get("dnsNames") or []),
            issuing.ANN_IP_SANS: ",".join(spec.get("ipAddresses") or []),
            issuing.ANN_URI_SANS: ",".join(spec.get("uris") or []),
        }
        labels = {**(template.get("labels") or {}), issuing.FAO_LABEL: "true"}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec["secretName"], "namespace": cert["metadata"]["namespace"]},
            "type": "kubernetes.io/tls",
            "data": data,
        }
        if old is None:
            body["metadata"].update(labels=labels, annotations=annotations)
            self.core.create_namespaced_secret(cert["metadata"]["namespace"], body)
            return
        meta = old["metadata"]
        body["metadata"].update(
            labels={**(meta.get("labels") or {}), **labels},
            annotations={**(meta.get("annotations") or {}), **annotations},
            resourceVersion=meta.get("resourceVersion"),
        )
        body["data"] = {**(old.get("data") or {}), **data}
        self.core.replace_namespaced_secret(spec["secretName"], cert["metadata"]["namespace"], body)

    # -- issuers ----------------------------------------------------------------------------------------
    def _issuer(self, ref: Object, namespace: str) -> Object:
        try:
            if ref.get("kind") == "ClusterIssuer":
                return self.custom.get_cluster_custom_object(GROUP, VERSION, "clusterissuers", ref["name"])
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", ref["name"])
        except ApiException as exc:
            if exc.status == 404:
                raise NotReady(f'Referenced "{ref.get("kind")}" not found: {ref.get("name")}') from None
            raise

    def _authority(self, ref: Object, namespace: str) -> issuing.SigningAuthority | None:
        if ref.get("group", GROUP) != GROUP:
            raise NotReady(f"issuer group {ref.get('group')} is not served by this cert-manager stand-in")
        issuer = self._issuer(ref, namespace)
        spec = issuer.get("spec") or {}
        if "selfSigned" in spec:
            return None
        if "ca" in spec:
            where = self.cluster_resource_namespace if ref.get("kind") == "ClusterIssuer" else namespace
            secret = read_secret(self.core, where, spec["ca"]["secretName"])
            pair = issuing.load_pair((secret or {}).get("data") or {})
            if pair is None:
                raise NotReady(
                    f"issuer {ref['name']}: CA Secret {where}/{spec['ca']['secretName']} is not ready"
                )
            return issuing.SigningAuthority(*pair)
        raise NotReady(f"issuer {ref['name']}: only selfSigned and ca issuers are served by this stand-in")

    def _issuer_status(self, kind: str, issuer: Object) -> None:
        spec, meta = issuer.get("spec") or {}, issuer["metadata"]
        if "selfSigned" in spec:
            ready, reason, message = "True", "IsReady", ""
        elif "ca" in spec:
            where = self.cluster_resource_namespace if kind == "ClusterIssuer" else meta.get("namespace")
            secret = read_secret(self.core, where, spec["ca"]["secretName"])
            ok = issuing.load_pair((secret or {}).get("data") or {}) is not None
            ready, reason, message = (
                ("True", "KeyPairVerified", "Signing CA verified")
                if ok
                else (
                    "False",
                    "ErrGetKeyPair",
                    f"Error getting keypair for CA issuer: secret {spec['ca']['secretName']} not found",
                )
            )
        else:
            ready, reason, message = (
                "False",
                "UnsupportedIssuer",
                "only selfSigned and ca issuers are served here",
            )
        old = (issuer.get("status") or {}).get("conditions") or []
        conditions = [_condition("Ready", ready, reason, message, meta.get("generation"), old)]
        if old == conditions:
            return
        body = {"status": {"conditions": conditions}}
        if kind == "ClusterIssuer":
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "clusterissuers", meta["name"], body
            )
        else:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], "issuers", meta["name"], body
            )


def ca_bundle(secret: Object) -> bytes:
    """The CA certificate of an issued Secret (`ca.crt`)."""
    return base64.b64decode((secret.get("data") or {})["ca.crt"])
