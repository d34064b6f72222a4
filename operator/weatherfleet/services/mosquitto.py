"""Mosquitto with mutual TLS, configured by `reconcilers.broker.mosquitto_config` as every broker we generate:
boards on `port`, where the client id is the certificate's CN (the ACL follows the certificate and no
certificate can take another client's session); services on `services_port` with their logins."""

from __future__ import annotations

import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

from .. import identities
from ..pki import LocalCA
from ..reconcilers.broker import MosquittoPaths, mosquitto_config, mosquitto_passwords
from .process import ManagedProcess, free_port, port_open, require_program


def start_mosquitto(directory: Path, config_text: str, *ports: int) -> ManagedProcess:
    """Write `mosquitto.conf` into `directory` and start Mosquitto on it; ready once all `ports` accept."""
    binary = require_program("mosquitto", "mosquitto")
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "mosquitto.conf"
    config.write_text(config_text)
    process = ManagedProcess(
        "mosquitto",
        [binary, "-c", str(config)],
        directory / "mosquitto.log",
        lambda: all(port_open(port) for port in ports),
    )
    process.start()
    return process


@dataclass
class MosquittoBroker:
    """A running broker; `host`, `port` (boards), `services_port` (services, with `login`) and `ca` are
    what clients need."""

    directory: Path
    ca: LocalCA
    port: int
    acl_text: str
    host: str = "127.0.0.1"
    services_port: int = field(default_factory=free_port)
    crl: bool = False
    """Check client certificates against the CA's CRL (`crlfile`); `reload()` after `ca.revoke(...)`."""
    logins: dict[str, str] = field(default_factory=dict)
    """The service logins the services listener admits (made at the first start)."""
    process: ManagedProcess | None = None

    @property
    def acl_path(self) -> Path:
        return self.directory / "acl"

    def login(self, identity: str) -> tuple[str, str]:
        """(username, password) of a service on the services listener."""
        return identity, self.logins[identity]

    def start(self) -> MosquittoBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = self.ca.issue("mosquitto", server_names=["localhost", "127.0.0.1"], client=False)
        self.acl_path.write_text(self.acl_text)
        if not self.logins:
            self.logins = {i: secrets.token_urlsafe(24) for i in identities.SERVICES}
        passwords = self.directory / "services.passwd"
        passwords.write_text(mosquitto_passwords(self.logins))
        paths = MosquittoPaths(
            data=str(self.directory / "data"),
            acl=str(self.acl_path),
            ca=str(self.ca.cert_path),
            cert=str(server.cert),
            key=str(server.key),
            service_logins=str(passwords),
            crl=str(self._crl_file()) if self.crl else None,
        )
        config = mosquitto_config(
            paths,
            device_port=self.port,
            services_port=self.services_port,
            address=self.host,
            origin="weatherfleet (services.mosquitto); the ACL is the fleet reconciler's",
            keep_user=True,
        )
        self.process = start_mosquitto(self.directory, config, self.port, self.services_port)
        return self

    def _crl_file(self) -> Path:
        if not self.ca.crl_path.exists():
            self.ca.write_crl()  # Mosquitto refuses to start on a crlfile that does not parse
        return self.ca.crl_path

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its ACL file and the listener's TLS files, the CRL among them."""
        if self.process:
            self.process.signal(signal.SIGHUP)

    def update_acl(self, acl_text: str) -> None:
        """Mosquitto re-reads its ACL file on SIGHUP without dropping connections."""
        self.acl_text = acl_text
        self.acl_path.write_text(acl_text)
        self.reload()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
