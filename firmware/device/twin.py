# The desired configuration the operator publishes on twin/<id>/desired (retained, QoS 1): what in the
# WeatherSensor spec the board acts on. A document is validated as a whole against the running
# configuration (config.validate, plus "is the driver in this build"); only a valid one is applied and
# persisted in desired.json, which boot lays over config.json. A bad one changes nothing: the board keeps
# its last good configuration and reports why in its status ("config": {"generation", "rejected",
# "error"}).
import json

import config
import slots

DESIRED_FILE = "desired.json"
# desired key -> what it may hold; anything else in the document is refused (a typo must not pass silently)
KEYS = (
    "generation",
    "measurementIntervalSeconds",
    "heartbeatSeconds",
    "sensors",
    "payload",
    "ota",
    "broker",
    "certificates",
)
OTA_KEYS = ("checkIntervalSeconds", "jitterSeconds", "channel")
BROKER_KEYS = ("username", "password")
CERT_KEYS = ("renewBeforeSeconds", "checkSeconds", "retrySeconds")


def _copy(d):
    return json.loads(json.dumps(d))


def merge(cfg, doc, has_driver=None):
    """The configuration cfg becomes with the desired document doc applied. Raises config.ConfigError
    with one clear reason; cfg itself is never modified."""
    if not isinstance(doc, dict):
        raise config.ConfigError("desired configuration must be a JSON object")
    for k in doc:
        if k not in KEYS:
            raise config.ConfigError("unknown desired key %r" % k)
    gen = doc.get("generation")
    if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
        raise config.ConfigError("generation must be a non-negative integer")
    new = _copy(cfg)
    for k in ("measurementIntervalSeconds", "heartbeatSeconds", "sensors"):
        if k in doc:
            new[k] = doc[k]
    if "payload" in doc:
        if doc["payload"] not in ("influx", "json"):
            raise config.ConfigError("payload must be influx or json")
        new["features"] = [f for f in new.get("features", []) if f not in ("influx", "json")] + [doc["payload"]]
    for key, allowed in (("ota", OTA_KEYS), ("broker", BROKER_KEYS), ("certificates", CERT_KEYS)):
        part = doc.get(key)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise config.ConfigError("%s must be an object" % key)
        for k in part:
            if k not in allowed:
                raise config.ConfigError("unknown desired key %s.%s" % (key, k))
        if key == "ota" and not new.get("ota"):
            # a board built or provisioned without OTA keeps the settings for a later build
            new["ota"] = {}
        section = new.setdefault(key, {})
        for k in part:
            section[k] = part[k]
    for k, v in (new.get("certificates") or {}).items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > 10 * 365 * 86400:
            raise config.ConfigError("certificates.%s must be a positive number of seconds" % k)
    channel = (new.get("ota") or {}).get("channel")
    if channel is not None and (not isinstance(channel, str) or not channel or len(channel) > 31):
        raise config.ConfigError("ota.channel must be a short name")
    broker = new["broker"]
    for k in BROKER_KEYS:
        if broker.get(k) is not None and not isinstance(broker[k], str):
            raise config.ConfigError("broker.%s must be a string" % k)
    if "ota" not in new.get("features", ()) and not new.get("ota"):
        new.pop("ota", None)
    new = config.validate(new)
    if has_driver is not None:
        for s in new["sensors"]:
            if not has_driver(s["type"]):
                raise config.ConfigError("driver %s not in this build" % s["type"])
    new["generation"] = gen
    return new


def driver_present(kind):
    """Whether this build has the driver module (a build carries only the sensors it was made for)."""
    try:
        __import__(kind)
        return True
    except ImportError:
        return False


def _path(root):
    return root + DESIRED_FILE  # root as slots.py takes it: "" or a folder ending in "/"


def save(text, root=""):
    """Persist the applied document: written beside, then renamed over (a power cut leaves the old or
    the new file, never half of one)."""
    path = _path(root)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    slots.replace_file(tmp, path)


def text(root=""):
    """The persisted document as it came (compared with the retained one after a reconnect)."""
    try:
        with open(_path(root)) as f:
            return f.read()
    except OSError:
        return None


def load(root=""):
    try:
        return json.loads(text(root))
    except (TypeError, ValueError):
        return None


def overlay(cfg, root="", has_driver=None, log=print):
    """At boot: config.json with the last applied desired document on top; cfg as it is when there is
    none, or when it no longer applies (e.g. after an update that dropped a driver), with a log line."""
    doc = load(root)
    if doc is None:
        return cfg
    try:
        return merge(cfg, doc, has_driver)
    except config.ConfigError as e:
        log("weatherfleet: desired.json ignored:", e)
        return cfg
