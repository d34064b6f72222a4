"""Certificates that renew themselves, the board's side, under the real MicroPython interpreter: it asks
for a renewal (a CSR with the key it keeps) only within renewBefore of the expiry; a certificate from the
operator is staged and used for the next connection only, replacing the current one once that
connection succeeded; one the broker refuses is dropped and the current one used at once; one for
another key is refused; the status says why."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mpy_harness import run_micropython
from test_app import GOOD

from weatherfleet.pki import LocalCA

SCRIPT = """
import json, os, sys
sys.path.insert(0, '/app')
import app, slots, config, net, creds
from fakes import drive, FakeI2C, FakeUART
d = json.load(open('/data/input.json'))
os.mkdir('/dev1'); os.chdir('/dev1'); os.mkdir('certs')
for name, text in d['files'].items():
    with open(name, 'w') as f:
        f.write(text)
net.ssl_context = lambda tls, root='': 'ctx:' + tls['cert']   # no TLS stack in this port: name the cert

class Client:
    def __init__(self):
        self.connected = False
        self.ssl = None
        self.fail = False
        self.used = []
    async def connect(self):
        self.used.append(self.ssl)
        if self.fail:
            raise OSError('handshake refused')
        self.connected = True
    async def publish(self, topic, data, n=-1, qos=0, retain=False):
        return 1
    def is_acked(self, pid):
        return True
    def close(self):
        self.connected = False

cfg = config.validate(d['config'])
a = app.App(cfg, slots.default_state('1.0.0'), make_i2c=lambda w: FakeI2C(), make_uart=lambda w: FakeUART(lambda c: b''))
a.client = Client()
a.client.ssl = a.ssl
out = {'ssl': a.ssl}
out['due_early'] = a.renewal_due(d['early'])
out['due_late'] = a.renewal_due(d['late'])
out['csr'] = json.loads(creds.request(cfg['tls'], 'dev-01'))['csr']
out['wrong_key'] = [a.on_cert(json.dumps({'cert': d['other']})), a.cert_state]
out['same'] = a.on_cert(json.dumps({'cert': d['files']['certs/device.pem']}))
out['staged'] = [a.on_cert(json.dumps({'cert': d['renewed']})), a.cert_staged, a.client.connected]
drive(a.connect())
out['switched'] = [a.client.used[-1], a.client.connected, a.cert_staged, a.cert_state, a.ssl,
                   open('certs/device.pem').read() == d['renewed'], open('certs/device.pem.old').read() == d['files']['certs/device.pem']]
out['again'] = a.on_cert(json.dumps({'cert': d['renewed']}))  # the retained message after the reconnect
# a renewed certificate the broker refuses: dropped, the current one used at once
a.client.connected = False
a.on_cert(json.dumps({'cert': d['renewed2']}))
a.client.fail = True
try:
    drive(a.connect())
except OSError:
    pass
a.client.fail = False
drive(a.connect())
out['refused'] = [a.client.used[-2:], a.cert_staged, a.cert_state['error'], open('certs/device.pem').read() == d['renewed'],
                  'device.pem.new' in os.listdir('certs')]
out['status_cert'] = json.loads(a.status_json()).get('cert')
print('RESULT', json.dumps(out))
"""


def _csr_for(key, cn: str) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def test_renewed_certificate_is_staged_switched_after_a_connection_and_dropped_if_refused(
    tmp_path: Path,
) -> None:
    ca = LocalCA(tmp_path / "pki")
    now = dt.datetime.now(dt.UTC)
    issued = ca.issue("dev-01", duration=dt.timedelta(hours=3), renew_before=dt.timedelta(hours=1), now=now)
    key_pem = issued.key.read_bytes()
    key = serialization.load_pem_private_key(key_pem, None)
    renewed = ca.sign_csr(_csr_for(key, "dev-01"), "dev-01", duration=dt.timedelta(hours=3)).decode()
    renewed2 = ca.sign_csr(_csr_for(key, "dev-01"), "dev-01", duration=dt.timedelta(hours=4)).decode()
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = ca.sign_csr(_csr_for(other_key, "dev-01"), "dev-01").decode()
    config = dict(
        GOOD,
        broker={"host": "b", "tls": True},
        features=["bme280", "tls", "mtls", "influx"],
        tls={"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device.key"},
        certificates={"renewBeforeSeconds": 3600},
    )
    config.pop("ota")
    files = {
        "certs/ca.pem": ca.cert_path.read_text(),
        "certs/device.pem": issued.cert.read_text(),
        "certs/device.key": key_pem.decode(),
    }
    start = int(now.timestamp())
    data = {
        "config": config,
        "files": files,
        "renewed": renewed,
        "renewed2": renewed2,
        "other": other,
        "early": start + 3600,  # two hours left: not yet
        "late": start + 2 * 3600 + 60,  # less than renewBefore (1 h) left
    }
    out = run_micropython(SCRIPT, data).check().json()
    assert out["ssl"] == "ctx:certs/device.pem"
    assert out["due_early"] is False and out["due_late"] is True
    request = x509.load_pem_x509_csr(out["csr"].encode())
    assert request.is_signature_valid
    assert request.public_key().public_numbers() == key.public_key().public_numbers()
    assert ca.sign_csr(out["csr"].encode(), "dev-01")  # what the operator has signed for it
    assert out["wrong_key"][0] is False and "not for this board's key" in out["wrong_key"][1]["error"]
    assert out["same"] is False
    assert out["staged"] == [True, "certs/device.pem.new", False]
    used, connected, staged, state, ssl, current_is_new, old_kept = out["switched"]
    assert used == "ctx:certs/device.pem.new" and connected and staged is None and state is None
    assert ssl == "ctx:certs/device.pem.new" and current_is_new and old_kept
    assert out["again"] is False
    tried, staged, error, still_current, leftover = out["refused"]
    assert len(tried) == 2  # the staged certificate, then at once the current one
    assert staged is None and "handshake refused" in error and still_current and not leftover
    assert out["status_cert"] == {"error": error}
    assert json.loads(json.dumps(out["status_cert"]))
