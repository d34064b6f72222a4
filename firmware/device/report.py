# JSON documents for sensors/<id>/status (retained; also the periodic heartbeat) and sensors/<id>/ota (events), per
# weatherfleet.messages.DeviceStatus / OtaEvent.
import json


def _clip(text, n):
    # the status must fit the MQTT client's transmit buffer (768 bytes) whatever the errors say
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def status(online, firmware=None, uptime=None, heap=None, rssi=None, boot=None, slot=None, sensors=None, dropped=None, config=None, reading=None, cert=None):
    d = {"online": online}
    if firmware is not None:
        d["firmware"] = firmware
        d["uptime"] = uptime
        d["heap"] = heap
        d["rssi"] = rssi
        d["boot"] = boot
        d["slot"] = slot
        d["sensors"] = {k: _clip(v, 40) for k, v in (sensors or {}).items()}
        if dropped:
            d["dropped"] = dropped
        if config is not None:
            if "error" in config:
                config = dict(config, error=_clip(config["error"], 64))
            d["config"] = config  # {"generation": applied[, "rejected": n, "error": why]}
        if cert is not None:
            d["cert"] = {"error": _clip(cert.get("error", ""), 48)}  # {"error": why the renewed certificate was not taken}
        if reading is not None:
            d["reading"] = reading  # the last measurement: {"time": epoch ms, field: value, ...}
    return json.dumps(d)


def event(name, version=None, percent=None, reason=None, time=None, time_ms=None):
    d = {"event": name}
    if version is not None:
        d["version"] = version
    if percent is not None:
        d["percent"] = percent
    if reason is not None:
        d["reason"] = reason
    if time is not None and time_ms is None:
        d["time"] = time
    text = json.dumps(d)
    if time_ms is not None:
        # seconds with a millisecond fraction, written as text: a board's 32-bit float cannot hold it, and
        # two progress events of one second must stay two events
        text = text[:-1] + ', "time": %d.%03d}' % (time_ms // 1000, time_ms % 1000)
    return text
