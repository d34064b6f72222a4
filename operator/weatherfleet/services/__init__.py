"""Real servers started on this machine for the local mode and the tests: Mosquitto, the OCI registry."""
