# Credentials that renew themselves. The board's private key never leaves it: when its certificate is
# within renewBefore of its expiry it sends a certificate signing request (csr.py) on twin/<id>/csr; the
# operator has it signed by the fleet's issuer and returns the certificate on twin/<id>/cert. The new
# certificate is staged beside the current one and used for the next connection only; it replaces the
# current one once a connection with it succeeded, and is dropped if the broker refuses it.
import json
import os

from der import from_pem, read as _read, to_der
import slots


def _days(y, m, d):
    # days since 1970-01-01 of a proleptic Gregorian date (no time.mktime: its epoch differs by port)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _time(tag, s):
    s = s.decode()
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        y = int(s[0:2])
        y += 2000 if y < 50 else 1900
        s = s[2:]
    else:  # GeneralizedTime YYYYMMDDHHMMSSZ
        y = int(s[0:4])
        s = s[4:]
    return _days(y, int(s[0:2]), int(s[2:4])) * 86400 + int(s[4:6]) * 3600 + int(s[6:8]) * 60 + int(s[8:10])


def _fields(pem):
    """The DER and the (tag, start, end) of TBSCertificate's fields, the version skipped: serial, signature
    algorithm, issuer, validity, subject, subjectPublicKeyInfo, ..."""
    der = to_der(pem)
    _, s, _ = _read(der, 0)  # Certificate
    _, pos, end = _read(der, s)  # TBSCertificate
    fields = []
    while pos < end:
        tag, a, b = _read(der, pos)
        fields.append((tag, a, b))
        pos = b
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    return der, fields


def validity(pem):
    """(notBefore, notAfter) of a PEM certificate, Unix seconds."""
    der, fields = _fields(pem)
    _, a, _ = fields[3]
    t1, a1, b1 = _read(der, a)
    t2, a2, b2 = _read(der, b1)
    return _time(t1, der[a1:b1]), _time(t2, der[a2:b2])


def public_point(pem):
    """The uncompressed EC point (0x04 || x || y) in a PEM certificate's SubjectPublicKeyInfo."""
    der, fields = _fields(pem)
    _, a, _ = fields[5]
    _, _, b = _read(der, a)  # AlgorithmIdentifier
    _, a, b = _read(der, b)  # BIT STRING: unused-bits byte, then the point
    return bytes(der[a + 1 : b])


def due(pem, now, renew_before=None):
    """Whether a certificate is due for renewal: within renew_before seconds of its expiry (default a
    third of its lifetime, as cert-manager does)."""
    start, end = validity(pem)
    window = renew_before if renew_before is not None else (end - start) // 3
    return now >= end - window


def _path(root, p):
    return root + p


def staged_path(tls):
    return tls["cert"] + ".new"


def request(tls, device, root=""):
    """The JSON message for twin/<id>/csr: a PEM CSR for the device id, with the key the board keeps."""
    import csr

    with open(_path(root, tls["key"]), "rb") as f:
        key = csr.load_key(f.read())
    return json.dumps({"csr": csr.pem("CERTIFICATE REQUEST", csr.request(key, device))})


def stage(tls, text, root=""):
    """Check a certificate message from the operator and stage it; the staged path, or None when it is the
    certificate already in use. Raises ValueError when it is not for this board's key."""
    import csr

    pem = json.loads(text).get("cert") if text.startswith("{") else text
    if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
        raise ValueError("not a PEM certificate")
    new = from_pem(pem)
    der_file = True
    try:
        with open(_path(root, tls["cert"]), "rb") as f:
            current = f.read()
        der_file = current[:5] != b"-----"
        if to_der(current) == new:
            return None
    except OSError:
        pass
    with open(_path(root, tls["key"]), "rb") as f:
        mine = csr.public_point(csr.load_key(f.read()))
    if public_point(new) != mine:
        raise ValueError("certificate is not for this board's key")
    validity(new)  # parses
    path = staged_path(tls)
    with open(_path(root, path), "wb") as f:
        f.write(new if der_file else pem.encode())  # the same encoding as the certificate it replaces
    return path


def commit(tls, root=""):
    """The staged certificate connected: it becomes the current one (the previous kept as .old)."""
    cur = _path(root, tls["cert"])
    slots.remove_file(cur + ".old")
    os.rename(cur, cur + ".old")
    os.rename(_path(root, staged_path(tls)), cur)


def discard(tls, root=""):
    slots.remove_file(_path(root, staged_path(tls)))
