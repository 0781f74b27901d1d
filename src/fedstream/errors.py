"""One exception tree for fedstream.

Every error a user can provoke with bad input derives from :class:`FedstreamError`, so a
caller can catch the whole family, and each message names the field, the value it got and
what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self


class FedstreamError(Exception):
    """Base of every error fedstream raises on purpose.

    Picklable whatever a subclass's constructor takes: an error raised in a worker process
    or a Ray actor must reach the parent as itself. (``Exception`` pickles as
    ``cls(*self.args)``, and a subclass that builds its message from its own arguments has
    ``args == (message,)``, which its constructor would refuse.)"""

    _made_with: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args)
        error._made_with = (args, kwargs)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = getattr(self, "_made_with", (self.args, {}))
        return (_rebuild, (type(self), args, kwargs), self.__dict__)


def _rebuild(cls: type[FedstreamError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class ConfigError(FedstreamError, ValueError):
    """A configuration value is out of its allowed range or of the wrong kind."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}={value!r} is invalid: expected {expected}")


class WireFormatError(FedstreamError, ValueError):
    """Bytes that claim to be encoded ``Params`` are truncated or malformed."""


class ParamsMismatchError(FedstreamError, ValueError):
    """Two ``Params`` (or a model and a ``Params``) disagree on names, shapes or dtypes."""


@dataclass(frozen=True)
class ClientFailure:
    """Why one client produced no usable result in a round.

    ``stage`` is where it failed: ``"train"`` (the client raised), ``"evaluate"``, or
    ``"validate"`` (the server rejected what it sent).
    """

    client_id: str
    stage: str
    cause: str

    def __str__(self) -> str:
        return f"client {self.client_id!r} ({self.stage}): {self.cause}"


class RoundFailedError(FedstreamError, RuntimeError):
    """A round could not produce a new global model; the state is left as it was."""

    def __init__(self, round_number: int, reason: str, failures: Sequence[ClientFailure] = ()):
        self.round_number = round_number
        self.failures = tuple(failures)
        lines = [f"round {round_number} failed: {reason}"]
        lines += [f"  - {failure}" for failure in self.failures]
        super().__init__("\n".join(lines))


class NonFiniteModelError(RoundFailedError):
    """The server update made the global model NaN or Inf. The round loop leaves that
    round out (the model stays as it was) and the run goes on."""


class PrivacyBudgetExceeded(RoundFailedError):
    """The next round would spend more privacy than the run's target ε allows, so it is
    not started; the state after the last round stands."""

    def __init__(self, round_number: int, spent: float, after: float, target: float) -> None:
        self.spent = spent
        self.after = after
        self.target = target
        super().__init__(
            round_number,
            f"privacy budget: ε would rise from {spent:.4g} to {after:.4g}, "
            f"above dp_target_epsilon={target:g}",
        )
