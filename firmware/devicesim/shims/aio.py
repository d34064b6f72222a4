"""`asyncio` (MicroPython's, formerly uasyncio) for one boot, on the one shared host loop.

`asyncio.run(main())` is called by main.py from the boot's interpreter thread: the coroutine runs on the
shared loop and the thread waits. Everything the boot starts is tracked so a reset can cancel it.
MicroPython streams are single objects with `readinto` (CPython lacks it); `open_connection` returns that
object twice, like MicroPython. `StreamReader(uart)` polls a UART as MicroPython's poller would."""

from __future__ import annotations

import asyncio as host
import concurrent.futures
import contextlib
import ssl as host_ssl
import threading
import types
from typing import TYPE_CHECKING

from ..errors import DeviceReset
from .net import SSLContext
from .network import require_network

if TYPE_CHECKING:
    from ..device import Boot


class Stream:
    def __init__(
        self, boot: Boot, reader: host.StreamReader | None, writer: host.StreamWriter | None
    ) -> None:
        self._boot, self._reader, self._writer = boot, reader, writer
        if writer is not None:
            boot.closers.add(self._abort)

    def _abort(self) -> None:
        if self._writer is not None and not self._writer.transport.is_closing():
            self._writer.transport.abort()

    async def read(self, n: int = -1) -> bytes:
        self._boot.check()
        return await self._reader.read(n)

    async def readinto(self, buf) -> int:
        self._boot.check()
        data = await self._reader.read(len(buf))
        memoryview(buf)[: len(data)] = data
        return len(data)

    async def readexactly(self, n: int) -> bytes:
        self._boot.check()
        try:
            return await self._reader.readexactly(n)
        except host.IncompleteReadError:
            raise EOFError from None

    async def readline(self) -> bytes:
        self._boot.check()
        return await self._reader.readline()

    def write(self, buf) -> None:
        self._boot.check()
        self._writer.write(bytes(buf))  # copy: the device reuses its buffers

    async def drain(self) -> None:
        self._boot.check()
        await self._writer.drain()

    async def awrite(self, buf, off: int = 0, sz: int = -1) -> None:
        self.write(memoryview(buf)[off : None if sz < 0 else off + sz])
        await self.drain()

    def close(self) -> None:
        self._boot.closers.discard(self._abort)
        if self._writer is not None:
            self._writer.close()

    async def wait_closed(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, host_ssl.SSLError):
                await self._writer.wait_closed()

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    def get_extra_info(self, name: str, default=None):
        return self._writer.get_extra_info(name, default) if self._writer else default


class PolledStream:
    """MicroPython's Stream over a pollable object (a UART): reads wait until bytes are there."""

    def __init__(self, boot: Boot, obj, poll_seconds: float = 0.01) -> None:
        self._boot, self._obj, self._poll = boot, obj, poll_seconds

    async def read(self, n: int = -1) -> bytes:
        while True:
            self._boot.check()
            data = self._obj.read(None if n < 0 else n)
            if data:
                return data
            await host.sleep(self._poll)

    async def readinto(self, buf) -> int:
        while True:
            self._boot.check()
            count = self._obj.readinto(buf)
            if count:
                return count
            await host.sleep(self._poll)

    async def readexactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += await self.read(n - len(out))
        return bytes(out)

    async def readline(self) -> bytes:
        out = bytearray()
        while not out.endswith(b"\n"):
            out += await self.read(1)
        return bytes(out)

    def write(self, buf) -> None:
        self._boot.check()
        self._obj.write(buf)

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class ThreadSafeFlag:
    def __init__(self) -> None:
        self._event = host.Event()
        self._loop: host.AbstractEventLoop | None = None

    def set(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._event.set)
        else:
            self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        self._loop = host.get_running_loop()
        await self._event.wait()
        self._event.clear()


def make_asyncio(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("asyncio")
    for name in (
        "sleep",
        "gather",
        "wait_for",
        "Event",
        "Lock",
        "Task",
        "TimeoutError",
        "CancelledError",
        "current_task",
        "Queue",
        "Semaphore",
        "BoundedSemaphore",
        "shield",
    ):
        setattr(module, name, getattr(host, name))
    pending: list = []

    def on_loop() -> bool:
        try:
            return host.get_running_loop() is boot.loop
        except RuntimeError:
            return False

    def _finished(task: host.Task) -> None:
        boot.tasks.discard(task)
        # a task that died because its boot ended (reset, power cut) has nobody left to look at it
        if not task.cancelled() and not boot.alive:
            task.exception()

    def track(task: host.Task) -> host.Task:
        boot.tasks.add(task)
        task.add_done_callback(_finished)
        return task

    def create_task(coro) -> host.Task:
        boot.check()
        if on_loop():
            return track(boot.loop.create_task(coro))
        pending.append(coro)  # created before the loop runs (MicroPython allows it): started by run()
        return _PendingTask(coro)

    async def _main(coro):
        track(host.current_task())
        for queued in pending:
            track(boot.loop.create_task(queued))
        pending.clear()
        return await coro

    def _wait_in_thread(coro):
        if on_loop():
            raise RuntimeError("devicesim: asyncio.run() must be called from main.py, not from a coroutine")
        boot.check()
        future = host.run_coroutine_threadsafe(_main(coro), boot.loop)
        wake = threading.Event()
        boot.wakers.append(wake)
        future.add_done_callback(lambda _f: wake.set())
        wake.wait()
        if not boot.alive:
            future.cancel()
            cause, reason = boot.end_reason
            raise DeviceReset(cause, reason)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise host.CancelledError from None

    async def _forever():
        await host.Event().wait()

    class Loop:
        def create_task(self, coro):
            return create_task(coro)

        def run_forever(self):
            return _wait_in_thread(_forever())

        def run_until_complete(self, coro):
            return _wait_in_thread(coro)

        def stop(self):
            pass

        def close(self):
            pass

        def set_exception_handler(self, handler):
            pass

        def call_exception_handler(self, context):
            boot.device.log(f"asyncio: {context.get('message')}")

    the_loop = Loop()

    async def open_connection(host_name: str, port: int, ssl=None, server_hostname=None):
        require_network(boot)
        context = ssl._ctx if isinstance(ssl, SSLContext) else ssl
        if context is True:
            context = host_ssl.create_default_context()
        try:
            reader, writer = await host.open_connection(
                host_name,
                port,
                ssl=context,
                server_hostname=(server_hostname or host_name) if context else None,
            )
        except host_ssl.SSLCertVerificationError as error:
            raise OSError(-9984, f"MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: {error}") from None
        if not boot.alive:
            writer.transport.abort()
            boot.check()
        stream = Stream(boot, reader, writer)
        return stream, stream

    module.create_task = create_task
    module.run = _wait_in_thread
    module.get_event_loop = lambda *a, **k: the_loop
    module.new_event_loop = lambda: the_loop
    module.sleep_ms = lambda ms: host.sleep(ms / 1000)
    module.wait_for_ms = lambda aw, ms: host.wait_for(aw, ms / 1000)
    module.open_connection = open_connection
    module.StreamReader = module.StreamWriter = lambda obj, *a: PolledStream(boot, obj)
    module.Stream = Stream
    module.ThreadSafeFlag = ThreadSafeFlag
    return module


class _PendingTask:
    def __init__(self, coro) -> None:
        self.coro = coro

    def cancel(self) -> bool:
        self.coro.close()
        return True

    def done(self) -> bool:
        return False
