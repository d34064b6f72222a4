"""Certificate common names of the fleet's services. A device's identity is its deviceId."""

INGEST = "weatherfleet-ingest"
OTAFLUX = "weatherfleet-otaflux"
OPERATOR = "weatherfleet-operator"
SERVICES = (INGEST, OTAFLUX, OPERATOR)
