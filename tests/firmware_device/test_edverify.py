"""Pure-Python Ed25519 verification under the real MicroPython interpreter: RFC 8032 test vectors, and a
manifest digest signed at run time by weatherfleet.oci.signatures (the same code `firmware sign` uses)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric import ed25519
from mpy_harness import raw_public_key, run_micropython

from weatherfleet.oci import signatures

# RFC 8032 section 7.1, TEST 1-3 (public key, message, signature)
RFC8032 = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]

SCRIPT = """
import json, binascii, edverify
d = json.load(open('/data/input.json'))
u = binascii.unhexlify
res = []
for pk, msg, sig in d['cases']:
    res.append(edverify.verify(u(pk), u(msg), u(sig)))
sha = [binascii.hexlify(edverify.sha512(u(m))).decode() for m in d['sha']]
print('RESULT', json.dumps({'verify': res, 'sha512': sha}))
"""


def _flip(hexstr: str, byte: int) -> str:
    b = bytearray.fromhex(hexstr)
    b[byte] ^= 0x01
    return b.hex()


def test_rfc8032_vectors_and_a_runtime_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    doc = signatures.sign(key, digest)
    pk = base64.b64decode(raw_public_key(key)).hex()
    sig = base64.b64decode(doc.signature).hex()
    msg = base64.b64decode(doc.payload).hex()  # cosign's simple-signing payload is what is signed
    other = base64.b64decode(raw_public_key(ed25519.Ed25519PrivateKey.generate())).hex()
    # S >= L (non-canonical) must be rejected: add the group order L to S of vector 1
    big_l = 2**252 + 27742317777372353535851937790883648493
    s1 = int.from_bytes(bytes.fromhex(RFC8032[0][2])[32:], "little") + big_l
    noncanonical = RFC8032[0][2][:64] + s1.to_bytes(32, "little").hex()
    cases = (
        [list(v) for v in RFC8032]
        + [
            [pk, msg, sig],  # good
            [pk, _flip(msg, 10), sig],  # other message
            [pk, msg, _flip(sig, 40)],  # tampered S
            [pk, msg, _flip(sig, 3)],  # tampered R
            [other, msg, sig],  # another key
            [RFC8032[0][0], "", noncanonical],
            [pk[:-2], msg, sig],  # truncated key
        ]
    )
    sha_inputs = ["", "61", "00" * 111, "00" * 112, "00" * 127, "cd" * 128, "ab" * 300]
    out = run_micropython(SCRIPT, {"cases": cases, "sha": sha_inputs}).check().json()
    assert out["verify"] == [True, True, True, True, False, False, False, False, False, False]
    assert out["sha512"] == [hashlib.sha512(bytes.fromhex(m)).hexdigest() for m in sha_inputs]
