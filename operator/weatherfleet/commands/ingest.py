"""`weatherfleet ingest`: MQTT `sensors/#` into InfluxDB 3 or SQLite, nothing lost.

Every option has an environment variable (the Deployment sets those); flags win. The InfluxDB token is
read only from the environment (INFLUX_TOKEN) or a file (a mounted Secret), never from a flag, so it does
not show in process listings; the same holds for the service's MQTT password (MQTT_PASSWORD), which NanoMQ
and Mosquitto's services listener check."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from .. import identities
from ..mqtt import MqttSettings
from ..settings import ServiceSettings, setting

log = logging.getLogger("weatherfleet.ingest")


class IngestSettings(ServiceSettings):
    """What `weatherfleet ingest` reads: environment variables (the Deployment sets them) and flags of the
    same names (a flag wins). Secrets come only from the environment or files."""

    broker_host: str = setting("MQTT_HOST", "the broker", "127.0.0.1")
    broker_port: int = setting("MQTT_PORT", "its port", 8883)
    tls_dir: Path | None = setting(
        "MQTT_TLS_DIR", "folder with ca.crt, tls.crt, tls.key (a mounted cert-manager Secret)"
    )
    ca: Path | None = setting("MQTT_CA", "CA certificate")
    cert: Path | None = setting("MQTT_CERT", "client certificate")
    key: Path | None = setting("MQTT_KEY", "client key")
    mqtt_username: str | None = setting(
        "MQTT_USERNAME", "the service login (NanoMQ; Mosquitto's services listener, port 8884)"
    )
    mqtt_password_file: Path | None = setting(
        "MQTT_PASSWORD_FILE", "file holding the MQTT password; else MQTT_PASSWORD"
    )
    topic: str = setting("INGEST_TOPIC", "topic filter", "sensors/#")
    client_id: str = setting(
        "INGEST_CLIENT_ID", "session id (with a share group: its prefix)", identities.INGEST
    )
    share_group: str | None = setting(
        "INGEST_SHARE_GROUP",
        "run as one of several replicas: subscribe $share/<group>/<topic>, each replica with its own session "
        "<client-id>-<replica>",
    )
    replica: str = setting(
        "INGEST_REPLICA", "this replica's name in a share group (default: the host name, the pod's name)", ""
    )
    store: Literal["sqlite", "influxdb"] = setting("INGEST_STORE", "sqlite or influxdb", "sqlite")
    sqlite_path: Path = setting("INGEST_SQLITE_PATH", "the SQLite store", Path("weatherfleet.db"))
    influx_host: str | None = setting("INFLUX_HOST", "e.g. http://influxdb3:8181")
    influx_database: str = setting("INFLUX_DATABASE", "the database", "weather")
    influx_token_file: Path | None = setting(
        "INFLUX_TOKEN_FILE", "file holding the token (mounted Secret); else INFLUX_TOKEN"
    )
    influx_ca: Path | None = setting("INFLUX_CA", "CA of an https InfluxDB")
    state_dir: Path = setting(
        "INGEST_STATE_DIR", "spool and dead letters live here (a persistent volume)", Path("ingest-state")
    )
    spool_dir: Path | None = setting("INGEST_SPOOL_DIR", "default <state-dir>/spool")
    batch_size: int = setting("INGEST_BATCH_SIZE", "rows per batch", 1000, gt=0)
    batch_delay: float = setting("INGEST_BATCH_DELAY", "seconds a batch may wait to fill", 1.0, ge=0)
    metrics_port: int = setting("INGEST_METRICS_PORT", "Prometheus metrics; 0 disables", 9090, ge=0)
    log_level: str = setting("LOG_LEVEL", "log level", "INFO")
    # secrets: from the environment only, never a flag (they would show in process listings)
    mqtt_password: str | None = Field(default=None, validation_alias="MQTT_PASSWORD", repr=False)
    influx_token: str | None = Field(default=None, validation_alias="INFLUX_TOKEN", repr=False)


GROUPS = {
    "MQTT (mutual TLS)": ("broker_host", "broker_port", "tls_dir", "ca", "cert", "key", "mqtt_username",
                          "mqtt_password_file", "topic", "client_id", "share_group", "replica"),
    "store": ("store", "sqlite_path", "influx_host", "influx_database", "influx_token_file", "influx_ca"),
    "durability and operations": ("state_dir", "spool_dir", "batch_size", "batch_delay", "metrics_port", "log_level"),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags named after the settings; their defaults are None ("not given"): the environment is read
    when the command runs (load_config), not when the parser is built."""
    fields = IngestSettings.model_fields
    for title, names in GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            field = fields[name]
            group.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=None,
                choices=("sqlite", "influxdb") if name == "store" else None,
                help=f"{field.description}; env {field.validation_alias}",
            )


class IngestConfig(BaseModel):
    """Everything `weatherfleet ingest` needs, validated before anything starts."""

    mqtt: MqttSettings
    topic: str
    client_id: str
    share_group: str | None = None
    session_id: str  # the MQTT client id: client_id, or client_id-replica in a share group
    store: str
    sqlite_path: Path
    influx_host: str | None
    influx_database: str
    influx_token: str | None
    influx_ca: Path | None
    state_dir: Path
    replica_dir: Path  # this replica's spool and dead letters: state_dir, or state_dir/replica in a group
    spool_dir: Path
    batch_size: int
    batch_delay: float
    metrics_port: int
    log_level: str = "INFO"

    def __repr_args__(self):  # never print the token
        for key, value in super().__repr_args__():
            yield key, ("***" if key == "influx_token" and value else value)


class ConfigError(ValueError):
    pass


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> IngestConfig:
    """The settings from `environ` (default: the process environment) and the flags, checked."""
    from ..ingest.influx_store import read_token

    flags = {name: getattr(args, name, None) for name in IngestSettings.model_fields}
    try:
        args = IngestSettings.from_env(environ, **flags)
    except ValidationError as error:
        first = error.errors()[0]
        field = IngestSettings.model_fields.get(str(first["loc"][0]))
        variable = field.validation_alias if field else first["loc"][0]
        raise ConfigError(f"{variable}: {first['msg']}") from None
    ca, cert, key = args.ca, args.cert, args.key
    if args.tls_dir:
        ca = ca or args.tls_dir / "ca.crt"
        cert = cert or args.tls_dir / "tls.crt"
        key = key or args.tls_dir / "tls.key"
    missing = [name for name, value in (("--ca", ca), ("--cert", cert), ("--key", key)) if value is None]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)} (or --tls-dir): ingest connects only with mutual TLS"
        )
    for path in (ca, cert, key):
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist")
    password = args.mqtt_password
    if args.mqtt_password_file:
        try:
            password = Path(args.mqtt_password_file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"MQTT password file: {error}") from None
    if password and not args.mqtt_username:
        raise ConfigError("an MQTT password without --mqtt-username (MQTT_USERNAME)")
    token = None
    if args.store == "influxdb":
        if not args.influx_host:
            raise ConfigError("--store influxdb needs --influx-host (or INFLUX_HOST)")
        try:
            token = read_token(args.influx_token, args.influx_token_file)
        except (OSError, ValueError) as error:
            raise ConfigError(str(error)) from None
    session_id, replica_dir = args.client_id, args.state_dir
    if args.share_group:
        # One session and one spool per replica: a killed replica resumes its own when it comes back.
        replica = args.replica or socket.gethostname()
        session_id = f"{args.client_id}-{replica}"
        replica_dir = args.state_dir / replica
    return IngestConfig(
        mqtt=MqttSettings(
            host=args.broker_host,
            port=args.broker_port,
            ca=ca,
            cert=cert,
            key=key,
            username=args.mqtt_username or None,
            password=password,
        ),
        topic=args.topic,
        client_id=args.client_id,
        share_group=args.share_group,
        session_id=session_id,
        store=args.store,
        sqlite_path=args.sqlite_path,
        influx_host=args.influx_host,
        influx_database=args.influx_database,
        influx_token=token,
        influx_ca=args.influx_ca,
        state_dir=args.state_dir,
        replica_dir=replica_dir,
        spool_dir=args.spool_dir or replica_dir / "spool",
        batch_size=args.batch_size,
        batch_delay=args.batch_delay,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
    )


def build(config: IngestConfig):
    """The consumer with its pipeline, store, spool and dead letters (not started)."""
    from ..ingest.batching import BatchPolicy
    from ..ingest.consumer import MqttConsumer
    from ..ingest.deadletters import DeadLetterStore
    from ..ingest.pipeline import Ingestor
    from ..ingest.spool import Spool

    if config.store == "influxdb":
        from ..ingest.influx_store import InfluxStore

        store = InfluxStore(
            config.influx_host, config.influx_database, config.influx_token, ca_file=config.influx_ca
        )
    else:
        from ..ingest.sqlite_store import SQLiteStore

        store = SQLiteStore(config.sqlite_path)
    config.replica_dir.mkdir(parents=True, exist_ok=True)
    ingestor = Ingestor(
        store,
        Spool(config.spool_dir),
        DeadLetterStore(config.replica_dir / "dead-letters.db"),
        policy=BatchPolicy(max_rows=config.batch_size, max_delay=config.batch_delay),
    )
    return MqttConsumer(
        config.mqtt, ingestor, topic=config.topic, client_id=config.session_id, share_group=config.share_group
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as error:
        log.error("configuration: %s", error)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    consumer = build(config)
    if config.metrics_port:
        consumer.ingestor.metrics.serve(config.metrics_port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    where = config.influx_host if config.store == "influxdb" else config.sqlite_path
    log.info(
        "ingest %s as %s from %s:%d into %s (%s), spool %s",
        consumer.subscription,
        config.session_id,
        config.mqtt.host,
        config.mqtt.port,
        config.store,
        where,
        config.spool_dir,
    )
    consumer.start()
    while not done.wait(1.0):
        if consumer.ingestor.failed.is_set():
            consumer.client.loop_stop()
            return 1
    log.info("stopping: committing and acknowledging what arrived")
    consumer.stop()
    consumer.ingestor.store.close()
    return 0
