"""Local mode: the whole weatherfleet system on one machine, without Kubernetes (`weatherfleet up`, `demo`)."""
