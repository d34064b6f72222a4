"""What registry and layout operations raise."""


class OciError(RuntimeError):
    """A registry or layout operation failed; the message says which and why."""


class NotFound(OciError):
    """The repository, tag, manifest or blob does not exist."""


class Unreachable(OciError):
    """The registry did not answer (connection refused, timeout, 5xx)."""
