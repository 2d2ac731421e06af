"""The errors of the mask strategies: one type for every bad setting of every kind.

No imports: ``python -m analysis`` recognizes these errors without importing the
strategies package (see :mod:`analysis.__main__`), so stages that draw no mask do not
depend on it.
"""

from __future__ import annotations

from typing import Any

_NOT_GIVEN = object()


class StrategyError(ValueError):
    """A strategy could not be built or returned something that is not a mask."""


class StrategySettingError(StrategyError):
    """A strategy setting has an impossible value: :attr:`key` names it, :attr:`allowed` says
    what it may be (a range, a list of names), :attr:`value` is what was given.

    Every kind raises this (and only this) for a bad setting, so ``except
    StrategySettingError`` catches them all; it is a ``ValueError``.
    """

    def __init__(
        self, key: str, allowed: str, value: Any = _NOT_GIVEN, message: str | None = None
    ) -> None:
        self.key, self.allowed = key, allowed
        self.value = None if value is _NOT_GIVEN else value
        if message is None:
            given = "" if value is _NOT_GIVEN else f" = {value!r}"
            message = f"{key}{given}: must be {allowed}"
        elif key not in message:
            message = f"{key}: {message}"
        super().__init__(message)


def refuse_unknown(unknown: dict[str, Any], known: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`UnknownSettingError` when ``unknown`` (a constructor's ``**rest``) is
    not empty."""
    if unknown:
        raise UnknownSettingError(sorted(unknown), known)


class UnknownSettingError(StrategySettingError, TypeError):
    """A setting name the kind does not have. Also a ``TypeError``, as Python's own error for an
    unexpected keyword argument is, so code written against either convention catches it."""

    def __init__(self, unknown: list[str], known: tuple[str, ...] | list[str]) -> None:
        super().__init__(
            unknown[0],
            f"one of {', '.join(known)}",
            message=f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}",
        )
        self.unknown = list(unknown)
