"""Make sure each service identity has its NanoMQ login: a Secret `<identity>-mqtt-credentials` (type
kubernetes.io/basic-auth, username = identity, password random). Run as a Kubernetes Job before the
services start.

NanoMQ cannot take the username from a client certificate, so the services log in with a password too.
The operator puts these passwords into the broker's password file; it reads an existing Secret before it
would generate one, so the password made here is the one everybody uses. An existing Secret is never
touched. Standard library only; no password is printed.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class CredentialsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    identities: tuple[str, ...]
    namespace: str
    kube_url: str
    kube_token: str
    kube_ca_file: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        sa_dir = env.get("SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR)
        token = env.get("KUBE_TOKEN")
        if token is None:
            with open(os.path.join(sa_dir, "token"), encoding="ascii") as f:
                token = f.read().strip()
        namespace = env.get("POD_NAMESPACE")
        if not namespace:
            with open(os.path.join(sa_dir, "namespace"), encoding="ascii") as f:
                namespace = f.read().strip()
        identities = tuple(i.strip() for i in env.get("IDENTITIES", "").split(",") if i.strip())
        if not identities:
            raise CredentialsError("IDENTITIES is empty: name the service identities, comma-separated")
        ca_file = os.path.join(sa_dir, "ca.crt")
        kube_url = env.get("KUBE_API_URL") or "https://{}:{}".format(
            env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc"),
            env.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        return cls(
            identities=identities,
            namespace=namespace,
            kube_url=kube_url.rstrip("/"),
            kube_token=token,
            kube_ca_file=ca_file if os.path.exists(ca_file) else None,
        )


def secret_name(identity: str) -> str:
    return f"{identity}-mqtt-credentials"


def _request(settings: Settings, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=settings.kube_ca_file) if settings.kube_ca_file else None
    headers = {"Accept": "application/json", "Authorization": f"Bearer {settings.kube_token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(settings.kube_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def ensure(settings: Settings, identity: str) -> bool:
    """True when the Secret was created now, False when it existed."""
    base = f"/api/v1/namespaces/{settings.namespace}/secrets"
    status, body = _request(settings, "GET", f"{base}/{secret_name(identity)}")
    if status == 200:
        return False
    if status != 404:
        raise CredentialsError(f"reading Secret {secret_name(identity)}: HTTP {status} {body[:200]!r}")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(identity),
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "weatherfleet", "weatherfleet.io/identity": identity},
        },
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": identity, "password": secrets.token_urlsafe(24)},
    }
    status, body = _request(settings, "POST", base, secret)
    if status == 409:
        return False  # created meanwhile (another run, or the operator): keep theirs
    if status not in (200, 201):
        raise CredentialsError(f"creating Secret {secret_name(identity)}: HTTP {status} {body[:200]!r}")
    return True


def run(settings: Settings) -> list[str]:
    return [
        f"{'created' if ensure(settings, identity) else 'kept'} Secret {secret_name(identity)}"
        for identity in settings.identities
    ]


def main() -> int:
    try:
        for line in run(Settings.from_env()):
            print(f"mqtt-credentials: {line}", flush=True)
    except (CredentialsError, OSError) as error:
        print(f"mqtt-credentials: error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
