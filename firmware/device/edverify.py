# Ed25519 signature verification (RFC 8032) in pure Python that runs under MicroPython.
#
# Only VERIFY is here: devices never sign. MicroPython's hashlib has no SHA-512 on the ESP32, so a small
# SHA-512 is included. Big integers (MicroPython's mpz longs) do the field arithmetic; the cost is a few
# hundred milliseconds per verification on an ESP32, once per update. Import this module only when a
# signature is to be checked, so its tables are not resident the rest of the time.

_M64 = 0xFFFFFFFFFFFFFFFF

_K = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)

_H0 = (
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
)


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


# The message schedule and the block being filled, allocated once with the module: hashing grows no list
# and concatenates no message (each would be a contiguous block the collector must find on a fragmented
# heap, mid-check)
_W = [0] * 80
_BLOCK = bytearray(128)


def _compress(h, block):
    w = _W
    for t in range(16):
        w[t] = int.from_bytes(block[t * 8 : t * 8 + 8], "big")
    for t in range(16, 80):
        x = w[t - 15]
        y = w[t - 2]
        s0 = _rotr(x, 1) ^ _rotr(x, 8) ^ (x >> 7)
        s1 = _rotr(y, 19) ^ _rotr(y, 61) ^ (y >> 6)
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & _M64
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ ((e ^ _M64) & g)) + _K[t] + w[t]) & _M64
        t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
        hh = g
        g = f
        f = e
        e = (d + t1) & _M64
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M64
    h[0] = (h[0] + a) & _M64
    h[1] = (h[1] + b) & _M64
    h[2] = (h[2] + c) & _M64
    h[3] = (h[3] + d) & _M64
    h[4] = (h[4] + e) & _M64
    h[5] = (h[5] + f) & _M64
    h[6] = (h[6] + g) & _M64
    h[7] = (h[7] + hh) & _M64


def sha512(*parts):
    """SHA-512 of the concatenation of parts (bytes-like), without concatenating them."""
    h = list(_H0)
    block = _BLOCK
    n = 0
    total = 0
    for part in parts:
        total += len(part)
        for x in part:
            block[n] = x
            n += 1
            if n == 128:
                _compress(h, block)
                n = 0
    block[n] = 0x80
    n += 1
    if n > 112:
        while n < 128:
            block[n] = 0
            n += 1
        _compress(h, block)
        n = 0
    while n < 120:
        block[n] = 0
        n += 1
    block[120:128] = (total * 8).to_bytes(8, "big")  # the high 8 of the 16 length bytes stay 0
    _compress(h, block)
    out = bytearray(64)
    for i in range(8):
        out[i * 8 : i * 8 + 8] = h[i].to_bytes(8, "big")
    return bytes(out)


_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# Constants as literals, not computed at import (three modular exponentiations' temporaries): d =
# -121665/121666, sqrt(-1) = 2**((p-1)/4), and the base point B (x, y = 4/5, x*y) in extended coordinates
_D = 0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3
_SQRT_M1 = 0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0
_BASE = (
    0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A,
    0x6666666666666666666666666666666666666666666666666666666666666658,
    1,
    0x67875F0FD78B766566EA4E8E64ABE37D20F09F80775152F56DDE8AB3A5B7DDA3,
)


def _add(p1, p2):
    # extended coordinates (X, Y, Z, T), a = -1 (RFC 8032 5.1.4)
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _recover_x(y, sign):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decode_point(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def _same(p1, p2):
    # projective equality: X1/Z1 == X2/Z2 and Y1/Z1 == Y2/Z2
    return (p1[0] * p2[2] - p2[0] * p1[2]) % _P == 0 and (p1[1] * p2[2] - p2[1] * p1[2]) % _P == 0


def verify(public_key, message, signature):
    """True when signature (64 bytes) is a valid Ed25519 signature of message by public_key (32 bytes)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public_key)
    r = _decode_point(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(sha512(signature[:32], public_key, message), "little") % _L
    # [s]B - [k]A computed with one shared doubling chain (Straus), compared with R
    b = _BASE
    neg_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    both = _add(b, neg_a)
    q = (0, 1, 1, 0)
    i = 252  # s, k < L < 2**253 (MicroPython ints have no bit_length)
    while i >= 0:
        q = _double(q)
        bs = (s >> i) & 1
        bk = (k >> i) & 1
        if bs and bk:
            q = _add(q, both)
        elif bs:
            q = _add(q, b)
        elif bk:
            q = _add(q, neg_a)
        i -= 1
    return _same(q, r)
