"""OtaFlux settings: flags, or the environment variables the original OtaFlux reads (flag wins when both
are given, since a flag is the more explicit choice of the two at a command line)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weatherfleet.oci import signatures


class ConfigError(ValueError):
    """Bad configuration; the message is one line saying what is wrong."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    registry_url: str
    repository_prefix: str = ""
    registry_username: str | None = None
    registry_password: str | None = Field(default=None, repr=False)
    registry_insecure: bool = False
    registry_timeout: float = 10.0
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    log_level: str = "info"
    cache_size: int = 256  # entries (devices x versions) kept on disk
    cache_bytes: int = 512 * 1024 * 1024
    cache_dir: Path | None = None  # None: a private temporary directory
    refresh_interval: float = 30.0  # how long a device's resolution is trusted before asking the registry
    mqtt_url: str | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = Field(default=None, repr=False)
    mqtt_topic: str = "ota"
    mqtt_ca_cert_path: Path | None = None
    mqtt_client_cert_path: Path | None = None
    mqtt_client_key_path: Path | None = None
    mqtt_client_id: str = "otaflux"
    rollout_plan: Path | None = None
    rollout_poll_interval: float = 1.0
    signature_public_keys: tuple[Path, ...] = ()
    webhook_secret: str | None = Field(default=None, repr=False)
    workers: int = 1


# option -> (environment variable, help). Order is the order of --help.
OPTIONS: dict[str, tuple[str, str]] = {
    "registry_url": ("REGISTRY_URL", "registry: http(s)://host[:port], host[:port] or oci-layout:///dir"),
    "repository_prefix": ("REPOSITORY_PREFIX", "repository of a device = PREFIX + device id"),
    "registry_username": ("REGISTRY_USERNAME", "registry user (basic auth, or for a bearer token)"),
    "registry_password": ("REGISTRY_PASSWORD", "registry password"),
    "registry_insecure": ("REGISTRY_INSECURE", "plain HTTP to the registry (true/false)"),
    "registry_timeout": ("REGISTRY_TIMEOUT", "seconds before a registry request counts as failed"),
    "listen_addr": ("LISTEN_ADDR", "HTTP address (default 0.0.0.0:8080)"),
    "metrics_listen_addr": ("METRICS_LISTEN_ADDR", "Prometheus metrics address (default 0.0.0.0:9090)"),
    "log_level": ("LOG_LEVEL", "trace, debug, info, warn or error"),
    "cache_size": ("CACHE_SIZE", "firmware entries kept in the cache (default 256)"),
    "cache_bytes": ("CACHE_BYTES", "bytes kept in the on-disk cache (default 512 MiB)"),
    "cache_dir": ("CACHE_DIR", "directory of the on-disk cache (default: a temporary one)"),
    "refresh_interval": ("REFRESH_INTERVAL", "seconds a device's answer is trusted before re-checking"),
    "mqtt_url": ("MQTT_URL", "mqtt://host:1883 or mqtts://host:8883 for update notifications"),
    "mqtt_username": ("MQTT_USERNAME", "MQTT user"),
    "mqtt_password": ("MQTT_PASSWORD", "MQTT password"),
    "mqtt_topic": ("MQTT_TOPIC", "notification topic prefix: <topic>/<device> (default ota)"),
    "mqtt_ca_cert_path": ("MQTT_CA_CERT_PATH", "CA certificate of the broker (TLS)"),
    "mqtt_client_cert_path": ("MQTT_CLIENT_CERT_PATH", "client certificate (mutual TLS)"),
    "mqtt_client_key_path": ("MQTT_CLIENT_KEY_PATH", "client key (mutual TLS)"),
    "rollout_plan": ("ROLLOUT_PLAN_PATH", "rollout plan: a directory of <ns>.<fleet>.json or one file"),
    "signature_public_keys": ("SIGNATURE_PUBLIC_KEYS", "PEM public key file(s), comma-separated"),
    "webhook_secret": ("WEBHOOK_SECRET", "shared secret webhooks must send (Authorization header)"),
    "workers": ("WORKERS", "HTTP worker processes sharing the port (SO_REUSEPORT)"),
}
LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, (env, help_text) in OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{help_text} [{env}]"
        )


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: {text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def _bool(text: str, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not true or false")


def _number(text: str, what: str, kind: type, minimum: float) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{what}: must be at least {minimum}, got {text}")
    return value


def _file(text: str, what: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"{what}: {text} does not exist or is not a file")
    return path


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags and environment; raises ConfigError with one line on anything wrong."""
    env = os.environ if env is None else env
    given = {}
    for name, (variable, _help) in OPTIONS.items():
        value = getattr(args, name, None) if args is not None else None
        if value is None:
            value = env.get(variable)
        if value is not None and value != "":
            given[name] = str(value)

    if "registry_url" not in given:
        raise ConfigError("REGISTRY_URL (--registry-url) is required")
    values: dict = {"registry_url": given["registry_url"]}
    url = given["registry_url"]
    if not url.startswith("oci-layout:"):
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"REGISTRY_URL: {url!r} is not http(s)://host[:port], host[:port] or oci-layout:///dir"
            )
    for name in (
        "repository_prefix",
        "registry_username",
        "registry_password",
        "mqtt_username",
        "mqtt_password",
        "webhook_secret",
    ):
        if name in given:
            values[name] = given[name]
    if "registry_insecure" in given:
        values["registry_insecure"] = _bool(given["registry_insecure"], "REGISTRY_INSECURE")
    if "registry_timeout" in given:
        values["registry_timeout"] = _number(given["registry_timeout"], "REGISTRY_TIMEOUT", float, 0.1)
    if "listen_addr" in given:
        values["listen_host"], values["listen_port"] = _address(given["listen_addr"], "LISTEN_ADDR")
    if "metrics_listen_addr" in given:
        values["metrics_host"], values["metrics_port"] = _address(
            given["metrics_listen_addr"], "METRICS_LISTEN_ADDR"
        )
    if "log_level" in given:
        if given["log_level"].lower() not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL: {given['log_level']!r} is not one of {', '.join(LOG_LEVELS)}")
        values["log_level"] = given["log_level"].lower()
    for name, kind, minimum in (
        ("cache_size", int, 1),
        ("cache_bytes", int, 1024),
        ("workers", int, 1),
        ("refresh_interval", float, 0.0),
    ):
        if name in given:
            values[name] = _number(given[name], OPTIONS[name][0], kind, minimum)
    if "cache_dir" in given:
        values["cache_dir"] = Path(given["cache_dir"])
    if "mqtt_url" in given:
        parts = urlsplit(given["mqtt_url"])
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ConfigError(f"MQTT_URL: {given['mqtt_url']!r} is not mqtt://host:port or mqtts://host:port")
        values["mqtt_url"] = given["mqtt_url"]
    if "mqtt_topic" in given:
        topic = given["mqtt_topic"].rstrip("/")
        if not topic or any(c in topic for c in "+#\x00"):
            raise ConfigError(f"MQTT_TOPIC: {given['mqtt_topic']!r} is not a topic prefix (no wildcards)")
        values["mqtt_topic"] = topic
    tls = [n for n in ("mqtt_ca_cert_path", "mqtt_client_cert_path", "mqtt_client_key_path") if n in given]
    for name in tls:
        values[name] = _file(given[name], OPTIONS[name][0])
    if ("mqtt_client_cert_path" in given) != ("mqtt_client_key_path" in given):
        raise ConfigError("MQTT_CLIENT_CERT_PATH and MQTT_CLIENT_KEY_PATH must be given together")
    if "rollout_plan" in given:
        values["rollout_plan"] = Path(given["rollout_plan"])  # may appear later (mounted ConfigMap)
    if "signature_public_keys" in given:
        paths = tuple(
            _file(p.strip(), "SIGNATURE_PUBLIC_KEYS")
            for p in given["signature_public_keys"].split(",")
            if p.strip()
        )
        for path in paths:
            try:
                signatures.load_public_key(path.read_bytes())
            except ValueError as exc:
                raise ConfigError(f"SIGNATURE_PUBLIC_KEYS: {path}: {str(exc).splitlines()[0]}") from None
        values["signature_public_keys"] = paths
    try:
        from weatherfleet import oci

        oci.connect(url, insecure=values.get("registry_insecure"))
        settings = Settings(**values)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise ConfigError(str(exc.errors()[0]["msg"])) from None
        raise ConfigError(f"REGISTRY_URL: {exc}") from None
    return settings
