"""bench/firmware.py --quick keeps working, and its allocation figures (deterministic counts, not timings)
hold: no allocation per OTA chunk, publish within budget, one-file delta within 10 %."""

from __future__ import annotations

import re
import subprocess
import sys

from mpy_harness import REPO


def test_bench_quick_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "firmware.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    chunk = re.search(r"per chunk after warm-up: mean ([\d.]+), max (\d+)", out)
    assert chunk and float(chunk.group(1)) == 0 and int(chunk.group(2)) == 0, out
    peaks = [int(x) for x in re.findall(r"install phase peak .*?: (\d+) B", out)]
    assert len(peaks) == 2 and all(p <= 16384 for p in peaks), out  # one big file; the all-features bundle
    publishes = [int(x) for x in re.findall(r"bytes allocated per publish .*?: (\d+)", out)]
    assert len(publishes) == 2 and all(p <= 512 for p in publishes), out
    delta = re.search(r"= ([\d.]+) %  \(goal <= 10 %\)", out)
    assert delta and float(delta.group(1)) <= 10, out
