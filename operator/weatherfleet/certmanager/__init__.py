"""A stand-in for cert-manager where none runs: the local mode and the cluster-path tests. It signs
`Certificate` resources from their `ClusterIssuer`/`Issuer` into `kubernetes.io/tls` Secrets, honouring
duration and renewBefore, and reports Ready as cert-manager does (see `controller`)."""

from .controller import CertManager
from .crds import crds

__all__ = ["CertManager", "crds"]
