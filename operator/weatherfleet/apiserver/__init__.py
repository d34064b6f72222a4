"""An embedded Kubernetes API server: enough of kube-apiserver that the real kopf, the `kubernetes` client
and `kubectl` run against it unchanged (discovery, list/watch with resourceVersions and bookmarks, merge,
JSON and server-side apply patches, the status subresource, finalizers and garbage collection, CRD schema
validation and pruning, server-side printing of a CRD's printer columns).

The local mode (`weatherfleet up`) hosts the operator on it, and the tests use it as the cluster where no
kube-apiserver can be installed. What it does not reproduce is listed in docs/operator.md."""

from .errors import ApiError
from .server import ApiServer, ServingCertificate
from .store import Store

# The name the test suites have always used for it.
ApiServerDouble = ApiServer

__all__ = ["ApiError", "ApiServer", "ApiServerDouble", "ServingCertificate", "Store"]
