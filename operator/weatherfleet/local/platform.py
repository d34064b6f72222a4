"""What a cluster has before any fleet is applied, made on the embedded API server: the CRDs (ours and
cert-manager's), the namespaces, the PKI (a self-signed ClusterIssuer, the root CA Certificate, the CA
ClusterIssuer fleets name), the service client Certificates and the broker's server Certificate, the
public key ConfigMap releases name, kopf's peering object, and the services' MQTT logins. Each object
has the same spec as its manifest in gitops/base (pki, certificates, credentials, operator/peering.yaml;
tests/local checks that they agree), plus what only the local mode needs: the broker certificate is also
valid for 127.0.0.1 and localhost, where the local broker listens.

Everything is written with server-side apply under the field manager `weatherfleet-up`, as `kubectl apply
--server-side` would, so running `up` again changes nothing that is already right."""

from __future__ import annotations

import secrets
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from .. import identities
from ..certmanager import crds as cert_manager_crds
from ..coreapi import read_secret
from ..crds import all_crds
from ..models import FirmwareRelease, SensorFleet
from ..reconcilers.certificates import broker_secret_name

FIELD_MANAGER = "weatherfleet-up"
CERT_MANAGER_NAMESPACE = "cert-manager"
SELF_SIGNED = "weatherfleet-selfsigned"
ROOT_CA = "weatherfleet-root-ca"
Object = dict[str, Any]
_PART_OF = {"app.kubernetes.io/part-of": "weatherfleet"}


def _certificate(name: str, namespace: str, spec: Object, labels: dict[str, str] | None = None) -> Object:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace, "labels": {**_PART_OF, **(labels or {})}},
        "spec": spec,
    }


_KEY = {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}


def pki(issuers: set[str]) -> list[Object]:
    """gitops/base/pki: a self-signed issuer, the root CA (10 years, key kept on renewal) and a CA issuer
    for each issuer name a fleet uses (normally just weatherfleet-ca)."""
    docs: list[Object] = [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "ClusterIssuer",
            "metadata": {"name": SELF_SIGNED, "labels": _PART_OF},
            "spec": {"selfSigned": {}},
        },
        _certificate(
            ROOT_CA,
            CERT_MANAGER_NAMESPACE,
            {
                "isCA": True,
                "commonName": ROOT_CA,
                "subject": {"organizations": ["weatherfleet"]},
                "secretName": ROOT_CA,
                "duration": "87600h",
                "renewBefore": "8760h",
                "privateKey": {**_KEY, "rotationPolicy": "Never"},
                "issuerRef": {"name": SELF_SIGNED, "kind": "ClusterIssuer", "group": "cert-manager.io"},
            },
        ),
    ]
    for name in sorted(issuers):
        docs.append(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "ClusterIssuer",
                "metadata": {"name": name, "labels": _PART_OF},
                "spec": {"ca": {"secretName": ROOT_CA}},
            }
        )
    return docs


def service_certificates(namespace: str, issuer: str = "weatherfleet-ca") -> list[Object]:
    """gitops/base/certificates/service-clients.yaml: client certificates, CN = the service identity."""
    return [
        _certificate(
            identity,
            namespace,
            {
                "secretName": f"{identity}-tls",
                "commonName": identity,
                "duration": "2160h",
                "renewBefore": "360h",
                "privateKey": _KEY,
                "usages": ["digital signature", "client auth"],
                "issuerRef": {"name": issuer, "kind": "ClusterIssuer", "group": "cert-manager.io"},
            },
        )
        for identity in (identities.INGEST, identities.OPERATOR, identities.OTAFLUX)
    ]


def broker_certificate(fleet: SensorFleet) -> Object:
    """gitops/base/certificates/nanomq-server.yaml for the fleet's broker host, plus the addresses the
    local broker is reached at."""
    host, ns = fleet.spec.broker.host, fleet.metadata.namespace
    names = (
        [host]
        if "." in host
        else [host, f"{host}.{ns}", f"{host}.{ns}.svc", f"{host}.{ns}.svc.cluster.local"]
    )
    policy = fleet.spec.certificates
    return _certificate(
        f"{host}-server",
        ns,
        {
            "secretName": broker_secret_name(fleet),
            "commonName": names[0] if "." in host else f"{host}.{ns}.svc",
            "dnsNames": [*names, "localhost"],
            "ipAddresses": ["127.0.0.1"],
            "duration": policy.duration,
            "renewBefore": policy.renew_before,
            "privateKey": _KEY,
            "usages": ["digital signature", "key encipherment", "server auth"],
            "issuerRef": {
                "name": policy.issuer_ref.name,
                "kind": policy.issuer_ref.kind,
                "group": "cert-manager.io",
            },
        },
    )


def signing_key_configmaps(releases: list[FirmwareRelease], public_pem: str) -> list[Object]:
    """The ConfigMap keys the releases' signature.publicKeyRef name, holding the local signing key (in a
    cluster the overlay supplies them; the private key never enters the API)."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for release in releases:
        ref = release.spec.signature.public_key_ref
        if ref is not None:
            wanted.setdefault((release.metadata.namespace, ref.name), set()).add(ref.key)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": _PART_OF},
            "data": dict.fromkeys(sorted(keys), public_pem),
        }
        for (ns, name), keys in sorted(wanted.items())
    ]


def peering(namespace: str, name: str = "weatherfleet") -> Object:
    """gitops/base/operator/peering.yaml's KopfPeering: the operator runs with peering, as in the cluster."""
    return {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": namespace},
    }


def namespace(name: str) -> Object:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


class Api:
    """Server-side apply, create-if-missing and reads, as kubectl would do them."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.dynamic = dynamic.DynamicClient(api)
        self.core = client.CoreV1Api(api)

    def resource(self, obj: Object):
        return self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def apply(self, obj: Object) -> Object:
        meta = obj["metadata"]
        result = self.resource(obj).server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return result.to_dict()

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        try:
            self.dynamic.resources.get(api_version=api_version, kind=kind).delete(
                name=name, namespace=namespace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def install_crds(self, schemas=None) -> None:
        for crd in [*all_crds(), *cert_manager_crds(schemas)]:
            self.apply(crd)
        self.dynamic.resources.invalidate_cache()

    def secret(self, namespace: str, name: str) -> Object | None:
        return read_secret(self.core, namespace, name)

    def ensure_service_logins(self, namespace: str) -> list[str]:
        """gitops/base/credentials (the Job): a basic-auth Secret `<identity>-mqtt-credentials` per service,
        created only when missing (an existing password is never replaced). Returns the ones created."""
        created = []
        for identity in identities.SERVICES:
            name = f"{identity}-mqtt-credentials"
            if self.secret(namespace, name) is not None:
                continue
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {**_PART_OF, "weatherfleet.io/identity": identity},
                },
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": identity, "password": secrets.token_urlsafe(24)},
            }
            try:
                self.core.create_namespaced_secret(namespace, body)
                created.append(name)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return created
