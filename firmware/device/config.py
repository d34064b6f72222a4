# Device configuration written at provisioning (config.json). A missing or broken file raises ConfigError
# with one clear reason; the caller logs it and idles instead of crash-looping.
import json
import os

FEATURES = ("bme280", "scd30", "sds011", "tls", "ota", "influx", "json", "mqtt", "mtls")
SENSOR_TYPES = ("bme280", "scd30", "sds011")


class ConfigError(Exception):
    pass


def _label_ok(s):
    # DNS-1123 label: it is the MQTT client id, the certificate CN and part of every topic
    if not s or len(s) > 63 or s[0] == "-" or s[-1] == "-":
        return False
    for ch in s:
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch == "-"):
            return False
    return True


def _int(d, key, default, lo, hi):
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ConfigError("%s must be an integer in %d..%d" % (key, lo, hi))
    return v


# (key, default, lowest, highest) of the integer settings of a section
_BROKER_INTS = (("port", 8883, 1, 65535), ("keepalive", 60, 5, 3600))
_OTA_INTS = (
    ("port", 8080, 1, 65535),
    ("checkIntervalSeconds", 3600, 10, 604800),
    ("jitterSeconds", 300, 0, 86400),
    ("healthTimeoutSeconds", 300, 10, 86400),
)
_INTS = (
    ("measurementIntervalSeconds", 60, 1, 86400),
    # a retained status this often, so the operator sees the board alive well within noDataAfter
    ("heartbeatSeconds", 60, 5, 3600),
    ("bufferSize", 32, 1, 1024),
    ("watchdogSeconds", 120, 0, 3600),
)


def _ints(d, table):
    for key, default, lo, hi in table:
        d[key] = _int(d, key, default, lo, hi)


def _section(cfg, key, required):
    v = cfg.get(key)
    if v is None:
        if required:
            raise ConfigError("missing section %r" % key)
        return {}
    if not isinstance(v, dict):
        raise ConfigError("%r must be an object" % key)
    return v


def validate(cfg):
    if not isinstance(cfg, dict):
        raise ConfigError("top level must be a JSON object")
    device = cfg.get("device")
    if not isinstance(device, str) or not _label_ok(device):
        raise ConfigError("device must be a DNS-1123 label (a-z, 0-9, -), got %r" % (device,))
    if not isinstance(cfg.get("location"), str) or not cfg["location"]:
        raise ConfigError("location must be a non-empty string")
    broker = _section(cfg, "broker", True)
    if not isinstance(broker.get("host"), str) or not broker["host"]:
        raise ConfigError("broker.host must be a host name")
    _ints(broker, _BROKER_INTS)
    broker.setdefault("tls", True)
    broker.setdefault("version", 5)
    if broker["version"] not in (4, 5):
        raise ConfigError("broker.version must be 4 (3.1.1) or 5")
    features = cfg.setdefault("features", ["bme280", "tls", "ota", "influx"])
    if not isinstance(features, list) or any(f not in FEATURES for f in features):
        raise ConfigError("features must be a list of %s" % ", ".join(FEATURES))
    if "influx" in features and "json" in features:
        raise ConfigError("features influx and json exclude each other")
    ota = _section(cfg, "ota", "ota" in features)
    if "ota" in features:
        if not isinstance(ota.get("host"), str) or not ota["host"]:
            raise ConfigError("ota.host must be a host name")
        _ints(ota, _OTA_INTS)
        ota.setdefault("kind", "bundle")
        ota.setdefault("tls", False)
        if ota["kind"] not in ("bundle", "image"):
            raise ConfigError("ota.kind must be bundle or image")
        keys = cfg.get("signingKeys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError("signingKeys must list at least one Ed25519 public key (hex or base64)")
    _ints(cfg, _INTS)
    cfg.setdefault("topicPrefix", "sensors")
    cfg.setdefault("otaTopic", "ota")
    sensors = cfg.setdefault("sensors", [])
    if not isinstance(sensors, list):
        raise ConfigError("sensors must be a list")
    seen = []
    for s in sensors:
        if not isinstance(s, dict) or s.get("type") not in SENSOR_TYPES:
            raise ConfigError("each sensor needs a type among %s" % ", ".join(SENSOR_TYPES))
        if s["type"] in seen:
            raise ConfigError("sensor %s listed twice" % s["type"])
        seen.append(s["type"])
        for k in ("bus", "address", "sda", "scl", "uart", "tx", "rx"):
            if k in s and (not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < 0 or s[k] > 127):
                raise ConfigError("sensor %s: %s must be a small integer" % (s["type"], k))
    if broker["tls"] or ("tls" in features):
        tls = _section(cfg, "tls", True)
        for k in ("ca", "cert", "key"):
            if not isinstance(tls.get(k), str):
                raise ConfigError("tls.%s must be a file path" % k)
        for k in ("ca", "cert", "key"):
            try:
                os.stat(tls[k])
            except OSError:
                # caught here, the board idles with a clear line instead of failing in the TLS stack
                raise ConfigError("tls.%s: %s not found" % (k, tls[k]))
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("cannot read %s" % path)
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return validate(cfg)
