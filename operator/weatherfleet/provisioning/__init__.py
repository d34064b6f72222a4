"""Everything that turns a WeatherSensor into a board that boots: its config.json and credentials
(`deviceconfig`, read from the Secrets cert-manager and the operator made: `credentials`), firmware
bundles built, signed and pushed per feature set (`bundles`), the signing key (`signing`) and the list of
files and `mpremote` commands for a real board (`board`). Used by `weatherfleet provision`, the local mode
and devicesim alike."""
