"""A Kubernetes API server double for tests: real kopf and the real `kubernetes` client run against it
unchanged. See docs/operator.md for what it reproduces and what it does not."""

from .server import ApiServerDouble
from .store import ApiError, Store

__all__ = ["ApiError", "ApiServerDouble", "Store"]
