"""The OTA client's state machine under the real MicroPython interpreter, against a fake OtaFlux (the /v1
HTTP API over a fake socket) and a fake esp32.Partition. Releases are built and signed here at run time
with weatherfleet.oci, exactly as OtaFlux would serve them."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from mpy_harness import make_release, raw_public_key, run_micropython

PRELUDE = """
import sys, os, json, binascii
sys.path.insert(0, '/app')
import slots, ota
from fakes import FakeOtaFlux, FakePartition
D = json.load(open('/data/input.json'))
KEYS = [ota.decode_key(D['key'])]
EVENTS = []
PROGRESS = []
_n = [0]

def fresh_dir():
    _n[0] += 1
    p = '/w%d' % _n[0]
    os.mkdir(p)
    os.chdir(p)

def server(rel):
    return FakeOtaFlux(rel['doc'], {k: binascii.unhexlify(v) for k, v in rel['blobs'].items()}, 'dev-01')

def report(event, version=None, percent=None, reason=None):
    EVENTS.append(event)

def updater(srv, state, current, kind='bundle', partition=None):
    return ota.Updater('dev-01', 'otaflux', 8080, srv, KEYS, state, current, kind=kind, partition=partition,
                       report=report, sleep_ms=lambda ms: None)

def update(srv, state, current, kind='bundle', partition=None):
    u = updater(srv, state, current, kind, partition)
    try:
        plan = u.check()
        if plan is None:
            return u, 'none'
        for pct in u.install(plan):
            PROGRESS.append(pct)
        return u, 'installed'
    except ota.OtaError as e:
        return u, 'error: ' + str(e)

def sha(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        h.update(f.read())
    return binascii.hexlify(h.digest()).decode()

def listing(d):
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []

def blob_requests(srv):
    return [[p.split('?')[0][10:], s] for p, s in srv.requests if p.startswith('/v1/blobs/')]

OUT = {}
def done():
    print('RESULT', json.dumps(OUT))
"""

FILES_V1 = {
    "app.mpy": os.urandom(5000),
    "mqtt.mpy": os.urandom(9000),
    "ota.mpy": os.urandom(8192),
    "payload.mpy": os.urandom(300),
}


@pytest.fixture(scope="module")
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def releases(key: ed25519.Ed25519PrivateKey) -> dict:
    v2 = dict(FILES_V1, **{"payload.mpy": os.urandom(310)})
    other = ed25519.Ed25519PrivateKey.generate()
    return {
        "key": raw_public_key(key),
        "v11": make_release(FILES_V1, "1.1.0", key),
        "v12": make_release(v2, "1.2.0", key),
        "forged": make_release(FILES_V1, "1.1.0", other),
        "unsafe": make_release({"../boot.py": b"print('owned')"}, "6.6.6", key),
        "image": make_release({"firmware.bin": os.urandom(10000)}, "2.0.0", key, kind="image"),
        "sha": {p: hashlib.sha256(b).hexdigest() for p, b in v2.items()},
        "sha_v1": {p: hashlib.sha256(b).hexdigest() for p, b in FILES_V1.items()},
        "sizes": {p: len(b) for p, b in v2.items()},
    }


def test_good_update_boot_confirm_and_one_file_delta(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
st = slots.default_state('1.0.0')
srv = server(D['v11'])
u, r = update(srv, st, '1.0.0')
OUT['result'] = r
OUT['events'] = list(EVENTS)
OUT['pending'] = slots.load()['pending']
OUT['slot_a'] = {n: sha('fw/a/' + n) for n in listing('fw/a') if n != 'files.json'}
OUT['index'] = json.load(open('fw/a/files.json'))
OUT['progress_last'] = PROGRESS[-1]
OUT['progress_monotonic'] = PROGRESS == sorted(PROGRESS)
d, st2 = slots.select_boot_slot()
OUT['boot'] = [d, st2['tries'], st2['boot']]
slots.confirm(st2)
st3 = slots.load()
OUT['after_confirm'] = [st3['active'], st3['version'], st3['pending'], [e['event'] for e in st3['events']]]
# next release changes one file: only that file is downloaded
srv2 = server(D['v12'])
u2, r2 = update(srv2, st3, '1.1.0')
OUT['delta'] = [r2, u2.bytes_downloaded, blob_requests(srv2)]
OUT['slot_b'] = {n: sha('fw/b/' + n) for n in listing('fw/b') if n != 'files.json'}
OUT['pending2'] = slots.load()['pending']
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    assert out["result"] == "installed"
    assert out["events"] == ["checking", "verifying", "installed"]
    assert out["pending"] == {"version": "1.1.0", "slot": "a"}
    assert out["slot_a"] == releases["sha_v1"]
    assert set(out["index"]) == set(FILES_V1)
    assert out["progress_last"] == 100 and out["progress_monotonic"]
    assert out["boot"] == ["fw/a", 1, "ota"]
    assert out["after_confirm"] == ["a", "1.1.0", None, ["confirmed"]]
    result, downloaded, requests = out["delta"]
    assert result == "installed"
    changed = releases["sizes"]["payload.mpy"]
    assert downloaded == changed  # 310 of ~22.8 kB
    assert [r[0] for r in requests] == ["sha256:" + releases["sha"]["payload.mpy"]]
    assert out["slot_b"] == releases["sha"]
    assert out["pending2"] == {"version": "1.2.0", "slot": "b"}


def test_corrupted_byte_is_caught_by_crc_then_by_sha256(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
st = slots.default_state('1.0.0')
rel = D['v11']
srv = server(rel)
target = rel['doc']['files'][1]['digest']
srv.corrupt[target] = 4321
u, r = update(srv, st, '1.0.0')
OUT['with_crc'] = r
OUT['pending'] = slots.load()['pending']
OUT['leftovers'] = [n for n in listing('fw/a') if n.endswith('.part')]
# without the (unsigned) CRC hints the signed sha256 still catches it
for f in rel['doc']['files']:
    f.pop('crc32')
srv = server(rel)
srv.corrupt[target] = 0
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
OUT['without_crc'] = r
d, st2 = slots.select_boot_slot()
OUT['boot_dir'] = d
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    assert out["with_crc"].startswith("error: crc32 mismatch")
    assert out["without_crc"].startswith("error: sha256 mismatch")
    assert out["pending"] is None and out["leftovers"] == []
    assert out["boot_dir"] == "."


def test_wrong_signature_and_tampered_manifest_fetch_nothing(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
srv = server(D['forged'])
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
OUT['forged'] = [r, blob_requests(srv)]
rel = D['v11']
rel['doc']['manifest'] = rel['doc']['manifest'].replace('"size":300', '"size":301')
srv = server(rel)
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
OUT['tampered'] = [r, blob_requests(srv)]
rel = json.load(open('/data/input.json'))['v11']
rel['doc']['signature'] = None
srv = server(rel)
OUT['unsigned'] = update(srv, slots.default_state('1.0.0'), '1.0.0')[1]
relabelled = json.load(open('/data/input.json'))['v11']
relabelled['doc']['version'] = '9.9.9'   # a validly signed 1.1.0 announced as something else
srv = server(relabelled)
OUT['relabelled'] = [update(srv, slots.default_state('1.0.0'), '1.0.0')[1], blob_requests(srv)]
srv = server(D['unsafe'])
OUT['unsafe'] = [update(srv, slots.default_state('1.0.0'), '1.0.0')[1], listing('/')]
OUT['pending'] = slots.load()['pending']
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    assert out["forged"][0].startswith("error: signature does not verify") and out["forged"][1] == []
    assert out["tampered"][0] == "error: manifest digest mismatch" and out["tampered"][1] == []
    assert out["unsigned"] == "error: release is not signed"
    assert out["relabelled"] == ["error: signed version 1.1.0 differs from announced 9.9.9", []]
    assert out["unsafe"][0].startswith("error: unsafe file name") and "boot.py" not in out["unsafe"][1]
    assert out["pending"] is None


def test_server_closing_mid_download_resumes_with_range(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
srv = server(D['v11'])
srv.close_after = 6000
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
OUT['resumed'] = [r, blob_requests(srv), u.bytes_downloaded]
OUT['slot_a'] = {n: sha('fw/a/' + n) for n in listing('fw/a') if n != 'files.json'}
fresh_dir()
srv = server(D['v11'])
srv.close_after = 6000
srv.ignore_range = True
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
OUT['no_range'] = [r, blob_requests(srv)]
OUT['slot_a2'] = {n: sha('fw/a/' + n) for n in listing('fw/a') if n != 'files.json'}
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    result, requests, downloaded = out["resumed"]
    assert result == "installed"
    cut = [r for r in requests if r[1]]
    assert len(cut) == 1 and cut[0][1] == 6000  # one resumed request, from byte 6000
    assert requests[requests.index(cut[0]) - 1] == [cut[0][0], 0]  # right after the interrupted one
    assert downloaded == sum(len(b) for b in FILES_V1.values())  # nothing fetched twice
    assert out["slot_a"] == releases["sha_v1"]
    # a server that ignores Range answers 200: the client starts that blob over and still ends up right
    assert out["no_range"][0] == "installed" and [r[1] for r in out["no_range"][1] if r[1]] == [6000]
    assert out["slot_a2"] == releases["sha_v1"]


def test_unconfirmed_release_falls_back_and_is_never_fetched_again(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
srv = server(D['v11'])
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0')
boots = []
for i in range(slots.MAX_TRIES + 1):
    d, st = slots.select_boot_slot()   # the new release raises on boot: nobody confirms
    boots.append([d, st['boot']])
st = slots.load()
OUT['boots'] = boots
OUT['state'] = [st['active'], st['pending'], st['bad'], st['events']]
d, st = slots.select_boot_slot()
OUT['next_boot'] = [d, st['boot']]
srv = server(D['v11'])
u, r = update(srv, st, '1.0.0')
OUT['again'] = [r, blob_requests(srv)]
# the notification path asks the same question
OUT['install_refused'] = 'no'
try:
    plan = ota.Plan('1.1.0', 'bundle', 'x', [])
    for _ in updater(srv, st, '1.0.0').install(plan): pass
except ota.OtaError as e:
    OUT['install_refused'] = str(e)
# a pending slot whose files vanished (flash trouble) is not booted at all
st = slots.load()
st['pending'] = {'version': '1.2.0', 'slot': 'b'}
slots.save(st)
d, st = slots.select_boot_slot()
OUT['incomplete'] = [d, st['boot'], st['events'][-1]['reason'], st['bad']]
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    assert out["boots"] == [["fw/a", "ota"], ["fw/a", "ota"], [".", "rollback"]]
    active, pending, bad, events = out["state"]
    assert active == "" and pending is None and bad == ["1.1.0"]
    assert events[-1]["event"] == "rolled_back" and events[-1]["version"] == "1.1.0"
    assert out["next_boot"] == [".", "normal"]
    assert out["again"] == ["none", []]
    assert out["incomplete"] == [".", "rollback", "slot b incomplete", ["1.1.0", "1.2.0"]]
    assert "rolled back" in out["install_refused"]


def test_interrupted_at_any_chunk_always_boots_a_good_slot(releases: dict) -> None:
    """Power lost after any chunk of the download (or between the last chunk and the switch): the next boot
    runs the old, complete release; a retry then installs cleanly. (Byte-level power cuts inside flash
    writes are exercised by the CPython emulation's flash model.)"""
    script = (
        PRELUDE
        + """
import random
random.seed(D['seed'])
class PowerCut(BaseException):
    pass
fresh_dir()
u0, r0 = update(server(D['v11']), slots.default_state('1.0.0'), '1.0.0')
chunks = len(PROGRESS)
fresh_dir()
results = []
for i in range(60):
    st = slots.load()
    u = updater(server(D['v11']), st, '1.0.0')
    plan = u.check()
    cut = random.getrandbits(16) % (chunks + 1)   # == chunks: cut after the last chunk, before the switch
    n = 0
    try:
        for pct in u.install(plan):
            if n == cut:
                raise PowerCut()
            n += 1
        outcome = 'completed'
    except PowerCut:
        outcome = 'cut'
    d, st = slots.select_boot_slot()   # reboot
    results.append([outcome, d, (st['pending'] or {}).get('version')])
    if outcome == 'completed':
        slots.confirm(st)              # the new release came up fine
        ok = sha(d + '/app.mpy') == D['sha_v1']['app.mpy']
        st = slots.default_state('1.0.0')
        slots.save(st)                 # and back to the start for the next round
        slots.clear_dir('slots')
        results[-1].append(ok)
u, r = update(server(D['v11']), slots.load(), '1.0.0')
OUT['retry'] = r
OUT['results'] = results
OUT['chunks'] = chunks
done()
"""
    )
    data = dict(releases, seed=int.from_bytes(os.urandom(2), "big"))
    out = run_micropython(script, data).check().json()
    results = out["results"]
    assert out["chunks"] >= 6
    assert len(results) == 60
    cut = [r for r in results if r[0] == "cut"]
    assert len(cut) > 40
    # a cut anywhere before the switch boots the old root release, with nothing pending
    assert all(r[1] == "." and r[2] is None for r in cut)
    assert all(r[1] == "fw/a" and r[2] == "1.1.0" and r[3] for r in results if r[0] == "completed")
    assert out["retry"] == "installed"


def test_image_update_through_partition_and_bootloader_rollback(releases: dict) -> None:
    script = (
        PRELUDE
        + """
fresh_dir()
rel = D['image']
part = FakePartition('ota_1', blocks=8)
srv = server(rel)
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0', kind='image', partition=part)
st = slots.load()
img = binascii.unhexlify(list(rel['blobs'].values())[0])
OUT['image'] = [r, part.writes, part.booted, bytes(part.data[:len(img)]) == img,
                bytes(part.data[len(img):3 * 4096]) == b'\\xff' * (3 * 4096 - len(img)), st['pending']]
OUT['same_label'] = slots.image_rolled_back(st, 'ota_1')
OUT['other_label'] = slots.image_rolled_back(st, 'ota_0')
st = slots.load()
OUT['after'] = [st['pending'], st['bad'], st['boot'], st['events'][-1]['event']]
# corrupted image: never set as boot partition
part2 = FakePartition('ota_1', blocks=8)
srv = server(rel)
srv.corrupt[list(rel['blobs'])[0]] = 9999
u, r = update(srv, slots.default_state('1.0.0'), '1.0.0', kind='image', partition=part2)
OUT['corrupt'] = [r, part2.booted]
small = FakePartition('ota_1', blocks=2)
OUT['too_big'] = update(server(rel), slots.default_state('1.0.0'), '1.0.0', kind='image', partition=small)[1]
OUT['kind_mismatch'] = update(server(rel), slots.default_state('1.0.0'), '1.0.0', kind='bundle')[1]
done()
"""
    )
    out = run_micropython(script, releases).check().json()
    result, writes, booted, same, padded, pending = out["image"]
    assert result == "installed" and writes == 3 and booted and same and padded
    assert pending == {"version": "2.0.0", "image": "ota_1"}
    assert out["same_label"] is False
    assert out["other_label"] is True
    assert out["after"] == [None, ["2.0.0"], "rollback", "rolled_back"]
    assert out["corrupt"][0].startswith("error: crc32 mismatch") and out["corrupt"][1] is False
    assert out["too_big"].startswith("error: image of 10000 bytes does not fit")
    assert out["kind_mismatch"].startswith("error: release is a image")
