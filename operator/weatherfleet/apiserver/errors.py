"""The errors the API server answers with, as kube-apiserver's `Status` objects."""

from __future__ import annotations

import base64
from typing import Any


class ApiError(Exception):
    def __init__(
        self, code: int, reason: str, message: str, causes: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.causes = code, reason, message, causes or []

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.causes:
            body["details"] = {
                "causes": [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in self.causes]
            }
        return body


def check_configmap_size(obj: dict[str, Any]) -> None:
    """As kube-apiserver: binaryData is base64 in the object (400 when not), and data plus binaryData's
    bytes may hold at most 1 MiB (422)."""
    try:
        size = sum(len(base64.b64decode(v, validate=True)) for v in (obj.get("binaryData") or {}).values())
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"binaryData is not base64: {exc}") from None
    size += sum(len(str(v).encode()) for v in (obj.get("data") or {}).values())
    if size > 1 << 20:
        name = obj["metadata"].get("name")
        raise ApiError(
            422, "Invalid", f'ConfigMap "{name}" is invalid: []: Too long: must have at most 1048576 bytes'
        )
