"""One root for every error puller reports to a person.

Each subclass carries its data and renders one complete sentence: what went
wrong, where, and what to do about it.
"""

from __future__ import annotations


class PullerError(Exception):
    """Root of puller's errors; ``str()`` is the message for a person."""


class DefinitionError(PullerError):
    """A service definition file that cannot be used."""

    def __init__(self, path: str, reason: str, line: int | None = None):
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")


class RunLineError(PullerError):
    """A ``bash:`` line that puller will not run; names the offending token."""

    def __init__(self, reason: str, token: str | None = None):
        self.reason = reason
        self.token = token
        super().__init__(reason)


class ImageReferenceError(PullerError):
    """An image reference that is not valid."""

    def __init__(self, reference: str, reason: str):
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {reference!r}: {reason}")


class DockerError(PullerError):
    """A docker CLI call that failed."""

    def __init__(self, argv: list[str] | tuple[str, ...], exit_code: int, stderr: str):
        self.argv = tuple(argv)
        self.exit_code = exit_code
        self.stderr = stderr.strip()
        command = " ".join(self.argv[:3]) + (" ..." if len(self.argv) > 3 else "")
        super().__init__(
            f"`{command}` failed with exit code {exit_code}: {self.stderr or 'no output'}"
        )
