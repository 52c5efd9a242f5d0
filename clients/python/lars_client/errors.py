"""Why a request to the agent produced no answer the caller can use.

Every error of the client is a :class:`LarsError`; a bad argument is a
plain :class:`ValueError` (raised before any network I/O)."""

from __future__ import annotations

from typing import Optional


class LarsError(Exception):
    """Base class of the client's errors. ``retcode`` is the agent's return
    code when the agent answered (RET_OVERLOAD=1, RET_SYSTEM_ERROR=2,
    RET_NOEXIST=3, or an unknown one), else None."""

    def __init__(self, message: str, retcode: Optional[int] = None) -> None:
        super().__init__(message)
        self.retcode = retcode


class OverloadError(LarsError):
    """RET_OVERLOAD: every host of the key is overloaded and no probe is due."""


class NoExistError(LarsError):
    """RET_NOEXIST: the agent does not know the key yet (it starts pulling it
    from the dns; see ``reg_init``), or ``reg_init`` still saw no host."""


class LarsSystemError(LarsError):
    """RET_SYSTEM_ERROR, an unknown return code, or a success without a
    valid host."""


class LarsTimeoutError(LarsError, TimeoutError):
    """No matching reply arrived within the receive timeout (also a
    built-in :class:`TimeoutError`)."""


class LarsIOError(LarsError):
    """A socket error (e.g. nothing listens on the agent port: connection
    refused). The OS error is the ``__cause__``."""
