"""The CNCF distribution registry (Debian's `docker-registry`), started with a config of our own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .process import ManagedProcess, http_status, require_program

# What the distribution API's base endpoint answers a registry that serves: 200, or 401 where it wants
# credentials (an htpasswd `auth` section in `config`).
SERVING = (200, 401)


@dataclass
class DistributionRegistry:
    """A plain-HTTP registry on 127.0.0.1; `notify_urls` receive its push notification events."""

    directory: Path
    port: int
    notify_urls: list[str] = field(default_factory=list)
    notify_headers: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def config(self) -> dict:
        config: dict = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "data")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.address, "secret": "local-only-not-a-secret"},
        }
        if self.notify_urls:
            config["notifications"] = {
                "endpoints": [
                    {
                        "name": f"hook{i}",
                        "url": url,
                        "headers": {k: [v] for k, v in self.notify_headers.items()},
                        "timeout": "2s",
                        "threshold": 3,
                        "backoff": "1s",
                    }
                    for i, url in enumerate(self.notify_urls)
                ]
            }
        return config

    def start(self) -> DistributionRegistry:
        binary = require_program("docker-registry", "docker-registry")
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "config.yml"
        config_path.write_text(yaml.safe_dump(self.config()))
        self.process = ManagedProcess(
            "docker-registry",
            [binary, "serve", str(config_path)],
            self.directory / "registry.log",
            lambda: http_status(f"{self.url}/v2/") in SERVING,
        )
        self.process.start()
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()
