# Measurement payloads: InfluxDB line protocol or JSON, written straight into a caller's buffer.
#
# The escaped prefix (measurement + tags, or the JSON head) is built once; each measurement then only
# writes digits into a preallocated buffer, so the publish path allocates (almost) nothing. Values are
# written with two decimals (fixed point), which covers the sensors' resolution.
import json

# field order on the wire; index = position in the values list the sensors fill
FIELDS = ("temperature", "humidity", "pressure", "co2", "pm25", "pm10")
TEMPERATURE = 0
HUMIDITY = 1
PRESSURE = 2
CO2 = 3
PM25 = 4
PM10 = 5


def escape_measurement(s):
    # line protocol: measurement names escape comma and space
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_tag(s):
    # line protocol: tag keys and values escape comma, equals sign and space; newlines cannot be
    # represented at all, so they become spaces (escaped) rather than splitting the line
    s = s.replace("\\", "\\\\").replace("\n", " ").replace("\r", " ")
    return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _put(buf, pos, src):
    for i in range(len(src)):
        buf[pos + i] = src[i]
    return pos + len(src)


def _put_uint(buf, pos, v):
    # decimal digits of a non-negative int, most significant first, without building a string
    if v == 0:
        buf[pos] = 48
        return pos + 1
    n = 0
    t = v
    while t:
        t //= 10
        n += 1
    end = pos + n
    i = end - 1
    while v:
        buf[i] = 48 + v % 10
        v //= 10
        i -= 1
    return end


def _put_fixed2(buf, pos, value):
    # value with two decimals, e.g. -3.05 -> "-3.05"
    c = int(round(value * 100))
    if c < 0:
        buf[pos] = 45
        pos += 1
        c = -c
    pos = _put_uint(buf, pos, c // 100)
    buf[pos] = 46
    c %= 100
    buf[pos + 1] = 48 + c // 10
    buf[pos + 2] = 48 + c % 10
    return pos + 3


def _put_padded(buf, pos, v, width):
    # v (a small int) as exactly `width` digits, zero-padded
    i = pos + width - 1
    while i >= pos:
        buf[i] = 48 + v % 10
        v //= 10
        i -= 1
    return pos + width


def _put_stamp(buf, pos, ms, json_seconds):
    """Epoch milliseconds as line-protocol nanoseconds ("<ms>000000") or JSON seconds ("<s>.<mmm>").
    ms exceeds a small int on 32-bit ports: one split keeps the digit loops on small ints."""
    hi = ms // 100000000  # the leading digits
    lo = ms % 100000000  # the last 8 digits: 5 of seconds, 3 of milliseconds
    if hi:
        pos = _put_uint(buf, pos, hi)
        pos = _put_padded(buf, pos, lo // 1000, 5)
    else:
        pos = _put_uint(buf, pos, lo // 1000)
    if json_seconds:
        buf[pos] = 46
        return _put_padded(buf, pos + 1, lo % 1000, 3)
    pos = _put_padded(buf, pos, lo % 1000, 3)
    return _put_padded(buf, pos, 0, 6)


# Largest magnitude written: far beyond every sensor's range (the backend flags physically implausible
# values itself), small enough that value * 100 stays exact in single precision's exponent range and its
# digits fit the slot. Anything else (NaN, inf, 3.4e38 from a CRC-valid SCD30 frame, 1e300 on a
# double-precision port) is left out of the payload and named in `Encoder.flagged`: encode never raises.
LIMIT = 1e7
# which sensor reports each field (so the application can say which sensor sent an unusable value)
SENSOR_OF = ("bme280", "bme280", "bme280", "scd30", "sds011", "sds011")


def _usable(v):
    """0: absent, 1: writable, 2: present but unusable (not a number, not finite, out of range)."""
    if v is None:
        return 0
    try:
        if -LIMIT < v < LIMIT:  # False for NaN and +-inf as well
            return 1
    except TypeError:
        pass
    return 2


def _finite(v):
    # a value that is written (app.py's last reading uses it too)
    return _usable(v) == 1


class Encoder:
    """encode(values, epoch_ms, buf) -> number of bytes written into buf (0: no value to publish).
    After each call `flagged` holds the indexes of values left out as unusable (empty: none)."""

    def __init__(self, device, location, firmware, json_format=False, measurement="weather"):
        self.json = json_format
        self.flagged = []
        if json_format:
            head = "{%s:%s,%s:%s,%s:%s" % (
                json.dumps("device"),
                json.dumps(device),
                json.dumps("location"),
                json.dumps(location),
                json.dumps("firmware"),
                json.dumps(firmware),
            )
            self.prefix = head.encode()
            self.names = tuple((',"%s":' % f).encode() for f in FIELDS)
            self.time_key = b',"time":'
        else:
            # tags in lexical key order, as InfluxDB recommends
            head = "%s,device=%s,firmware=%s,location=%s " % (
                escape_measurement(measurement),
                escape_tag(device),
                escape_tag(firmware),
                escape_tag(location),
            )
            self.prefix = head.encode()
            self.names = tuple(("%s=" % f).encode() for f in FIELDS)

    def max_size(self):
        # prefix + six fields of up to 24 bytes each + a 30-byte timestamp and punctuation
        return len(self.prefix) + sum(len(n) for n in self.names) + 6 * 24 + 40

    def encode(self, values, ms, buf):
        pos = _put(buf, 0, self.prefix)
        first = True
        names = self.names
        if self.flagged:
            self.flagged = []
        for i in range(len(names)):
            v = values[i]
            usable = _usable(v)
            if usable != 1:
                if usable:
                    self.flagged.append(i)
                continue
            if self.json:
                pos = _put(buf, pos, names[i])
            else:
                if not first:
                    buf[pos] = 44
                    pos += 1
                # names[i] is "field="
                pos = _put(buf, pos, names[i])
            pos = _put_fixed2(buf, pos, v)
            first = False
        if first:
            return 0  # no working sensor: nothing to publish
        if self.json:
            pos = _put(buf, pos, self.time_key)
            pos = _put_stamp(buf, pos, ms, True)
            buf[pos] = 125
            return pos + 1
        buf[pos] = 32
        return _put_stamp(buf, pos + 1, ms, False)
