"""Exceptions that end a boot. They derive from BaseException (not Exception) so device code's
`except Exception` cannot swallow a reset or a power cut, exactly as a real reset cannot be caught."""

from __future__ import annotations


class DeviceReset(BaseException):
    """The device resets (machine.reset, watchdog, power cut). Raised into the code that is still running."""

    def __init__(self, cause: int, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason


class PowerCut(DeviceReset):
    """Power was lost while flash was being written; the write stopped at the armed byte."""
