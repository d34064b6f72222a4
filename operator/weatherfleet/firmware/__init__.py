"""The firmware release path: build a bundle from firmware/device/ with only the selected features
(compiled with mpy-cross), sign its OCI manifest digest, verify, and push it with ORAS."""
