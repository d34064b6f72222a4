"""The errors the API server answers with, as kube-apiserver's `Status` objects."""

from __future__ import annotations

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
