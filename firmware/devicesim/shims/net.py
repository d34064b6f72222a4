"""`socket` and `ssl` as MicroPython has them, over real host sockets: connections really reach the
broker and OtaFlux. MicroPython's `ssl.SSLContext` takes certificate *paths on the device* (or the bytes
themselves); the shim resolves them on the device's flash and hands real files to CPython's ssl."""

from __future__ import annotations

import contextlib
import hashlib
import socket as host_socket
import ssl as host_ssl
import types
from typing import TYPE_CHECKING

from .network import require_network

if TYPE_CHECKING:
    from ..device import Boot

PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER = 0, 1
CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = 0, 1, 2


class Socket:
    """A MicroPython socket: adds read/readinto/readline/write to the host socket."""

    def __init__(self, boot: Boot, sock: host_socket.socket) -> None:
        self._boot, self._sock = boot, sock
        boot.closers.add(self.close)

    def connect(self, address) -> None:
        require_network(self._boot)
        self._sock.connect(tuple(address[:2]))

    def settimeout(self, value) -> None:
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def setsockopt(self, *args) -> None:
        self._sock.setsockopt(*args)

    def fileno(self) -> int:
        return self._sock.fileno()

    def bind(self, address) -> None:
        self._sock.bind(tuple(address[:2]))

    def listen(self, backlog: int = 1) -> None:
        self._sock.listen(backlog)

    def accept(self):
        sock, address = self._sock.accept()
        return Socket(self._boot, sock), address

    def send(self, data) -> int:
        self._boot.check()
        return self._sock.send(bytes(data))

    def sendall(self, data) -> None:
        self._boot.check()
        self._sock.sendall(bytes(data))

    def write(self, data) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        self._boot.check()
        return self._sock.recv(size)

    def read(self, size: int | None = None) -> bytes:
        """MicroPython's blocking stream read: until `size` bytes or EOF."""
        out = bytearray()
        while size is None or len(out) < size:
            chunk = self.recv(4096 if size is None else size - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def readinto(self, buf, size: int | None = None) -> int:
        """MicroPython's blocking stream readinto: fills the buffer (or `size` bytes) unless EOF comes first."""
        view = memoryview(buf)[: size or len(buf)]
        filled = 0
        while filled < len(view):
            self._boot.check()
            count = self._sock.recv_into(view[filled:])
            if not count:
                break
            filled += count
        return filled

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            byte = self.recv(1)
            if not byte:
                break
            line += byte
        return bytes(line)

    def makefile(self, mode: str = "rb", buffering: int = 0):
        return self

    def close(self) -> None:
        self._boot.closers.discard(self.close)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SSLContext:
    _boot: Boot

    def __init__(self, protocol: int = PROTOCOL_TLS_CLIENT) -> None:
        self._server = protocol == PROTOCOL_TLS_SERVER
        self._ctx = host_ssl.SSLContext(
            host_ssl.PROTOCOL_TLS_SERVER if self._server else host_ssl.PROTOCOL_TLS_CLIENT
        )
        self._ctx.minimum_version = host_ssl.TLSVersion.TLSv1_2
        self._ctx.check_hostname = False
        self._ctx.verify_mode = host_ssl.CERT_NONE  # MicroPython's default, like its ssl.py
        self._verify = CERT_NONE

    @property
    def verify_mode(self) -> int:
        return self._verify

    @verify_mode.setter
    def verify_mode(self, mode: int) -> None:
        # mbedTLS checks the server name whenever verification is required and a hostname is given
        self._verify = mode
        if mode == CERT_NONE:
            self._ctx.check_hostname = False
            self._ctx.verify_mode = host_ssl.CERT_NONE
        else:
            self._ctx.verify_mode = (
                host_ssl.CERT_REQUIRED if mode == CERT_REQUIRED else host_ssl.CERT_OPTIONAL
            )
            self._ctx.check_hostname = mode == CERT_REQUIRED and not self._server

    def _material(self, value, suffix: str) -> str:
        """A host path for a device path or for the PEM/DER bytes themselves."""
        boot = self._boot
        if isinstance(value, str):
            host = boot.device.flash.host_path(value, boot.cwd)
            if not host.is_file():
                raise OSError(2, "ENOENT")
            data = host.read_bytes()
        else:
            data = bytes(value)
        if not data.lstrip().startswith(b"-----"):
            data = _der_to_pem(data, suffix)
        folder = boot.device.root / "tls-cache"
        folder.mkdir(exist_ok=True)
        path = folder / (hashlib.sha256(data).hexdigest()[:24] + suffix)
        if not path.exists():
            path.write_bytes(data)
            path.chmod(0o600)
        return str(path)

    def load_cert_chain(self, certfile, keyfile) -> None:
        try:
            self._ctx.load_cert_chain(self._material(certfile, ".crt"), self._material(keyfile, ".key"))
        except host_ssl.SSLError as error:
            raise ValueError(f"invalid cert/key: {error}") from error

    def load_verify_locations(self, cafile=None, cadata=None) -> None:
        self._ctx.load_verify_locations(
            cafile=self._material(cafile if cafile is not None else cadata, ".ca")
        )

    def wrap_socket(
        self,
        sock,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        server_hostname: str | None = None,
    ):
        raw = sock._sock if isinstance(sock, Socket) else sock
        wrapped = self._ctx.wrap_socket(
            raw,
            server_side=server_side,
            server_hostname=server_hostname,
            do_handshake_on_connect=do_handshake_on_connect,
        )
        return Socket(self._boot, wrapped)


def _der_to_pem(data: bytes, suffix: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if suffix == ".key":
        key = serialization.load_der_private_key(data, None)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.PEM)


def make_ssl(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("ssl")
    module.SSLContext = type("SSLContext", (SSLContext,), {"_boot": boot})
    module.PROTOCOL_TLS_CLIENT, module.PROTOCOL_TLS_SERVER = PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER
    module.CERT_NONE, module.CERT_OPTIONAL, module.CERT_REQUIRED = CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED
    module.SSLError = host_ssl.SSLError
    module.MBEDTLS_VERSION = "Mbed TLS 3.5.1 (devicesim: OpenSSL underneath)"

    def wrap_socket(
        sock,
        server_side=False,
        key=None,
        cert=None,
        cert_reqs=CERT_NONE,
        cadata=None,
        server_hostname=None,
        do_handshake=True,
    ):
        context = module.SSLContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key)
        if cadata is not None:
            context.load_verify_locations(cadata=cadata)
        context.verify_mode = cert_reqs
        return context.wrap_socket(sock, server_side, do_handshake, server_hostname)

    module.wrap_socket = wrap_socket
    return module


def make_socket(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("socket")

    def socket(af: int = host_socket.AF_INET, kind: int = host_socket.SOCK_STREAM, proto: int = 0) -> Socket:
        boot.check()
        return Socket(boot, host_socket.socket(af, kind, proto))

    def getaddrinfo(host: str, port: int, af: int = 0, kind: int = 0, proto: int = 0, flags: int = 0):
        require_network(boot)
        try:
            infos = host_socket.getaddrinfo(host, port, host_socket.AF_INET, kind or host_socket.SOCK_STREAM)
        except host_socket.gaierror:
            raise OSError(-202, "EAI_FAIL") from None
        return [(f, t, p, c, a) for f, t, p, c, a in infos]

    module.socket, module.getaddrinfo = socket, getaddrinfo
    for name in (
        "AF_INET",
        "AF_INET6",
        "SOCK_STREAM",
        "SOCK_DGRAM",
        "SOCK_RAW",
        "IPPROTO_TCP",
        "IPPROTO_UDP",
        "SOL_SOCKET",
        "SO_REUSEADDR",
        "IPPROTO_IP",
        "TCP_NODELAY",
    ):
        setattr(module, name, getattr(host_socket, name))
    return module
