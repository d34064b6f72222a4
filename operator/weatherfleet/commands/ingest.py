"""`weatherfleet ingest`: MQTT `sensors/#` into InfluxDB 3 or SQLite, nothing lost.

Every option has an environment variable (the Deployment sets those); flags win. The InfluxDB token is
read only from the environment (INFLUX_TOKEN) or a file (a mounted Secret), never from a flag, so it does
not show in process listings; the same holds for the MQTT password NanoMQ needs (MQTT_PASSWORD)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from pathlib import Path

from pydantic import BaseModel

from .. import identities
from ..mqtt import MqttSettings

log = logging.getLogger("weatherfleet.ingest")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mqtt = parser.add_argument_group("MQTT (mutual TLS)")
    mqtt.add_argument("--broker-host", default=_env("MQTT_HOST", "127.0.0.1"), help="env MQTT_HOST")
    mqtt.add_argument("--broker-port", type=int, default=int(_env("MQTT_PORT", "8883")), help="env MQTT_PORT")
    mqtt.add_argument(
        "--tls-dir",
        type=Path,
        default=_env("MQTT_TLS_DIR"),
        help="folder with ca.crt, tls.crt, tls.key (a mounted cert-manager Secret); env MQTT_TLS_DIR",
    )
    mqtt.add_argument("--ca", type=Path, default=_env("MQTT_CA"), help="CA certificate; env MQTT_CA")
    mqtt.add_argument(
        "--cert", type=Path, default=_env("MQTT_CERT"), help="client certificate; env MQTT_CERT"
    )
    mqtt.add_argument("--key", type=Path, default=_env("MQTT_KEY"), help="client key; env MQTT_KEY")
    mqtt.add_argument(
        "--mqtt-username",
        default=_env("MQTT_USERNAME"),
        help="for NanoMQ, which cannot take the user from the certificate; env MQTT_USERNAME",
    )
    mqtt.add_argument(
        "--mqtt-password-file",
        type=Path,
        default=_env("MQTT_PASSWORD_FILE"),
        help="file holding the MQTT password; else env MQTT_PASSWORD; env MQTT_PASSWORD_FILE",
    )
    mqtt.add_argument("--topic", default=_env("INGEST_TOPIC", "sensors/#"), help="env INGEST_TOPIC")
    mqtt.add_argument(
        "--client-id",
        default=_env("INGEST_CLIENT_ID", identities.INGEST),
        help="session id (with --share-group: its prefix); env INGEST_CLIENT_ID",
    )
    mqtt.add_argument(
        "--share-group",
        default=_env("INGEST_SHARE_GROUP") or None,
        help="run as one of several replicas: subscribe $share/<group>/<topic>, each replica with its own "
        "session <client-id>-<replica>; env INGEST_SHARE_GROUP",
    )
    mqtt.add_argument(
        "--replica",
        default=_env("INGEST_REPLICA") or socket.gethostname(),
        help="this replica's name in a share group (default: the host name, the pod's name); env INGEST_REPLICA",
    )
    store = parser.add_argument_group("store")
    store.add_argument(
        "--store",
        choices=("sqlite", "influxdb"),
        default=_env("INGEST_STORE", "sqlite"),
        help="env INGEST_STORE",
    )
    store.add_argument(
        "--sqlite-path",
        type=Path,
        default=_env("INGEST_SQLITE_PATH", "weatherfleet.db"),
        help="env INGEST_SQLITE_PATH",
    )
    store.add_argument(
        "--influx-host", default=_env("INFLUX_HOST"), help="e.g. http://influxdb3:8181; env INFLUX_HOST"
    )
    store.add_argument(
        "--influx-database", default=_env("INFLUX_DATABASE", "weather"), help="env INFLUX_DATABASE"
    )
    store.add_argument(
        "--influx-token-file",
        type=Path,
        default=_env("INFLUX_TOKEN_FILE"),
        help="file holding the token (mounted Secret); else env INFLUX_TOKEN; env INFLUX_TOKEN_FILE",
    )
    store.add_argument(
        "--influx-ca", type=Path, default=_env("INFLUX_CA"), help="CA of an https InfluxDB; env INFLUX_CA"
    )
    state = parser.add_argument_group("durability and operations")
    state.add_argument(
        "--state-dir",
        type=Path,
        default=_env("INGEST_STATE_DIR", "ingest-state"),
        help="spool and dead letters live here (a persistent volume); env INGEST_STATE_DIR",
    )
    state.add_argument(
        "--spool-dir", type=Path, default=_env("INGEST_SPOOL_DIR"), help="default <state-dir>/spool"
    )
    state.add_argument("--batch-size", type=int, default=int(_env("INGEST_BATCH_SIZE", "1000")))
    state.add_argument(
        "--batch-delay", type=float, default=float(_env("INGEST_BATCH_DELAY", "1.0")), help="seconds"
    )
    state.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("INGEST_METRICS_PORT", "9090")),
        help="0 disables; env INGEST_METRICS_PORT",
    )
    state.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))


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

    def __repr_args__(self):  # never print the token
        for key, value in super().__repr_args__():
            yield key, ("***" if key == "influx_token" and value else value)


class ConfigError(ValueError):
    pass


def load_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> IngestConfig:
    from ..ingest.influx_store import read_token

    environ = os.environ if environ is None else environ
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
    password = environ.get("MQTT_PASSWORD") or None
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
            token = read_token(environ.get("INFLUX_TOKEN"), args.influx_token_file)
        except (OSError, ValueError) as error:
            raise ConfigError(str(error)) from None
    session_id, replica_dir = args.client_id, args.state_dir
    if args.share_group:
        # One session and one spool per replica: a killed replica resumes its own when it comes back.
        session_id = f"{args.client_id}-{args.replica}"
        replica_dir = args.state_dir / args.replica
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
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args)
    except ConfigError as error:
        log.error("configuration: %s", error)
        return 2
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
