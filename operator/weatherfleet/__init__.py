"""weatherfleet: declarative ESP32 weather sensor fleets on Kubernetes."""

GROUP = "weatherfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__version__ = "0.1.0"
