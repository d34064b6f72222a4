# OTA client: ask OtaFlux for this device's signed manifest, verify it, stream what changed into the
# inactive slot through ONE preallocated buffer, verify again, then switch.
#
#   check()        -> Plan or None   GET /v1/manifest; sha256(manifest) == manifestDigest; a cosign signature:
#                                    its payload names that digest, Ed25519 over the payload with a
#                                    provisioned key; versions rolled back are skipped
#                                    anti-rollback: never below the security version confirmed here, and
#                                    below the running version only with a signed downgrade authorisation
#   install(plan)  generator         yields progress (0..100) once per chunk; bundles: only files whose
#                                    digest differs from the running slot are fetched; images: written to
#                                    esp32.Partition.get_next_update() block by block
#
# Per chunk the loop is readinto -> sha256.update -> crc32 update -> write, with no allocation. A dropped
# connection resumes with an HTTP Range request from the byte it stopped at (retries with backoff).
from micropython import const
import binascii
import hashlib
import os
import time

import crc32
import httpc
import slots

BUF_SIZE = const(4096)  # one flash sector: an image chunk is one writeblocks() call
MANIFEST_LIMIT = const(32768)
SIG_PAYLOAD_LIMIT = const(1024)  # base64 of cosign's simple-signing payload (~300 bytes; one head buffer)
SIMPLE_SIGNING = "cosign container image signature"
IMAGE_ARTIFACT = "application/vnd.weatherfleet.firmware.image.v1"
BUNDLE_ARTIFACT = "application/vnd.weatherfleet.firmware.bundle.v1"
IMAGE_LAYER = "application/vnd.weatherfleet.firmware.image.layer.v1+octet-stream"
FILE_LAYER = "application/vnd.weatherfleet.firmware.file.v1+octet-stream"
TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
SECURITY = "io.weatherfleet.firmware.security-version"
DOWNGRADE = "weatherfleet downgrade "


class OtaError(Exception):
    pass


class Plan:
    def __init__(self, version, kind, digest, files, security=0):
        self.version = version
        self.security = security  # the signed anti-rollback counter, kept in the state once confirmed
        self.kind = kind  # "bundle" | "image"
        self.digest = digest  # manifest digest
        # Files: (path, layer digest "sha256:..", size, crc32 or None) per file; the CRC comes from the
        # unsigned envelope: an early, cheap check, the signed sha256 decides
        self.files = files


class Files:
    """A release's files, packed as the check reads them: the names length-prefixed in one bytearray, the
    sha256 digests side by side in another (as strings, a name and a "sha256:<hex>" took 200 bytes of a
    64-bit heap per file, and the check held them while it verified the signature), a size and a CRC hint
    per file. Indexing gives the tuple install() walks, built on demand; a layer without a title is an
    image's firmware.bin."""

    def __init__(self):
        self.names = bytearray()
        self.sha = bytearray()
        self.sizes = []
        self.crcs = []

    def add(self, name, raw, size):
        b = name.encode() if name else b""
        if len(b) > 255:
            raise ValueError("file name too long")
        self.names.append(len(b))
        self.names.extend(b)
        self.sha.extend(raw)
        self.sizes.append(size)
        self.crcs.append(None)

    def name(self, i):
        names = self.names
        pos = 0
        for _ in range(i):
            pos += 1 + names[pos]
        return str(memoryview(names)[pos + 1 : pos + 1 + names[pos]], "utf-8")

    def index(self, raw):
        """The position of the file whose digest is these 32 bytes, or -1."""
        sha = self.sha
        for i in range(len(self.sizes)):
            j = i * 32
            k = 0
            while k < 32 and sha[j + k] == raw[k]:
                k += 1
            if k == 32:
                return i
        return -1

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        digest = "sha256:" + binascii.hexlify(memoryview(self.sha)[i * 32 : i * 32 + 32]).decode()
        return self.name(i) or "firmware.bin", digest, self.sizes[i], self.crcs[i]

    def __iter__(self):
        for i in range(len(self.sizes)):
            yield self[i]


def _counter(text):
    # a security version as signed: decimal digits, else 0 (the releases before the counter existed)
    return int(text) if isinstance(text, str) and text.isdigit() else 0


def _semver(v):
    core, _, pre = v.split("+")[0].partition("-")
    parts = core.split(".")
    if len(parts) != 3 or not all(x.isdigit() for x in parts):
        return None
    # a release ranks above its pre-releases; numeric identifiers below alphanumeric ones
    ids = [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in pre.split(".")] if pre else [(2, 0, "")]
    return [int(x) for x in parts], ids


def older(a, b):
    """a < b by semantic version precedence (False when either is not a semantic version)."""
    ka, kb = _semver(a or ""), _semver(b or "")
    if ka is None or kb is None:
        return False
    return (ka[0], ka[1]) < (kb[0], kb[1])


def decode_key(text):
    """A raw 32-byte Ed25519 public key from hex (64 chars) or base64."""
    text = text.strip()  # binascii gets bytes: some ports' binascii reject str
    if len(text) == 64:
        return binascii.unhexlify(text.encode())
    raw = binascii.a2b_base64(text.encode())
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def safe_path(path):
    # bundle files land in a flat slot directory: reject anything that could escape it
    if not path or "/" in path or "\\" in path or path.startswith(".") or path == "files.json":
        raise OtaError("unsafe file name in manifest: %r" % path)
    return path


def _hexdigest(h):
    return binascii.hexlify(h.digest()).decode()


class FileSink:
    def __init__(self, path, buf):
        self.path = path
        self.tmp = path + ".part"
        self.mv = memoryview(buf)
        self.f = open(self.tmp, "wb")

    def write(self, buf, n):
        if n == len(buf):
            self.f.write(buf)
        else:
            self.f.write(self.mv[:n])

    def reset(self):
        self.f.close()
        self.f = open(self.tmp, "wb")

    def finish(self):
        self.f.close()
        slots.replace_file(self.tmp, self.path)

    def abort(self):
        self.f.close()
        slots.remove_file(self.tmp)


class PartitionSink:
    def __init__(self, part, block_size):
        self.part = part
        self.block_size = block_size
        self.block = 0

    def write(self, buf, n):
        # the last chunk is padded with erased-flash bytes so every write is one whole block
        for i in range(n, self.block_size):
            buf[i] = 0xFF
        self.part.writeblocks(self.block, buf)
        self.block += 1

    def reset(self):
        self.block = 0

    def finish(self):
        pass

    def abort(self):
        pass


# ---- the manifest response, read as it arrives ----------------------------------------------------------
# /v1/manifest answers {"version", "manifestDigest", "manifest": "<the signed OCI manifest as a JSON
# string>", "signature": {...}, "files": [{"digest", "crc32"}...], "crc32", ...}. Holding the body and
# its parse, then parsing the manifest text inside it, cost the check phase tens of KB of heap. Here the
# body streams through the OTA buffer: a small pull parser keeps only the fields the check uses, the
# manifest string is unescaped on the fly into sha256 (its digest is checked before anything in it is
# trusted) and into a second parser of the same kind, which keeps artifactType, the version annotation
# and per layer mediaType, digest, size and title. Key order does not matter.


class _Body:
    """The response body: Content-Length bytes read through a buffer, one byte at a time."""

    def __init__(self, stream, length, buf):
        self.s = stream
        self.left = length
        self.buf = buf
        self.n = 0
        self.i = 0

    def byte(self):
        if self.i >= self.n:
            if self.left <= 0:
                return -1
            want = self.left if self.left < len(self.buf) else len(self.buf)
            n = self.s.readinto(self.buf, want)
            if not n:
                raise ValueError("body ended early")
            self.left -= n
            self.n = n
            self.i = 0
        self.i += 1
        return self.buf[self.i - 1]


class _Text:
    """The bytes of a JSON string being read from src, unescaped, fed to sha256 as they go."""

    def __init__(self, src):
        self.src = src
        self.h = hashlib.sha256()
        self.out = bytearray(68)  # 64 bytes hashed at a time (+3: a \u escape's UTF-8 may overhang)
        self.full = memoryview(self.out)[:64]
        self.n = 0
        self.i = 0
        self.done = False

    def byte(self):
        if self.i >= self.n:
            self._fill()
            if not self.n:
                return -1
        self.i += 1
        return self.out[self.i - 1]

    def _fill(self):
        out = self.out
        n = 0
        src = self.src
        while n < 64 and not self.done:
            c = src.byte()
            if c == 34:  # closing quote
                self.done = True
                break
            if c < 0:
                raise ValueError("manifest string ends early")
            if c == 92:
                c = src.byte()
                if c == 117:  # \uXXXX -> UTF-8
                    cp = int(bytes(src.byte() for _ in range(4)), 16)
                    for b in chr(cp).encode():
                        out[n] = b
                        n += 1
                    continue
                c = _ESCAPES.get(c, c)
            out[n] = c
            n += 1
        if n == 64:
            self.h.update(self.full)
        elif n:
            self.h.update(memoryview(out)[:n])
        self.n = n
        self.i = 0

    def finish(self):
        while not self.done:
            self._fill()
        return self.h


_ESCAPES = {110: 10, 116: 9, 114: 13, 98: 8, 102: 12}


def _same(b, n, text):
    # the n bytes of b equal the (ASCII) text, compared without slicing
    if len(text) != n:
        return False
    for i in range(n):
        if b[i] != ord(text[i]):
            return False
    return True


class _Json:
    """A pull parser over anything with byte() -> int (-1 at the end). The caller walks the document:
    obj() yields keys and the caller reads or skips each value."""

    def __init__(self, src, tmp):
        self.src = src
        self.tmp = tmp  # scratch for one string value at a time: its length is the longest string read
        self.c = src.byte()

    def _ws(self):
        c = self.c
        while c == 32 or c == 10 or c == 13 or c == 9:
            c = self.src.byte()
        self.c = c
        return c

    def _next(self):
        self.c = self.src.byte()

    def _expect(self, ch):
        if self._ws() != ch:
            raise ValueError("JSON: expected %s" % chr(ch))
        self._next()

    def obj(self, known=None):
        """Keys of an object, the parser positioned at each key's value (none for null). With `known` (a
        tuple of key names) a key is yielded as the matching string of it, else as None: no key string
        is allocated; without, every key as a new string."""
        return self._members(125, known)

    def arr(self):
        """Yields once per element of an array, the parser positioned at it (none for null)."""
        return self._members(93, False)

    def _members(self, close, known):
        # the members of an object (close "}") or, with known False, the elements of an array ("]")
        if self._ws() == 110:
            self._word()
            return
        self._expect(close - 2)  # "{" / "["
        if self._ws() == close:
            self._next()
            return
        while True:
            if known is False:
                yield None
            else:
                key = self.string(128, known, False) if known is not None else self.string()
                self._expect(58)
                yield key
            c = self._ws()
            self._next()
            if c == close:
                return
            if c != 44:
                raise ValueError("JSON: expected , or %s" % chr(close))

    def string(self, limit=128, known=(), other=True):
        """A string value (or null -> None), at most `limit` bytes, read into one scratch buffer. A value
        equal to one of `known` is returned as that very string (nothing allocated); any other value as a
        new string, or None when `other` is False."""
        n = self._read(limit)
        if n < 0:
            return None
        b = self.tmp
        for k in known:
            if _same(b, n, k):
                return k
        return str(memoryview(b)[:n], "utf-8") if other else None

    def sha256(self):
        """A digest value "sha256:<64 hex digits>" as its 32 bytes; None for null or any other value."""
        n = self._read(80)
        b = self.tmp
        if n != 71 or not _same(b, 7, "sha256:"):
            return None
        try:
            return binascii.unhexlify(memoryview(b)[7:71])
        except ValueError:
            return None

    def _read(self, limit):
        # a string value's bytes into the scratch buffer: their count, or -1 for null
        c = self._ws()
        if c == 110:
            self._word()
            return -1
        if c != 34:
            raise ValueError("JSON: expected a string")
        b = self.tmp
        if limit > len(b):
            limit = len(b)
        n = 0
        src = self.src
        while True:
            c = src.byte()
            if c == 34:
                break
            if c < 0:
                raise ValueError("JSON: string ends early")
            if c == 92:
                c = src.byte()
                if c == 117:
                    for x in chr(int(bytes(src.byte() for _ in range(4)), 16)).encode():
                        if n >= limit:
                            raise ValueError("JSON: string too long")
                        b[n] = x
                        n += 1
                    continue
                c = _ESCAPES.get(c, c)
            if n >= limit:
                raise ValueError("JSON: string too long")
            b[n] = c
            n += 1
        self._next()
        return n

    def number(self):
        """An integer (or null -> None)."""
        c = self._ws()
        if c == 110:
            self._word()
            return None
        v = 0
        neg = c == 45
        if neg:
            self._next()
            c = self.c
        if c < 48 or c > 57:
            raise ValueError("JSON: expected an integer")
        while 48 <= c <= 57:
            v = v * 10 + c - 48
            c = self.src.byte()
        self.c = c
        if c == 46 or c == 101 or c == 69:
            raise ValueError("JSON: expected an integer")
        return -v if neg else v

    def _word(self):
        c = self.c
        while 97 <= c <= 122:
            c = self.src.byte()
        self.c = c

    def skip(self):
        """Any value, keeping nothing."""
        c = self._ws()
        if c == 123:
            for _ in self.obj(()):
                self.skip()
        elif c == 91:
            for _ in self.arr():
                self.skip()
        elif c == 34:
            self._next()
            src = self.src
            while True:
                c = self.c
                if c == 34:
                    break
                if c < 0:
                    raise ValueError("JSON: string ends early")
                if c == 92:
                    src.byte()
                self.c = src.byte()
            self._next()
        else:
            while self.c >= 0 and self.c not in b",}] \t\r\n":
                self._next()

    def end(self):
        if self._ws() != -1:
            raise ValueError("JSON: trailing data")


class _Envelope:
    """The response as {version, manifestDigest, signature, crcs: {digest: crc32}, crc32} plus the pruned
    manifest and the sha256 of its text. `tmp` holds one string value at a time (the HTTP head buffer,
    idle while the body is read)."""

    def __init__(self, body, tmp):
        self.p = _Json(body, tmp)

    def read(self):
        p = self.p
        doc = {"crcs": {}}
        manifest = None
        h = None
        for key in p.obj(_ENVELOPE_KEYS):
            if key == "version" or key == "manifestDigest":
                doc[key] = p.string()
            elif key == "crc32":
                doc[key] = p.number()
            elif key == "signature":
                sig = {}
                for k in p.obj(_SIGNATURE_KEYS):
                    if k == "algorithm" or k == "signature":
                        sig[k] = p.string(256)
                    elif k == "payload":
                        sig[k] = p.string(SIG_PAYLOAD_LIMIT)
                    else:
                        p.skip()
                doc["signature"] = sig
            elif key == "files":
                hints = doc["crcs"]
                for _ in p.arr():
                    raw = c = None
                    for k in p.obj(_FILE_KEYS):
                        if k == "digest":
                            raw = p.sha256()
                        elif k == "crc32":
                            c = p.number()
                        else:
                            p.skip()
                    if raw is not None and c is not None:
                        hints[raw] = c
                        if manifest:  # OtaFlux sends the manifest first: the hint goes straight to its file
                            _hint(manifest["files"], hints)
            elif key == "authorisation":
                auth = {}
                for k in p.obj():
                    if k == "text" or k == "algorithm" or k == "signature":
                        auth[k] = p.string(256)
                    else:
                        p.skip()
                doc["authorisation"] = auth
            elif key == "manifest":
                if p._ws() != 34:
                    raise ValueError("manifest is not a string")
                text = _Text(p.src)
                try:
                    manifest = _manifest(_Json(text, p.tmp))
                except ValueError:
                    manifest = None  # not JSON: reported after the digest and signature checks
                h = text.finish()
                p._next()
            else:
                p.skip()
        p.end()
        if manifest:
            _hint(manifest["files"], doc["crcs"])
        return doc, manifest, h


def _hint(files, hints):
    # CRC hints (raw digest -> crc32) onto the files they name; a hint naming no file is dropped
    for raw, c in hints.items():
        i = files.index(raw)
        if i >= 0:
            files.crcs[i] = c
    hints.clear()


def _payload_digest(payload):
    """The manifest digest a cosign simple-signing payload names, or None when it is no such payload."""
    import json

    try:
        critical = json.loads(payload.decode())["critical"]
        if critical["type"] != SIMPLE_SIGNING:
            return None
        digest = critical["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


_ENVELOPE_KEYS = ("version", "manifestDigest", "crc32", "signature", "files", "manifest", "authorisation")
_SIGNATURE_KEYS = ("algorithm", "signature", "payload")
_FILE_KEYS = ("digest", "crc32")
_MANIFEST_KEYS = ("artifactType", "annotations", "layers")
_LAYER_KEYS = ("mediaType", "digest", "size", "annotations")
_ARTIFACTS = (BUNDLE_ARTIFACT, IMAGE_ARTIFACT)
_LAYER_TYPES = (FILE_LAYER, IMAGE_LAYER)


def _manifest(p):
    """The fields of the OCI manifest the check uses: artifactType, the version and security annotations,
    the layers' media types, and their files (Files: title, sha256, size). "unsupported" is set when a
    layer's digest is not sha256 or its size is missing."""
    files = Files()
    types = []
    m = {"files": files, "types": types}
    for key in p.obj(_MANIFEST_KEYS):
        if key == "artifactType":
            m[key] = p.string(128, _ARTIFACTS)
        elif key == "annotations":
            m[key] = _annotations(p, (VERSION, SECURITY))
        elif key == "layers":
            for _ in p.arr():
                media = raw = size = title = None
                for k in p.obj(_LAYER_KEYS):
                    if k == "mediaType":
                        media = p.string(128, _LAYER_TYPES)
                    elif k == "digest":
                        raw = p.sha256()
                    elif k == "size":
                        size = p.number()
                    elif k == "annotations":
                        title = _annotations(p, (TITLE,)).get(TITLE)
                    else:
                        p.skip()
                if raw is None or size is None:
                    m["unsupported"] = True
                    raw = _NO_DIGEST
                types.append(media)
                files.add(title, raw, size or 0)
        else:
            p.skip()
    p.end()
    return m


_NO_DIGEST = bytes(32)


def _annotations(p, wanted):
    a = {}
    for k in p.obj(wanted):
        if k in wanted:
            a[k] = p.string()
        else:
            p.skip()
    return a


class Updater:
    def __init__(
        self,
        device,
        host,
        port,
        open_stream,
        keys,
        state,
        current_version,
        kind="bundle",
        root="",
        partition=None,
        report=None,
        sleep_ms=None,
        retries=5,
        buf=None,
        rollout_keys=(),
    ):
        self.rollout_keys = rollout_keys  # raw Ed25519 keys of the operator: they sign downgrade authorisations
        self.device = device
        self.host = host
        self.port = port
        self.open_stream = open_stream  # (host, port) -> stream
        self.keys = keys  # raw 32-byte Ed25519 public keys
        self.state = state
        self.current = current_version
        self.kind = kind
        self.root = root
        self.partition = partition  # esp32.Partition to write images to; default: get_next_update()
        self.report = report or (lambda event, version=None, percent=None, reason=None: None)
        self.sleep_ms = sleep_ms or time.sleep_ms
        self.retries = retries
        self.buf = buf if buf is not None else bytearray(BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.head = httpc.Head()
        self.crc = crc32.Crc32()
        # The verifier is loaded with the updater (the app builds it at boot) and stays: loaded on demand,
        # mid-check, its bytecode and tables needed 13 KiB more free heap on a fragmented heap (64-bit VM)
        # than the 8 KiB it keeps resident; see docs/firmware-device.md
        import edverify

        self.ed25519 = edverify.verify
        self.bytes_downloaded = 0  # over this updater's lifetime (for the delta-update figures)
        self.requests = 0

    # ---- check -------------------------------------------------------------------------------------

    def _read_manifest(self, path):
        """GET the manifest response and read it as it arrives (see _Json): (envelope, manifest, sha256 of
        the manifest text), or None on 404."""
        s = self.open_stream(self.host, self.port)
        try:
            httpc.send_get(s, self.host, path)
            status = httpc.read_head(s, self.head)
            if status == 404:
                return None
            if status != 200:
                raise OtaError("%s: HTTP %d" % (path.split("?")[0], status))
            length = self.head.length
            if length < 0 or length > MANIFEST_LIMIT:
                raise OtaError("manifest response of %d bytes not acceptable" % length)
            return _Envelope(_Body(s, length, self.buf), self.head.buf).read()
        finally:
            s.close()

    def check(self):
        """The verified Plan for a newer release, or None when there is nothing (new) to install."""
        self.report("checking")
        try:
            got = self._read_manifest("/v1/manifest?device=" + self.device)
        except (OSError, httpc.HTTPError) as e:
            raise OtaError("manifest request failed: %s" % e)
        except ValueError:
            raise OtaError("malformed manifest response")
        if got is None:
            return None
        doc, manifest, h = got
        version = doc.get("version")
        digest = doc.get("manifestDigest")
        if not isinstance(version, str) or not isinstance(digest, str) or h is None:
            raise OtaError("malformed manifest response")
        if version == self.current:
            return None
        if version in self.state["bad"]:
            # rolled back here before: never fetched again (a new version number is needed)
            return None
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or _hexdigest(h) != hexd:
            raise OtaError("manifest digest mismatch")
        self._verify_signature(doc.get("signature"), digest)
        whole_crc = doc.get("crc32")
        if manifest is None:
            raise OtaError("manifest is not JSON")
        # the version must come from the signed text: the envelope's is only a label anyone could change
        signed_version = (manifest.get("annotations") or {}).get(VERSION)
        if signed_version != version:
            raise OtaError("signed version %s differs from announced %s" % (signed_version, version))
        security = _counter((manifest.get("annotations") or {}).get(SECURITY))
        floor = self.state.get("sv") or 0
        if security < floor:
            raise OtaError("%s has security version %d, below the %d confirmed on this device" % (version, security, floor))
        if older(version, self.current) and not self._authorised(doc.get("authorisation"), version):
            raise OtaError("downgrade from %s to %s not authorised" % (self.current, version))
        kind = self._kind(manifest)
        if kind != self.kind:
            raise OtaError("release is a %s, this device installs %ss" % (kind, self.kind))
        files = manifest["files"]
        if manifest.get("unsupported"):
            raise OtaError("a layer without a sha256 digest and size")
        if kind == "bundle":
            for i in range(len(files)):
                safe_path(files.name(i))
        if kind == "image" and len(files) == 1 and whole_crc is not None:
            files.crcs[0] = whole_crc
        if len(files) == 0 or (kind == "image" and len(files) != 1):
            raise OtaError("manifest has %d layers" % len(files))
        return Plan(version, kind, digest, files, security)

    def _kind(self, manifest):
        at = manifest.get("artifactType")
        if at == IMAGE_ARTIFACT:
            return "image"
        if at == BUNDLE_ARTIFACT:
            return "bundle"
        types = manifest["types"]
        if types == [IMAGE_LAYER]:
            return "image"
        if types and all(t == FILE_LAYER for t in types):
            return "bundle"
        raise OtaError("unknown artifact type %s" % at)

    def _authorised(self, auth, version):
        """A downgrade to `version` is allowed only by the operator's signed line naming it and the version
        running here: 'weatherfleet downgrade to=V from=V[,V..] rollout=ID' (a halted candidate going back
        to stable, a fleet rollback). Never because a tag or the plan alone says so."""
        if not auth or auth.get("algorithm") != "ed25519" or not self.rollout_keys:
            return False
        text = auth.get("text") or ""
        if not text.startswith(DOWNGRADE):
            return False
        terms = {}
        for part in text[len(DOWNGRADE):].split(" "):
            k, _, v = part.partition("=")
            terms[k] = v
        if terms.get("to") != version or self.current not in (terms.get("from") or "").split(","):
            return False
        try:
            raw = binascii.a2b_base64(str(auth.get("signature", "")).encode())
        except ValueError:
            return False
        return self._signed_by(self.rollout_keys, text.encode(), raw)

    def _signed_by(self, keys, message, raw):
        for key in keys:
            if self.ed25519(key, message, raw):
                return True
        return False

    def _verify_signature(self, sig, digest):
        # cosign's format: the signed bytes are its simple-signing payload, which must name exactly the
        # manifest digest computed here (and be a container signature, as cosign checks)
        if not sig:
            raise OtaError("release is not signed")
        if sig.get("algorithm") != "ed25519":
            raise OtaError("signature algorithm %s not supported on the device" % sig.get("algorithm"))
        try:
            raw = binascii.a2b_base64(str(sig.get("signature", "")).encode())
            message = binascii.a2b_base64(str(sig.get("payload", "")).encode())
        except ValueError:
            raise OtaError("signature is not base64")
        if _payload_digest(message) != digest:
            raise OtaError("signature payload does not name manifest %s" % digest)
        if not self._signed_by(self.keys, message, raw):
            raise OtaError("signature does not verify with any provisioned key")

    # ---- install -----------------------------------------------------------------------------------

    def install(self, plan):
        """Generator: download into the inactive slot, verify, switch. Yields percent per chunk."""
        if plan.version in self.state["bad"]:
            raise OtaError("version %s was rolled back on this device" % plan.version)
        if plan.kind == "image":
            yield from self._install_image(plan)
        else:
            yield from self._install_bundle(plan)
        self.report("installed", plan.version)

    def _install_bundle(self, plan):
        st = self.state
        root = self.root
        new = slots.inactive(st)
        new_dir = slots.slot_dir(new, root)
        slots.clear_dir(new_dir)
        active = st.get("active", "")
        old_index = slots.read_index(active, root) if active is not None else {}
        old_dir = slots.slot_dir(active, root)
        files = plan.files  # a file's strings are made when it is handled (see Files), not all at once
        todo = []  # positions in files
        total = 0
        for i in range(len(files)):
            if old_index:
                path, digest, size, _ = files[i]
                if old_index.get(path) == digest and self._copy_verified(old_dir + "/" + path, new_dir + "/" + path, digest, size):
                    yield 0  # a chance for the event loop (and the collector) between files
                    continue
            todo.append(i)
            total += files.sizes[i]
        old_index = None  # the old slot's {path: digest}: not needed while downloading
        self._total = total if total else 1
        self._base = 0
        for i in todo:
            path, digest, size, crc = files[i]
            sink = FileSink(new_dir + "/" + path, self.buf)
            try:
                yield from self._download(digest, size, sink, crc)
            except Exception:
                sink.abort()
                raise
            self._base += size
        self.report("verifying", plan.version)
        # read back what is on flash: catches write errors and anything copied from the old slot
        for i in range(len(files)):
            path, digest, size, _ = files[i]
            if self._hash_file(new_dir + "/" + path) != (digest[7:], size):
                raise OtaError("%s differs from the manifest after writing" % path)
            yield 100
        yield from slots.write_index(new, files, root)
        slots.set_pending_bundle(st, plan.version, new, root, plan.security)

    def _install_image(self, plan):
        part = self.partition
        if part is None:
            import esp32

            part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        block_size = part.ioctl(5, 0)
        if block_size != len(self.buf):
            raise OtaError("flash block size %d != buffer %d" % (block_size, len(self.buf)))
        path, digest, size, crc = plan.files[0]
        if size > part.ioctl(4, 0) * block_size:
            raise OtaError("image of %d bytes does not fit the partition" % size)
        self._total = size
        self._base = 0
        yield from self._download(digest, size, PartitionSink(part, block_size), crc)
        self.report("verifying", plan.version)
        h = hashlib.sha256()
        left = size
        block = 0
        while left > 0:
            part.readblocks(block, self.buf)
            n = block_size if left >= block_size else left
            h.update(self.buf if n == block_size else self.mv[:n])
            left -= n
            block += 1
            yield 100
        if _hexdigest(h) != digest[7:]:
            raise OtaError("image differs from the manifest after writing")
        label = part.info()[4]
        part.set_boot()
        slots.set_pending_image(self.state, plan.version, label, self.root, plan.security)

    def _copy_verified(self, src, dst, digest, size):
        # an unchanged file is copied from the running slot, and only if it still hashes right
        try:
            fin = open(src, "rb")
        except OSError:
            return False
        h = hashlib.sha256()
        got = 0
        buf = self.buf
        try:
            with open(dst, "wb") as fout:
                while True:
                    n = fin.readinto(buf)
                    if not n:
                        break
                    chunk = buf if n == len(buf) else self.mv[:n]
                    h.update(chunk)
                    fout.write(chunk)
                    got += n
        finally:
            fin.close()
        if got == size and _hexdigest(h) == digest[7:]:
            return True
        os.remove(dst)
        return False

    def _hash_file(self, path):
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while True:
                n = f.readinto(self.buf)
                if not n:
                    break
                h.update(self.buf if n == len(self.buf) else self.mv[:n])
                size += n
        return _hexdigest(h), size

    def _download(self, digest, size, sink, crc_expected=None):
        """Stream one blob into sink; resume with Range after a dropped connection. Yields percent."""
        buf = self.buf
        mv = self.mv
        cap = len(buf)
        sha = hashlib.sha256()
        crc = self.crc
        crc.reset()
        done = 0  # bytes hashed and written
        filled = 0  # bytes waiting in buf
        failures = 0
        path = "/v1/blobs/%s?device=%s" % (digest, self.device)
        while done < size:
            start = done + filled
            s = None
            try:
                s = self.open_stream(self.host, self.port)
                self.requests += 1
                httpc.send_get(s, self.host, path, start)
                status = httpc.read_head(s, self.head)
                if status == 200 and start:
                    # the server ignored the Range header: start over
                    sha = hashlib.sha256()
                    crc.reset()
                    sink.reset()
                    done = filled = start = 0
                elif status == 206:
                    if self.head.range_start() != start:
                        raise OtaError("server resumed at the wrong offset")
                elif status != 200:
                    raise OtaError("blob %s: HTTP %d" % (digest[:19], status))
                if self.head.length >= 0 and self.head.length != size - start:
                    raise OtaError("blob %s: %d bytes announced, %d expected" % (digest[:19], self.head.length, size - start))
                while done + filled < size:
                    want = size - done - filled
                    if want > cap - filled:
                        want = cap - filled
                    if filled:
                        n = s.readinto(mv[filled:], want)  # only after a short read: not the hot path
                    else:
                        n = s.readinto(buf, want)
                    if not n:
                        break  # connection closed early: resume below
                    filled += n
                    self.bytes_downloaded += n
                    if filled == cap or done + filled == size:
                        sha.update(buf if filled == cap else mv[:filled])
                        crc.update(buf, filled)
                        sink.write(buf, filled)
                        done += filled
                        filled = 0
                        yield (self._base + done) * 100 // self._total if self._total < 10000000 else 0
            except OSError:
                pass
            except httpc.HTTPError:
                pass
            finally:
                if s is not None:
                    s.close()
            if done >= size:
                break
            failures += 1
            if failures > self.retries:
                raise OtaError("download of %s interrupted %d times" % (digest[:19], failures))
            self.sleep_ms(min(500 << failures, 10000))
        # length is exact by construction (never more than size is read); then the cheap check, then the strong one
        if crc_expected is not None and crc.value() != crc_expected:
            raise OtaError("crc32 mismatch for %s" % digest[:19])
        if _hexdigest(sha) != digest[7:]:
            raise OtaError("sha256 mismatch for %s" % digest[:19])
        sink.finish()
