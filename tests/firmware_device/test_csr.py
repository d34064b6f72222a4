"""ECDSA P-256 and the PKCS#10 CSR the board sends for its renewal, under the real MicroPython interpreter:
the CSR verifies with `cryptography`, names exactly the device, carries the key the board keeps, and a key
written by provisioning (PKCS#8 from the local CA, as cert-manager writes) loads. The cost is measured
against the Ed25519 verification the firmware already does, in the same interpreter, and printed."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from mpy_harness import run_micropython

SCRIPT = """
import json, time, binascii, csr, edverify
d = json.load(open('/data/input.json'))
out = {}
key = csr.load_key(d['pkcs8'])  # the WebAssembly port has no os.urandom (the ESP32 has a hardware RNG)
t0 = time.ticks_ms()
pub = csr.public_point(key)
t1 = time.ticks_ms()
req = csr.request(key, d['device'], pub)
t2 = time.ticks_ms()
u = binascii.unhexlify
edverify.verify(u(d['ed'][0]), u(d['ed'][1]), u(d['ed'][2]))
t3 = time.ticks_ms()
out['csr'] = binascii.hexlify(req).decode()
out['pem'] = csr.pem_key(key)
out['provisioned'] = str(key)
again = csr.request(key, d['device'], pub)
out['deterministic'] = again == req
out['ms'] = [time.ticks_diff(t1, t0), time.ticks_diff(t2, t1), time.ticks_diff(t3, t2)]
print('RESULT', json.dumps(out))
"""


def test_csr_from_micropython_verifies_and_names_the_device(local_ca, capsys) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    message = b"sha256:" + b"ab" * 32
    ed = [
        ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
        message.hex(),
        ed_key.sign(message).hex(),
    ]
    issued = local_ca.issue("dev-11")
    pkcs8 = Path(issued.key).read_text()
    out = run_micropython(SCRIPT, {"device": "dev-11", "ed": ed, "pkcs8": pkcs8}).check().json()
    request = x509.load_der_x509_csr(bytes.fromhex(out["csr"]))
    assert request.is_signature_valid
    assert [a.value for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["dev-11"]
    assert isinstance(request.public_key(), ec.EllipticCurvePublicKey)
    assert request.public_key().curve.name == "secp256r1"
    kept = serialization.load_pem_private_key(out["pem"].encode(), None)
    assert kept.public_key().public_numbers() == request.public_key().public_numbers()
    provisioned = serialization.load_pem_private_key(pkcs8.encode(), None)
    assert int(out["provisioned"]) == provisioned.private_numbers().private_value
    # the key provisioning wrote is the key in the request: it never had to leave the board
    assert provisioned.public_key().public_numbers() == request.public_key().public_numbers()
    assert out["deterministic"] is True  # RFC 6979 nonces: the same request signs the same way
    keygen_ms, csr_ms, ed_ms = out["ms"]
    with capsys.disabled():
        print(
            f"\nMicroPython (WebAssembly): P-256 public point {keygen_ms} ms, CSR (one ECDSA "
            f"signature) {csr_ms} ms, Ed25519 verify {ed_ms} ms"
        )
