"""Reads through the Kubernetes core API that the cert-manager stand-in and the local platform share."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


def read_secret(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret as the API server serves it (a plain dict, data still base64), or None if there is none."""
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return core.api_client.sanitize_for_serialization(secret)
