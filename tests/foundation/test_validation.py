"""Every validation rule of the three resources, with the message a user sees (field path + sentence)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from weatherfleet.models import KINDS
from weatherfleet.models.common import validation_messages

# (kind, dotted path to change, new value, field path reported, words of the message)
CASES = [
    # WeatherSensor
    ("sensor", "spec.deviceId", "Dev_01", "spec.deviceId", "'Dev_01' is not a DNS-1123 label"),
    ("sensor", "spec.deviceId", "a" * 64, "spec.deviceId", "at most 63 characters"),
    ("sensor", "spec.deviceId", "-dev", "spec.deviceId", "is not a DNS-1123 label"),
    (
        "sensor",
        "spec.sensors.0.type",
        "dht22",
        "spec.sensors[0].type",
        "'dht22' is not one of 'bme280', 'scd30' or 'sds011'",
    ),
    ("sensor", "spec.sensors", [], "spec.sensors", "at least 1 item"),
    (
        "sensor",
        "spec.sensors",
        [{"type": "bme280"}, {"type": "bme280", "i2c": {"address": 0x77}}],
        "spec",
        "sensor type listed more than once: bme280",
    ),
    (
        "sensor",
        "spec.sensors",
        [{"type": "bme280", "i2c": {"address": 0x61}}, {"type": "scd30"}],
        "spec",
        "bme280 and scd30 both use I2C address 0x61 on bus 0",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"address": 0x78}},
        "spec.sensors[0].i2c.address",
        "120: input should be less than or equal to 119",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"address": 0x03}},
        "spec.sensors[0].i2c.address",
        "input should be greater than or equal to 8",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"bus": 2}},
        "spec.sensors[0].i2c.bus",
        "less than or equal to 1",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"sda": 6}},
        "spec.sensors[0].i2c",
        "sda: GPIO 6 is wired to the SPI flash",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"scl": 34}},
        "spec.sensors[0].i2c",
        "scl: GPIO 34 is input-only",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"sda": 22, "scl": 22}},
        "spec.sensors[0].i2c",
        "sda and scl must be different GPIOs",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "i2c": {"sda": 40}},
        "spec.sensors[0].i2c.sda",
        "less than or equal to 39",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "bme280", "uart": {"id": 2}},
        "spec.sensors[0]",
        "bme280 is an I2C sensor: set i2c, not uart",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "sds011", "i2c": {}},
        "spec.sensors[0]",
        "sds011 is a UART sensor: set uart, not i2c",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "sds011", "uart": {"id": 0}},
        "spec.sensors[0].uart.id",
        "0: input should be greater than or equal to 1",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "sds011", "uart": {"id": 3}},
        "spec.sensors[0].uart.id",
        "less than or equal to 2",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "sds011", "uart": {"tx": 35}},
        "spec.sensors[0].uart",
        "tx: GPIO 35 is input-only",
    ),
    (
        "sensor",
        "spec.sensors.0",
        {"type": "sds011", "uart": {"tx": 16, "rx": 16}},
        "spec.sensors[0].uart",
        "tx and rx must be different GPIOs",
    ),
    (
        "sensor",
        "spec.measurementIntervalSeconds",
        0,
        "spec.measurementIntervalSeconds",
        "greater than or equal to 1",
    ),
    (
        "sensor",
        "spec.measurementIntervalSeconds",
        100000,
        "spec.measurementIntervalSeconds",
        "less than or equal to 86400",
    ),
    (
        "sensor",
        "spec.firmware",
        {"checkIntervalSeconds": 30},
        "spec.firmware.checkIntervalSeconds",
        "greater than or equal to 60",
    ),
    (
        "sensor",
        "spec.firmware",
        {"jitterSeconds": 4000},
        "spec.firmware.jitterSeconds",
        "less than or equal to 3600",
    ),
    (
        "sensor",
        "spec.firmware",
        {"checkIntervalSeconds": 600, "jitterSeconds": 900},
        "spec.firmware",
        "jitterSeconds (900) must not exceed checkIntervalSeconds (600)",
    ),
    (
        "sensor",
        "spec.firmware",
        {"pinnedVersion": "1.2"},
        "spec.firmware.pinnedVersion",
        "'1.2' is not a semantic version",
    ),
    ("sensor", "spec.firmware", {"channel": "Beta"}, "spec.firmware.channel", "is not a channel name"),
    (
        "sensor",
        "spec.alerting",
        {"noDataAfter": "10 minutes"},
        "spec.alerting.noDataAfter",
        "'10 minutes' is not a duration like '90s'",
    ),
    ("sensor", "spec.features", {"tls": False}, "spec.features", "mtls requires tls"),
    (
        "sensor",
        "spec.features",
        {"payload": "xml"},
        "spec.features.payload",
        "'xml' is not one of 'influx' or 'json'",
    ),
    ("sensor", "spec.board", "arduino-uno", "spec.board", "is not one of"),
    ("sensor", "spec.location", "", "spec.location", "at least 1 character"),
    ("sensor", "spec.location", "bad\nname", "spec.location", "is not text without control characters"),
    ("sensor", "spec.wifiPassword", "hunter2", "spec.wifiPassword", "unknown field"),
    # SensorFleet
    (
        "fleet",
        "spec.rollout",
        {"waves": [{"percent": 10}, {"percent": 5}, {"percent": 100}]},
        "spec.rollout",
        "wave percentages must be strictly increasing, got 10, 5, 100",
    ),
    (
        "fleet",
        "spec.rollout",
        {"waves": [{"percent": 10}, {"percent": 10}, {"percent": 100}]},
        "spec.rollout",
        "strictly increasing",
    ),
    (
        "fleet",
        "spec.rollout",
        {"waves": [{"percent": 10}, {"percent": 50}]},
        "spec.rollout",
        "the last wave must open the rollout to 100 percent, got 50",
    ),
    (
        "fleet",
        "spec.rollout",
        {"waves": [{"percent": 0}, {"percent": 100}]},
        "spec.rollout.waves[0].percent",
        "greater than 0",
    ),
    ("fleet", "spec.rollout", {"waves": []}, "spec.rollout.waves", "at least 1 item"),
    (
        "fleet",
        "spec.rollout",
        {"waves": [{"percent": 100, "bakeTime": "soon"}]},
        "spec.rollout.waves[0].bakeTime",
        "'soon' is not a duration",
    ),
    (
        "fleet",
        "spec.rollout",
        {"failureThreshold": {"count": 2, "percent": 5}},
        "spec.rollout.failureThreshold",
        "set exactly one of count or percent",
    ),
    (
        "fleet",
        "spec.rollout",
        {"failureThreshold": {}},
        "spec.rollout.failureThreshold",
        "set exactly one of count or percent",
    ),
    (
        "fleet",
        "spec.rollout",
        {"failureThreshold": {"percent": 150}},
        "spec.rollout.failureThreshold.percent",
        "less than or equal to 100",
    ),
    (
        "fleet",
        "spec.rollout",
        {"failureThreshold": {"count": 0}},
        "spec.rollout.failureThreshold.count",
        "greater than or equal to 1",
    ),
    ("fleet", "spec.rollout", {"release": "Firmware_1"}, "spec.rollout.release", "is not a DNS-1123 label"),
    (
        "fleet",
        "spec.certificates",
        {"duration": "720h", "renewBefore": "2160h"},
        "spec.certificates",
        "renewBefore (2160h) must be shorter than duration (720h)",
    ),
    (
        "fleet",
        "spec.certificates",
        {"privateKey": {"algorithm": "ECDSA", "size": 2048}},
        "spec.certificates.privateKey",
        "size 2048 is not valid for ECDSA: use one of [256, 384, 521]",
    ),
    (
        "fleet",
        "spec.certificates",
        {"privateKey": {"algorithm": "DSA"}},
        "spec.certificates.privateKey.algorithm",
        "'DSA' is not one of",
    ),
    (
        "fleet",
        "spec.certificates",
        {"issuerRef": {"name": "ca", "kind": "Vault"}},
        "spec.certificates.issuerRef.kind",
        "'Vault' is not one of 'ClusterIssuer' or 'Issuer'",
    ),
    (
        "fleet",
        "spec.alerting",
        {"telegram": {"botToken": "123:abc", "chatId": "1"}},
        "spec.alerting.telegram.botToken",
        "unknown field",
    ),
    (
        "fleet",
        "spec.alerting",
        {"telegram": {"chatId": "1"}},
        "spec.alerting.telegram.botTokenSecretRef",
        "required field is missing",
    ),
    (
        "fleet",
        "spec.alerting",
        {"telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}, "chatId": "my chat"}},
        "spec.alerting.telegram.chatId",
        "is not a Telegram chat id",
    ),
    (
        "fleet",
        "spec.alerting",
        {"telegram": {"botTokenSecretRef": {"name": "Telegram Bot", "key": "t"}, "chatId": "1"}},
        "spec.alerting.telegram.botTokenSecretRef.name",
        "is not a Kubernetes object name",
    ),
    ("fleet", "spec.alerting", {"noDataAfter": "5 min"}, "spec.alerting.noDataAfter", "is not a duration"),
    (
        "fleet",
        "spec.broker",
        {"kind": "emqx"},
        "spec.broker.kind",
        "'emqx' is not one of 'nanomq' or 'mosquitto'",
    ),
    ("fleet", "spec.broker", {"host": "NanoMQ"}, "spec.broker.host", "'NanoMQ' is not a DNS name"),
    ("fleet", "spec.broker", {"port": 0}, "spec.broker.port", "greater than or equal to 1"),
    (
        "fleet",
        "spec.broker",
        {"topicPrefix": "Sensors/x"},
        "spec.broker.topicPrefix",
        "is not a topic prefix",
    ),
    (
        "fleet",
        "spec.grafana",
        {"datasourceUid": "influx db"},
        "spec.grafana.datasourceUid",
        "is not a Grafana uid",
    ),
    (
        "fleet",
        "spec.selector",
        {"matchExpressions": [{"key": "a", "operator": "Like"}]},
        "spec.selector.matchExpressions[0].operator",
        "'Like' is not one of",
    ),
    ("fleet", "spec.selector", None, "spec.selector", "valid dictionary"),
    # FirmwareRelease
    ("release", "spec.version", "v1.0", "spec.version", "'v1.0' is not a semantic version"),
    (
        "release",
        "spec.artifact",
        {"repository": "reg.example/fw/x", "tag": "1.0.0", "digest": "sha256:" + "a" * 64},
        "spec.artifact",
        "set tag or digest, not both",
    ),
    (
        "release",
        "spec.artifact",
        {"repository": "reg.example/fw/x", "digest": "sha256:XYZ"},
        "spec.artifact.digest",
        "is not a digest: 'sha256:' and 64 lowercase hex digits",
    ),
    (
        "release",
        "spec.artifact",
        {"repository": "Reg.Example/FW"},
        "spec.artifact.repository",
        "is not an OCI repository",
    ),
    (
        "release",
        "spec.artifact",
        {"repository": "reg.example/fw/x", "kind": "zip"},
        "spec.artifact.kind",
        "'zip' is not one of 'image' or 'bundle'",
    ),
    (
        "release",
        "spec.signature",
        {"required": True},
        "spec.signature",
        "a required signature needs publicKeyRef",
    ),
    (
        "release",
        "spec.signature",
        {"required": True, "publicKey": "MCowBQYDK2VwAyEA"},
        "spec.signature.publicKey",
        "unknown field",
    ),
    ("release", "spec.features", ["influx", "json"], "spec", "features influx and json are exclusive"),
    ("release", "spec.features", ["mtls"], "spec", "feature mtls requires tls"),
    ("release", "spec.features", ["tls", "tls"], "spec", "features listed more than once"),
    ("release", "spec.features", ["lora"], "spec.features[0]", "'lora' is not one of"),
]


def _ids(case):
    return f"{case[0]}:{case[1]}={str(case[2])[:30]}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_rule_reports_field_and_message(build, case):
    kind, path, value, field, words = case
    doc = build.with_path(getattr(build, kind)(), path, value)
    model = KINDS[doc["kind"]]
    with pytest.raises(ValidationError) as caught:
        model.model_validate(doc)
    messages = validation_messages(caught.value)
    assert any(f == field and words in m for f, m in messages), messages


@pytest.mark.parametrize("kind", ["sensor", "fleet", "release"])
def test_valid_documents_pass(build, kind):
    doc = getattr(build, kind)()
    obj = KINDS[doc["kind"]].model_validate(doc)
    assert obj.metadata.name


def test_defaults_fill_the_bus_and_address_of_each_sensor_type(build):
    doc = build.sensor(sensors=[{"type": "bme280"}, {"type": "scd30"}, {"type": "sds011"}])
    spec = KINDS["WeatherSensor"].model_validate(doc).spec
    buses = {s.type: (s.i2c.address if s.i2c else None, s.uart.id if s.uart else None) for s in spec.sensors}
    assert buses == {"bme280": (0x76, None), "scd30": (0x61, None), "sds011": (None, 2)}


def test_no_secret_can_be_written_inline_anywhere():
    """Every field that names something secret is a reference to a Secret (an object of name and key) or
    the name of a Secret the operator writes; the schemas have no place for a token or password value."""
    from weatherfleet.crds import all_crds

    def walk(node, path=""):
        for key, value in node.get("properties", {}).items():
            yield f"{path}.{key}", value
            yield from walk(value, f"{path}.{key}")
        if "items" in node:
            yield from walk(node["items"], path + "[]")

    secretish = []
    for crd in all_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in walk(schema):
            leaf = path.rsplit(".", 1)[-1].lower()
            if any(word in leaf for word in ("token", "password", "secret")):
                secretish.append(path)
                if node.get("type") == "object":
                    assert set(node["properties"]) == {"name", "key"}, path
                else:
                    assert leaf == "credentialssecret" and node.get("pattern"), path  # a Secret's name
    assert ".spec.alerting.telegram.botTokenSecretRef" in secretish
