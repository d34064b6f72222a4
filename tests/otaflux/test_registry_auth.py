"""Basic auth against the real registry (htpasswd), through weatherfleet.oci and OtaFlux."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from weatherfleet import oci
from weatherfleet.services.process import free_port
from weatherfleet.services.registry import DistributionRegistry

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt through the system's libcrypt: what the registry's htpasswd wants

USER, PASSWORD = "fleet-ci", "correct horse battery"


@dataclass
class AuthRegistry(DistributionRegistry):
    htpasswd: Path | None = None

    def config(self) -> dict:
        config = super().config()
        config["auth"] = {"htpasswd": {"realm": "weatherfleet", "path": str(self.htpasswd)}}
        return config


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth-registry")
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("this libcrypt has no bcrypt")
    (directory / "htpasswd").write_text(f"{USER}:{hashed}\n")
    registry = AuthRegistry(directory=directory, port=free_port(), htpasswd=directory / "htpasswd")
    yield registry.start()
    registry.stop()


def test_push_and_serve_with_basic_auth(auth_registry, tmp_path, otaflux_factory) -> None:
    anonymous = oci.connect(auth_registry.url)
    with pytest.raises(oci.OciError, match="denied"):
        anonymous.list_tags("fleet/dev-01")
    wrong = oci.connect(auth_registry.url, username=USER, password="nope")
    with pytest.raises(oci.OciError, match="denied"):
        wrong.list_tags("fleet/dev-01")

    store = oci.connect(auth_registry.url, username=USER, password=PASSWORD)
    (tmp_path / "fw.bin").write_bytes(b"behind a password")
    store.push_image("fleet/dev-01", "1.0.0", tmp_path / "fw.bin", version="1.0.0")
    assert store.list_tags("fleet/dev-01") == ["1.0.0"]

    server = otaflux_factory(
        {
            "REGISTRY_URL": auth_registry.url,
            "REPOSITORY_PREFIX": "fleet/",
            "REGISTRY_USERNAME": USER,
            "REGISTRY_PASSWORD": PASSWORD,
        }
    )
    assert server.get("/firmware?device=dev-01")[2] == b"behind a password"
    assert PASSWORD not in server.log_text()
