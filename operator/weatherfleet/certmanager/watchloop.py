"""The thread both halves of the stand-in run in (Certificates, CertificateRequests): a pass lists and then
watches until a timeout, again and again until `stop`. A pass that fails (the API server restarting, the
CRD not installed yet) is logged and repeated after `retry_seconds`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Self

from kubernetes import watch

log = logging.getLogger(__name__)


class WatchLoop:
    """Subclasses say what one pass does (`_pass`) and how long to wait after a failed one
    (`retry_seconds`); `_events` is the watch that `stop` ends at once."""

    retry_seconds: float

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(15)

    def _pass(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("%s: pass failed, retrying", self._thread_name, exc_info=True)
                self._stop.wait(self.retry_seconds)

    def _events(self, list_function: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict]:
        """Watch events of `list_function(*args)` until the watch's timeout or `stop`."""
        self._watch = watch.Watch()
        try:
            for event in self._watch.stream(list_function, *args, **kwargs):
                if self._stop.is_set():
                    return
                yield event
        finally:
            self._watch = None
