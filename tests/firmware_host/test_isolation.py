"""Many boards, one host process, one VM process each: each has its own modules, flash and fate; one board's reset,
crash or watchdog does not touch another."""

from __future__ import annotations

from devicesim import DeviceState

COUNTER = """
import counter
counter.value += 1
print("VALUE", counter.value, id(counter))
"""

PROGRAM = """
import asyncio, machine, sys
import counter
counter.value += 100
with open("mine.txt", "w") as f:
    f.write(sys.implementation.name)
MODE = open("mode.txt").read().strip()

async def main():
    n = 0
    while True:
        await asyncio.sleep_ms(100)
        n += 1
        print("TICK", n, counter.value)
        if MODE == "reset" and n == 3:
            machine.reset()
        if MODE == "crash" and n == 3:
            raise ValueError("boom")
        if MODE == "hang" and n == 3:
            wdt = machine.WDT(timeout=300)
            while True:
                await asyncio.sleep_ms(1000)  # never feeds

asyncio.run(main())
"""


async def test_boards_do_not_share_modules_files_or_resets(devices) -> None:
    boards = {mode: devices(f"dev-{mode}") for mode in ("calm", "reset", "crash", "hang")}
    for mode, board in boards.items():
        board.flash_firmware()
        board.install({"boot.py": COUNTER, "main.py": PROGRAM, "counter.py": "value = 0\n", "mode.txt": mode})
        board.start()
    await boards["reset"].wait_for(lambda: len(boards["reset"].boots) >= 3, 30, "resets")
    await boards["hang"].wait_for(
        lambda: any(b.reason == "watchdog" for b in boards["hang"].boots), 30, "watchdog"
    )
    await boards["crash"].wait_for(lambda: boards["crash"].state == DeviceState.IDLE, 30, "the crash")
    calm = boards["calm"]
    assert len(calm.boots) == 1, "other boards' resets must not reset this one"
    assert "VALUE 1 " in calm.console_text() and "TICK 5 101" in calm.console_text()
    # every boot starts with fresh RAM: the module counter is 1 after boot.py on every boot of every board
    for board in boards.values():
        assert all(line.startswith("VALUE 1 ") for line in board.console if line.startswith("VALUE"))
        assert board.flash.read("mine.txt") == b"micropython"
    assert "ValueError: boom" in boards["crash"].console_text()
    assert len(boards["crash"].boots) == 1, "an exception in main.py ends in the REPL, not a reset"
