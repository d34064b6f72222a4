# DER and PEM, the little the board reads of them: one TLV at a time, and a certificate or key that may be
# stored as PEM or as DER (an ESP32's mbedTLS parses both; some builds parse DER only, and provisioning
# then writes DER). creds.py reads certificates with it, csr.py the private key.


def read(der, pos):
    """(tag, body start, body end) of the TLV at pos."""
    tag = der[pos]
    n = der[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[pos : pos + k], "big")
        pos += k
    return tag, pos, pos + n


def from_pem(text):
    """The DER bytes of PEM text: the base64 between its BEGIN and END lines."""
    import binascii

    lines = [ln for ln in text.strip().split("\n") if ln and not ln.startswith("-----")]
    return binascii.a2b_base64("".join(lines).encode())


def to_der(data):
    """DER of a certificate or key given as PEM (str or bytes) or already as DER (bytes)."""
    if isinstance(data, str):
        return from_pem(data)
    if bytes(data[:5]) == b"-----":
        return from_pem(bytes(data).decode())
    return bytes(data)
