"""Anti-rollback on the board, the ESP-IDF way, under the real MicroPython interpreter: a release below the
highest security version the board confirmed is refused; a release below the running version is
installed only with the operator's signed downgrade authorisation (never because OtaFlux or a tag offers
it); a re-tagged release is refused; confirming a release raises the board's floor."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from mpy_harness import make_release, raw_public_key, run_micropython

from weatherfleet.oci import contract
from weatherfleet.rollout import authorisation

PRELUDE = """
import sys, os, json, binascii
sys.path.insert(0, '/app')
import slots, ota
from fakes import FakeOtaFlux
D = json.load(open('/data/input.json'))
KEYS = [ota.decode_key(D['key'])]
ROLLOUT = [ota.decode_key(D['rollout'])]
_n = [0]

def attempt(rel, current, sv=0, rollout=ROLLOUT):
    _n[0] += 1
    p = '/w%d' % _n[0]
    os.mkdir(p)
    os.chdir(p)
    st = slots.default_state(current)
    st['sv'] = sv
    srv = FakeOtaFlux(rel['doc'], {k: binascii.unhexlify(v) for k, v in rel['blobs'].items()}, 'dev-01')
    u = ota.Updater('dev-01', 'otaflux', 8080, srv, KEYS, st, current, report=lambda *a, **k: None,
                    sleep_ms=lambda ms: None, rollout_keys=rollout)
    blobs = lambda: len([1 for path, _ in srv.requests if path.startswith('/v1/blobs/')])
    try:
        plan = u.check()
        if plan is None:
            return ['none', blobs()]
        for _ in u.install(plan):
            pass
        slots.confirm(st)
        return ['installed %s sv=%d' % (st['version'], st['sv']), blobs()]
    except ota.OtaError as e:
        return ['error: ' + str(e), blobs()]

OUT = {}
"""

FILES = {"app.mpy": os.urandom(3000), "ota.mpy": os.urandom(2000)}


def release(files: dict, version: str, key, security: int | None = None, tag: str | None = None) -> dict:
    """A signed release with its security version in the signed manifest, optionally announced under
    another version than the signed one (a re-tag)."""
    extra = {contract.ANNOTATION_SECURITY_VERSION: str(security)} if security is not None else None
    rel = make_release(files, version, key, annotations=extra)
    if tag:
        rel["doc"]["version"] = tag  # what the answer announces; the signed manifest still says `version`
    return rel


def with_authorisation(rel: dict, auth: authorisation.Authorisation) -> dict:
    return {"doc": {**rel["doc"], "authorisation": auth.model_dump(by_alias=True)}, "blobs": rel["blobs"]}


@pytest.fixture(scope="module")
def keys():
    return ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()


def test_downgrades_only_with_the_operators_signed_authorisation(keys):
    signer, operator = keys
    stranger = ed25519.Ed25519PrivateKey.generate()
    old = release(FILES, "1.0.0", signer, security=1)
    rid = "weatherfleet/garden/firmware-1-1-0@1.1.0"
    cases = {
        "plain": old,
        "authorised": with_authorisation(old, authorisation.sign(operator, rid, ["1.1.0"], "1.0.0")),
        "stranger": with_authorisation(old, authorisation.sign(stranger, rid, ["1.1.0"], "1.0.0")),
        "release-key": with_authorisation(old, authorisation.sign(signer, rid, ["1.1.0"], "1.0.0")),
        "other-from": with_authorisation(old, authorisation.sign(operator, rid, ["1.2.0"], "1.0.0")),
        "other-to": with_authorisation(old, authorisation.sign(operator, rid, ["1.1.0"], "0.9.0")),
        "retag": release(FILES, "1.0.0", signer, security=1, tag="9.9.9"),
        "newer": release(FILES, "1.2.0", signer, security=1),
    }
    data = {"key": raw_public_key(signer), "rollout": raw_public_key(operator), **cases}
    script = PRELUDE + "\n".join(f"OUT[{name!r}] = attempt(D[{name!r}], '1.1.0', 1)" for name in cases)
    out = run_micropython(script + "\nprint('RESULT', json.dumps(OUT))", data).check().json()
    refused = ["error: downgrade from 1.1.0 to 1.0.0 not authorised", 0]  # nothing downloaded
    assert out["plain"] == refused  # OtaFlux offering it is not enough
    assert out["authorised"] == ["installed 1.0.0 sv=1", 2]  # a halted candidate going back to stable
    assert out["stranger"] == out["release-key"] == out["other-from"] == out["other-to"] == refused
    assert out["retag"] == ["error: signed version 1.0.0 differs from announced 9.9.9", 0]
    assert out["newer"] == ["installed 1.2.0 sv=1", 2]


def test_nothing_below_the_security_version_the_board_confirmed(keys):
    signer, operator = keys
    rid = "weatherfleet/garden/firmware-1-3-0@1.3.0"
    fixed = release(FILES, "1.3.0", signer, security=3)
    vulnerable = release(FILES, "1.2.5", signer, security=2)
    vulnerable_newer = release(FILES, "1.4.0", signer, security=2)
    unmarked = release(FILES, "1.5.0", signer)  # a release from before the counter: security version 0
    data = {
        "key": raw_public_key(signer),
        "rollout": raw_public_key(operator),
        "fixed": fixed,
        "authorised": with_authorisation(vulnerable, authorisation.sign(operator, rid, ["1.3.0"], "1.2.5")),
        "newer": vulnerable_newer,
        "unmarked": unmarked,
    }
    script = (
        PRELUDE
        + """
OUT['fixed'] = attempt(D['fixed'], '1.2.0', 2)
OUT['authorised'] = attempt(D['authorised'], '1.3.0', 3)
OUT['newer'] = attempt(D['newer'], '1.3.0', 3)
OUT['unmarked'] = attempt(D['unmarked'], '1.3.0', 3)
st = slots.default_state('1.2.0')
st['pending'] = {'version': '1.3.0', 'slot': 'a', 'sv': 3}
slots.confirm(st)
OUT['floor'] = st['sv']
print('RESULT', json.dumps(OUT))
"""
    )
    out = run_micropython(script, data).check().json()
    assert out["fixed"] == ["installed 1.3.0 sv=3", 2]  # confirming raises the floor
    below = "error: %s has security version %d, below the 3 confirmed on this device"
    assert out["authorised"] == [below % ("1.2.5", 2), 0]  # an authorisation never goes below the floor
    assert out["newer"] == [below % ("1.4.0", 2), 0]  # nor does a higher version number
    assert out["unmarked"] == [below % ("1.5.0", 0), 0]
    assert out["floor"] == 3
