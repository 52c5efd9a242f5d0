"""The application API of lars for Python: ask the local lars agent which
host serves a service ``(modid, cmdid)``, and tell it how the call went.

    from lars_client import LarsClient
    with LarsClient(base_port=8888, timeout=0.05) as lars:
        lars.reg_init(1, 1)
        ip, port = lars.get_host(1, 1)
        lars.report(1, 1, ip, port, True, latency_ms=3)

Standard library only; Python 3.9+. See README.md for the API.
"""

from ._client import (
    DEFAULT_BASE_PORT,
    DEFAULT_PORT_COUNT,
    DEFAULT_TIMEOUT,
    REG_INIT_ATTEMPTS,
    REG_INIT_WAIT,
    RET_NOEXIST,
    RET_OVERLOAD,
    RET_SUCC,
    RET_SYSTEM_ERROR,
    Host,
    LarsClient,
    timecost_ms,
)
from .errors import (
    LarsError,
    LarsIOError,
    LarsSystemError,
    LarsTimeoutError,
    NoExistError,
    OverloadError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_PORT_COUNT",
    "DEFAULT_TIMEOUT",
    "REG_INIT_ATTEMPTS",
    "REG_INIT_WAIT",
    "RET_NOEXIST",
    "RET_OVERLOAD",
    "RET_SUCC",
    "RET_SYSTEM_ERROR",
    "Host",
    "LarsClient",
    "LarsError",
    "LarsIOError",
    "LarsSystemError",
    "LarsTimeoutError",
    "NoExistError",
    "OverloadError",
    "timecost_ms",
]
