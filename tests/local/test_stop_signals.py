"""Issue 14: `weatherfleet up` stops cleanly on SIGINT even when it was started with SIGINT ignored (a
background job of a script, `nohup`), where Python installs no KeyboardInterrupt handler. The real
`stop_on_signals` of `up`, in a real process started with SIGINT ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """
import signal, sys, time
from weatherfleet.local.supervisor import Stop, stop_on_signals
assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # as inherited
try:
    with stop_on_signals():
        print("ready", flush=True)
        time.sleep(30)
except Stop as stop:
    print("stopped by", stop, flush=True)
    sys.exit(0)
print("not stopped", flush=True)
sys.exit(1)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_up_stops_on_a_signal_even_when_started_with_sigint_ignored(sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        started = time.monotonic()
        process.send_signal(sig)
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0 and f"stopped by {sig.name}" in out
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
