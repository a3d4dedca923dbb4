"""One error tree for dqpulse; the service maps it to HTTP status in one handler."""

from __future__ import annotations


class DqpulseError(Exception):
    """Base of every error dqpulse raises on purpose."""


class ConfigError(DqpulseError):
    """Bad settings or a bad dqpulse.yaml; carries every problem found, each with its place."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DecodeError(DqpulseError):
    """A message that cannot be turned into a record; ``reason`` is a stable counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class NotFoundError(DqpulseError):
    """A named thing (dataset, metric, incident) does not exist."""


class ConflictError(DqpulseError):
    """The request contradicts the current state (e.g. resolving a resolved incident)."""


class ValidationError(DqpulseError):
    """A request parameter is malformed; the message names the parameter and why."""


class AuthError(DqpulseError):
    """Missing or invalid credentials."""


class ForbiddenError(DqpulseError):
    """Valid credentials whose role does not allow the action."""
