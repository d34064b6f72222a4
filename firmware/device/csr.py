# ECDSA P-256 key generation and signing, and a PKCS#10 certificate signing request, in pure Python that
# runs under MicroPython (big integers are MicroPython's mpz longs, SHA-256 is hashlib's).
#
# Used for credentials that renew themselves: the board keeps its private key and sends only a CSR over
# its authenticated MQTT connection; the operator returns the signed certificate. Signing costs one scalar
# multiplication (Jacobian coordinates, a 4-bit fixed window over a table of 16 multiples of G); see
# docs/lifecycle.md for the time it takes under MicroPython. Import it only when a CSR is due, so its
# code and tables are not resident the rest of the time.
import hashlib
import os

from der import read as _read, to_der

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def _inv(a, m):
    # Fermat: m is prime for both the field and the group order
    return pow(a, m - 2, m)


def _double(x, y, z):
    # Jacobian doubling for a = -3 (dbl-2001-b)
    if not z:
        return 0, 1, 0
    p = P
    zz = z * z % p
    yy = y * y % p
    xyy = x * yy % p
    a = 3 * (x - zz) * (x + zz) % p
    x3 = (a * a - 8 * xyy) % p
    z3 = ((y + z) * (y + z) - yy - zz) % p
    y3 = (a * (4 * xyy - x3) - 8 * yy * yy) % p
    return x3, y3, z3


def _add(x1, y1, z1, x2, y2, z2):
    # Jacobian addition (add-2007-bl), with the doubling and infinity cases
    if not z1:
        return x2, y2, z2
    if not z2:
        return x1, y1, z1
    p = P
    z1z1 = z1 * z1 % p
    z2z2 = z2 * z2 % p
    u1 = x1 * z2z2 % p
    u2 = x2 * z1z1 % p
    s1 = y1 * z2 * z2z2 % p
    s2 = y2 * z1 * z1z1 % p
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    if not h:
        if not r:
            return _double(x1, y1, z1)
        return 0, 1, 0
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    z3 = z1 * z2 * h % p
    return x3, y3, z3


_TABLE = None


def _table():
    # 0..15 times G, for the 4-bit window
    global _TABLE
    if _TABLE is None:
        t = [(0, 1, 0), (GX, GY, 1)]
        for i in range(2, 16):
            t.append(_add(*(t[i - 1] + t[1])))
        _TABLE = t
    return _TABLE


def mul_g(k):
    """k times the base point, as affine (x, y)."""
    t = _table()
    x, y, z = 0, 1, 0
    for shift in range(252, -4, -4):
        for _ in range(4):
            x, y, z = _double(x, y, z)
        w = (k >> shift) & 15
        if w:
            x, y, z = _add(x, y, z, *t[w])
    zi = _inv(z, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def _int(b):
    return int.from_bytes(b, "big")


def _bytes32(n):
    return n.to_bytes(32, "big")


def generate():
    """A new private key (an int in 1..N-1) from the hardware RNG (os.urandom on the ESP32): made on the
    board, it never leaves it."""
    while True:
        k = _int(os.urandom(32))
        if 0 < k < N:
            return k


def _hmac(key, data):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + data).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def _nonces(d, h1):
    """RFC 6979 deterministic nonces: no random number is needed to sign, so a weak RNG cannot leak the
    key through a repeated nonce."""
    x = _bytes32(d)
    h = _bytes32(_int(h1) % N)
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = _hmac(k, v + b"\x00" + x + h)
    v = _hmac(k, v)
    k = _hmac(k, v + b"\x01" + x + h)
    v = _hmac(k, v)
    while True:
        v = _hmac(k, v)
        t = _int(v)
        if 0 < t < N:
            yield t
        k = _hmac(k, v + b"\x00")
        v = _hmac(k, v)


def public_point(d):
    x, y = mul_g(d)
    return b"\x04" + _bytes32(x) + _bytes32(y)


def sign(d, message):
    """ECDSA-SHA256 signature (r, s) of message with private key d."""
    h1 = hashlib.sha256(message).digest()
    e = _int(h1)
    for k in _nonces(d, h1):
        x, _ = mul_g(k)
        r = x % N
        if not r:
            continue
        s = _inv(k, N) * (e + r * d) % N
        if s:
            return r, s


# ---- DER ------------------------------------------------------------------------------------------------


def _len(n):
    if n < 128:
        return bytes((n,))
    if n < 256:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def _tlv(tag, body):
    return bytes((tag,)) + _len(len(body)) + body


def _der_int(n):
    b = n.to_bytes(33, "big")  # MicroPython's int has no bit_length(): trim instead
    i = 0
    while i < 32 and b[i] == 0 and b[i + 1] < 0x80:
        i += 1  # minimal encoding, with a leading zero only where the top bit is set
    return _tlv(0x02, b[i:])


def _seq(*parts):
    return _tlv(0x30, b"".join(parts))


_OID_EC_PUBLIC_KEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
_OID_P256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
_OID_ECDSA_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"
_OID_CN = b"\x06\x03\x55\x04\x03"
_OID_O = b"\x06\x03\x55\x04\x0a"


def _name(common_name, organization="weatherfleet"):
    def rdn(oid, value):
        return _tlv(0x31, _seq(oid, _tlv(0x0C, value.encode())))

    return _seq(rdn(_OID_O, organization), rdn(_OID_CN, common_name))


def request(d, common_name, pub=None):
    """A DER PKCS#10 CSR for common_name (the device id) with key d, signed ECDSA-SHA256."""
    if pub is None:
        pub = public_point(d)
    spki = _seq(_seq(_OID_EC_PUBLIC_KEY, _OID_P256), _tlv(0x03, b"\x00" + pub))
    info = _seq(_der_int(0), _name(common_name), spki, b"\xa0\x00")
    r, s = sign(d, info)
    return _seq(info, _seq(_OID_ECDSA_SHA256), _tlv(0x03, b"\x00" + _seq(_der_int(r), _der_int(s))))


# ---- PEM keys (what provisioning writes: PKCS#8, or SEC1 "EC PRIVATE KEY") ------------------------------


def load_key(text):
    """The private scalar of a P-256 key in PEM (str or bytes) or DER (bytes), PKCS#8 or SEC1."""
    der = to_der(text)
    _, start, end = _read(der, 0)  # outer SEQUENCE
    tag, s, e = _read(der, start)  # version INTEGER
    tag, s2, e2 = _read(der, e)
    if tag == 0x30:  # PKCS#8: AlgorithmIdentifier, then OCTET STRING holding the SEC1 key
        tag, s3, e3 = _read(der, e2)
        der = der[s3:e3]
        _, start, end = _read(der, 0)
        _, s, e = _read(der, start)
        tag, s2, e2 = _read(der, e)
    if tag != 0x04:
        raise ValueError("not an EC private key")
    return _int(der[s2:e2])


def pem(label, der):
    """DER as PEM text under `label` (RFC 7468: base64 in lines of 64)."""
    import binascii

    b64 = binascii.b2a_base64(der).decode().strip()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, body, label)


def pem_key(d):
    """SEC1 PEM of private key d, for the board's certs/ folder."""
    return pem("EC PRIVATE KEY", _seq(_der_int(1), _tlv(0x04, _bytes32(d)), _tlv(0xA0, _OID_P256)))
