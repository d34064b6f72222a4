"""OtaFlux settings: the environment variables the original OtaFlux reads, or flags (a flag wins when both
are given, since a flag is the more explicit choice of the two at a command line).

One pydantic-settings model (`weatherfleet.settings`, as the operator and ingest have): each field names
its variable and carries its help text, each rule is a validator whose message names the variable."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from weatherfleet.oci import signatures
from weatherfleet.settings import ServiceSettings, setting


class ConfigError(ValueError):
    """Bad configuration; the message is one line saying what is wrong."""


LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
}


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(frozen=True)

    # Order is the order of --help.
    registry_url: str = setting(
        "REGISTRY_URL", "registry: http(s)://host[:port], host[:port] or oci-layout:///dir", ...
    )
    repository_prefix: str = setting("REPOSITORY_PREFIX", "repository of a device = PREFIX + device id", "")
    registry_username: str | None = setting(
        "REGISTRY_USERNAME", "registry user (basic auth, or for a bearer token)"
    )
    registry_password: str | None = setting("REGISTRY_PASSWORD", "registry password", repr=False)
    registry_insecure: bool = setting("REGISTRY_INSECURE", "plain HTTP to the registry (true/false)", False)
    registry_timeout: float = setting(
        "REGISTRY_TIMEOUT", "seconds before a registry request counts as failed", 10.0
    )
    listen_addr: str = setting("LISTEN_ADDR", "HTTP address (default 0.0.0.0:8080)", "0.0.0.0:8080")
    metrics_listen_addr: str = setting(
        "METRICS_LISTEN_ADDR", "Prometheus metrics address (default 0.0.0.0:9090)", "0.0.0.0:9090"
    )
    log_level: str = setting("LOG_LEVEL", "trace, debug, info, warn or error", "info")
    access_log: str = setting(
        "ACCESS_LOG",
        "access log, one JSON line per request: stdout (default), stderr, off or a file",
        "stdout",
    )
    cache_size: int = setting("CACHE_SIZE", "firmware entries kept in the cache (default 256)", 256)
    cache_bytes: int = setting(
        "CACHE_BYTES", "bytes kept in the on-disk cache (default 512 MiB)", 512 * 1024 * 1024
    )
    cache_dir: Path | None = setting("CACHE_DIR", "directory of the on-disk cache (default: a temporary one)")
    refresh_interval: float = setting(
        "REFRESH_INTERVAL", "seconds a device's answer is trusted before re-checking", 30.0
    )
    mqtt_url: str | None = setting(
        "MQTT_URL", "mqtt://host:1883 or mqtts://host:8883 for update notifications"
    )
    mqtt_username: str | None = setting("MQTT_USERNAME", "MQTT user")
    mqtt_password: str | None = setting("MQTT_PASSWORD", "MQTT password", repr=False)
    mqtt_topic: str = setting(
        "MQTT_TOPIC", "notification topic prefix: <topic>/<device> (default ota)", "ota"
    )
    mqtt_ca_cert_path: Path | None = setting("MQTT_CA_CERT_PATH", "CA certificate of the broker (TLS)")
    mqtt_client_cert_path: Path | None = setting("MQTT_CLIENT_CERT_PATH", "client certificate (mutual TLS)")
    mqtt_client_key_path: Path | None = setting("MQTT_CLIENT_KEY_PATH", "client key (mutual TLS)")
    rollout_plan: Path | None = setting(
        "ROLLOUT_PLAN_PATH", "rollout plan: a directory of <ns>.<fleet>.json or one file"
    )  # may appear later (a mounted ConfigMap): not checked here
    signature_public_keys: Annotated[tuple[Path, ...], NoDecode] = setting(
        "SIGNATURE_PUBLIC_KEYS", "PEM public key file(s), comma-separated", ()
    )
    webhook_secret: str | None = setting(
        "WEBHOOK_SECRET", "shared secret webhooks must send (Authorization header)", repr=False
    )
    workers: int = setting("WORKERS", "HTTP worker processes sharing the port (SO_REUSEPORT)", 1)
    event_loop: str = setting(
        "OTAFLUX_LOOP", "event loop: uvloop (default, when installed; else asyncio's) or asyncio", "uvloop"
    )

    # -- derived ------------------------------------------------------------------------------------
    @property
    def listen(self) -> tuple[str, int]:
        """(host, port) of LISTEN_ADDR."""
        return _address(self.listen_addr)

    @property
    def metrics_listen(self) -> tuple[str, int]:
        """(host, port) of METRICS_LISTEN_ADDR."""
        return _address(self.metrics_listen_addr)

    # -- rules, one per variable (the message starts with the variable's name) ------------------------
    @field_validator("registry_url")
    @classmethod
    def _registry_url(cls, url: str) -> str:
        if not url.startswith("oci-layout:"):
            parts = urlsplit(url if "://" in url else f"https://{url}")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"REGISTRY_URL: {url!r} is not http(s)://host[:port], host[:port] or oci-layout:///dir"
                )
        return url

    @field_validator("registry_insecure", mode="before")
    @classmethod
    def _insecure(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"REGISTRY_INSECURE: {value!r} is not true or false")
            return lowered in ("1", "true", "yes", "on")
        return value

    @field_validator(
        "registry_timeout", "cache_size", "cache_bytes", "workers", "refresh_interval", mode="before"
    )
    @classmethod
    def _number(cls, value: Any, info) -> Any:
        variable, kind, minimum = NUMBERS[info.field_name]
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{variable}: {value!r} is not a number") from None
        if number < minimum:
            raise ValueError(f"{variable}: must be at least {minimum}, got {value}")
        return number

    @field_validator("listen_addr", "metrics_listen_addr")
    @classmethod
    def _addresses(cls, value: str, info) -> str:
        try:
            _address(value)
        except ValueError:
            variable = "LISTEN_ADDR" if info.field_name == "listen_addr" else "METRICS_LISTEN_ADDR"
            raise ValueError(f"{variable}: {value!r} is not host:port") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL: {value!r} is not one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("event_loop")
    @classmethod
    def _event_loop(cls, value: str) -> str:
        if value.strip().lower() not in ("uvloop", "asyncio"):
            raise ValueError(f"OTAFLUX_LOOP: {value!r} is not uvloop or asyncio")
        return value.strip().lower()

    @field_validator("access_log")
    @classmethod
    def _access_log(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("off", "stdout", "stderr"):
            return value.lower()
        path = Path(value)
        if not value or not path.parent.is_dir() or path.is_dir():
            raise ValueError(
                f"ACCESS_LOG: {value!r} is not stdout, stderr, off or a file in an existing directory"
            )
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value) if value else None
        if parts is not None and (parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname):
            raise ValueError(f"MQTT_URL: {value!r} is not mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("mqtt_topic")
    @classmethod
    def _mqtt_topic(cls, value: str) -> str:
        topic = value.rstrip("/")
        if not topic or any(c in topic for c in "+#\x00"):
            raise ValueError(f"MQTT_TOPIC: {value!r} is not a topic prefix (no wildcards)")
        return topic

    @field_validator("mqtt_ca_cert_path", "mqtt_client_cert_path", "mqtt_client_key_path")
    @classmethod
    def _tls_file(cls, path: Path | None, info) -> Path | None:
        if path is not None and not path.is_file():
            variable = info.field_name.upper()
            raise ValueError(f"{variable}: {path} does not exist or is not a file")
        return path

    @field_validator("signature_public_keys", mode="before")
    @classmethod
    def _public_keys(cls, value: Any) -> Any:
        names = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
        paths = tuple(Path(p) for p in names)
        for path in paths:
            if not path.is_file():
                raise ValueError(f"SIGNATURE_PUBLIC_KEYS: {path} does not exist or is not a file")
            try:
                signatures.load_public_key(path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"SIGNATURE_PUBLIC_KEYS: {path}: {str(exc).splitlines()[0]}") from None
        return paths

    @model_validator(mode="after")
    def _together(self) -> Settings:
        if (self.mqtt_client_cert_path is None) != (self.mqtt_client_key_path is None):
            raise ValueError("MQTT_CLIENT_CERT_PATH and MQTT_CLIENT_KEY_PATH must be given together")
        from weatherfleet import oci

        try:
            oci.connect(self.registry_url, insecure=self.registry_insecure)
        except ValueError as exc:
            raise ValueError(f"REGISTRY_URL: {exc}") from None
        return self


NUMBERS = {
    "registry_timeout": ("REGISTRY_TIMEOUT", float, 0.1),
    "cache_size": ("CACHE_SIZE", int, 1),
    "cache_bytes": ("CACHE_BYTES", int, 1024),
    "workers": ("WORKERS", int, 1),
    "refresh_interval": ("REFRESH_INTERVAL", float, 0.0),
}
# field -> (environment variable, help), for --help and for checks of a Deployment's environment
OPTIONS: dict[str, tuple[str, str]] = {
    name: (field.validation_alias, field.description or "")
    for name, field in Settings.model_fields.items()
    if field.description
}


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, (variable, help_text) in OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{help_text} [{variable}]"
        )


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags and environment (read now, when the server starts); raises ConfigError with one
    line on anything wrong."""
    flags = {name: getattr(args, name, None) for name in OPTIONS} if args is not None else {}
    try:
        return Settings.from_env(env, **{k: v for k, v in flags.items() if v not in (None, "")})
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "missing":
            where = str(error["loc"][0])
            name = next((n for n, (v, _h) in OPTIONS.items() if where in (n, v)), where)
            raise ConfigError(f"{OPTIONS[name][0]} (--{name.replace('_', '-')}) is required") from None
        raise ConfigError(str(error["msg"]).removeprefix("Value error, ")) from None
