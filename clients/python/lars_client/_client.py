"""The blocking UDP client of the lars agent (the Python port of
lars-client/src/client.rs)."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

from . import _wire
from .errors import (
    LarsIOError,
    LarsSystemError,
    LarsTimeoutError,
    NoExistError,
    OverloadError,
)

RET_SUCC = 0
RET_OVERLOAD = 1
RET_SYSTEM_ERROR = 2
RET_NOEXIST = 3

DEFAULT_BASE_PORT = 8888
DEFAULT_PORT_COUNT = 3
DEFAULT_TIMEOUT = 0.05
#: How many times :meth:`LarsClient.reg_init` asks for the route (the original's 3).
REG_INIT_ATTEMPTS = 3
#: Seconds :meth:`LarsClient.reg_init` waits between attempts (the original's 50 ms).
REG_INIT_WAIT = 0.05

_log = logging.getLogger("lars_client")

_MAX_ID = 0xFFFFFFFF
_MAX_DATAGRAM = 65535

Host = Tuple[str, int]
#: The counters of :meth:`LarsClient.stats`.
STAT_NAMES = ("requests", "timeouts", "discarded", "io_errors", "reports", "bad_arguments")
_T = TypeVar("_T")


def _check_id(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an int, not {type(v).__name__}")
    if not 0 <= v <= _MAX_ID:
        raise ValueError(f"{name} {v} is out of range 0..{_MAX_ID}")
    return v


def _check_ip(ip: object) -> int:
    if isinstance(ip, ipaddress.IPv4Address):
        return int(ip)
    if not isinstance(ip, str):
        raise ValueError(f"ip must be a dotted-quad str, not {type(ip).__name__}")
    return _parse_ip(ip)


# Parsing is the costliest step of a report; the hosts of an application are few.
@functools.lru_cache(maxsize=4096)
def _parse_ip(ip: str) -> int:
    try:
        return int(ipaddress.IPv4Address(ip))
    except ipaddress.AddressValueError as e:
        raise ValueError(f"ip {ip!r} is not an IPv4 address: {e}") from None


def _check_port(name: str, v: object, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an int, not {type(v).__name__}")
    if not low <= v <= 65535:
        raise ValueError(f"{name} {v} is out of range {low}..65535")
    return v


def _retcode(v: object) -> int:
    if isinstance(v, bool):
        return 0 if v else 1
    if isinstance(v, int):
        if not -(1 << 31) <= v < 1 << 31:
            raise ValueError(f"retcode {v} does not fit in an int32")
        return v
    raise ValueError(f"success_or_retcode must be a bool or an int, not {type(v).__name__}")


@functools.lru_cache(maxsize=4096)
def _ip_text(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip & 0xFFFFFFFF))


def timecost_ms(latency_ms: Optional[float]) -> int:
    """The ``ReportRequest.timecost`` of a call that took ``latency_ms``:
    whole milliseconds, at least 1 for a known latency (0 on the wire means
    "unknown"), saturating at 2**32-1; None is 0."""
    if latency_ms is None:
        return 0
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)):
        raise ValueError(f"latency_ms must be a number or None, not {type(latency_ms).__name__}")
    if math.isnan(latency_ms) or latency_ms < 0:
        raise ValueError(f"latency_ms {latency_ms} must be >= 0")
    if math.isinf(latency_ms):
        return _MAX_ID
    return max(1, min(int(latency_ms), _MAX_ID))


class _AgentPort:
    """One connected UDP socket to one agent port, and the lock held from the
    send of a request until its reply (or timeout)."""

    def __init__(self, addr: Tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.connect(addr)
        except OSError:
            self.sock.close()
            raise
        self.lock = threading.Lock()


class LarsClient:
    """A connection to the local lars agent: one connected UDP socket per
    agent port; a request for ``(modid, cmdid)`` goes to port
    ``base_port + (modid + cmdid) % port_count``.

    Every request waits at most ``timeout`` seconds for its reply (default
    50 ms) and raises :class:`LarsTimeoutError` after that. Replies are
    matched by sequence number (get_host) or key (get_route); late replies
    to timed-out requests and foreign datagrams are discarded.

    Thread-safety: a client may be shared by threads. Each agent port has a
    lock held from a request's send until its reply or timeout, so a thread
    never reads another's reply; requests to the same port then wait for each
    other. For throughput give each thread its own client (three sockets).
    :meth:`report` only sends and never waits for the lock.

    Bad arguments raise :class:`ValueError` at once, before any network I/O.
    """

    def __init__(self, agent_ip: str = "127.0.0.1", base_port: int = DEFAULT_BASE_PORT,
                 timeout: float = DEFAULT_TIMEOUT, port_count: int = DEFAULT_PORT_COUNT) -> None:
        ip = _ip_text(_check_ip(agent_ip))
        _check_port("base_port", base_port)
        if isinstance(port_count, bool) or not isinstance(port_count, int) or port_count < 1:
            raise ValueError(f"port_count must be an int >= 1, not {port_count!r}")
        if base_port + port_count - 1 > 65535:
            raise ValueError(f"agent ports {base_port}..{base_port + port_count - 1} "
                             "do not fit in 1..65535")
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
        self._timeout = float(timeout)
        self._agent_ip = ip
        self._base_port = base_port
        self._ports: List[_AgentPort] = []
        try:
            for i in range(port_count):
                self._ports.append(_AgentPort((ip, base_port + i)))
        except OSError as e:
            self.close()
            raise LarsIOError(f"cannot open the agent sockets: {e}") from e
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stats: Dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Closes the sockets; the client is unusable afterwards."""
        for p in self._ports:
            p.sock.close()

    def __enter__(self) -> "LarsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LarsClient(agent_ip={self._agent_ip!r}, base_port={self._base_port}, "
                f"timeout={self._timeout}, port_count={len(self._ports)})")

    @property
    def timeout(self) -> float:
        """The receive timeout of every request, in seconds."""
        return self._timeout

    def stats(self) -> Dict[str, int]:
        """Counters since the client was created: ``requests`` (get_host and
        get_route sent), ``timeouts``, ``discarded`` (late, foreign or
        malformed datagrams dropped while waiting for a reply), ``io_errors``,
        ``reports`` sent, ``bad_arguments`` (calls refused with ValueError)."""
        with self._seq_lock:
            return dict(self._stats)

    def _bump(self, name: str) -> None:
        with self._seq_lock:
            self._stats[name] += 1

    def _checked(self, check: Callable[[], _T]) -> _T:
        try:
            return check()
        except ValueError:
            self._bump("bad_arguments")
            raise

    def agent_port(self, modid: int, cmdid: int) -> int:
        """The agent UDP port serving ``(modid, cmdid)``."""
        return self._base_port + self._index(modid, cmdid)

    # ------------------------------------------------------------ the API

    def get_host(self, modid: int, cmdid: int) -> Host:
        """Asks the agent for one host of ``(modid, cmdid)``: ``(ip, port)``.

        Raises :class:`NoExistError` (first request of a key: the agent
        starts pulling it; see :meth:`reg_init`), :class:`OverloadError`,
        :class:`LarsSystemError`, :class:`LarsTimeoutError`,
        :class:`LarsIOError`; :class:`ValueError` for a bad id.
        """
        self._checked(lambda: (_check_id("modid", modid), _check_id("cmdid", cmdid)))
        with self._seq_lock:
            seq = self._seq
            self._seq = (self._seq + 1) & _MAX_ID
        m, c = _wire.to_int32(modid), _wire.to_int32(cmdid)
        req = _wire.get_host_request(seq, modid, cmdid)

        def accept(msgid: int, body: bytes) -> Optional[Tuple[int, Optional[Tuple[int, int]]]]:
            if msgid != _wire.GET_HOST_RESPONSE:
                return None
            r_seq, r_m, r_c, retcode, host = _wire.get_host_response(body)
            if (r_seq, r_m, r_c) != (seq, m, c):
                return None
            return retcode, host

        retcode, host = self._request(modid, cmdid, req, accept)
        if retcode == RET_SUCC:
            if host is None or not 0 < host[1] <= 65535:
                raise LarsSystemError("the agent answered success without a valid host",
                                      retcode)
            return _ip_text(host[0]), host[1]
        if retcode == RET_OVERLOAD:
            raise OverloadError("every host of the key is overloaded", retcode)
        if retcode == RET_NOEXIST:
            raise NoExistError("no host exists for this key (yet)", retcode)
        if retcode == RET_SYSTEM_ERROR:
            raise LarsSystemError("agent system error", retcode)
        raise LarsSystemError(f"unknown retcode {retcode} from the agent", retcode)

    def get_route(self, modid: int, cmdid: int) -> List[Host]:
        """Every host of ``(modid, cmdid)``. An empty list is a valid answer
        (the agent does not know the key yet and starts pulling it).

        Raises :class:`LarsTimeoutError`, :class:`LarsIOError`;
        :class:`ValueError` for a bad id.
        """
        self._checked(lambda: (_check_id("modid", modid), _check_id("cmdid", cmdid)))
        m, c = _wire.to_int32(modid), _wire.to_int32(cmdid)
        req = _wire.get_route_request(modid, cmdid)

        def accept(msgid: int, body: bytes) -> Optional[List[Tuple[int, int]]]:
            if msgid != _wire.API_GET_ROUTE_RESPONSE:
                return None
            r_m, r_c, hosts = _wire.get_route_response(body)
            return hosts if (r_m, r_c) == (m, c) else None

        hosts = self._request(modid, cmdid, req, accept)
        return [(_ip_text(ip), port) for ip, port in hosts if 0 < port <= 65535]

    def reg_init(self, modid: int, cmdid: int) -> List[Host]:
        """Registers interest in ``(modid, cmdid)`` before first use, like the
        original: asks for the route up to 3 times, 50 ms apart after an
        empty answer or a timeout, and returns the hosts.

        Raises :class:`NoExistError` if the route stays empty (or
        :class:`LarsTimeoutError` if the last attempt timed out);
        :class:`LarsIOError` at once; :class:`ValueError` for a bad id.
        """
        last: Exception = NoExistError("no host exists for this key after "
                                       f"{REG_INIT_ATTEMPTS} attempts", RET_NOEXIST)
        for attempt in range(1, REG_INIT_ATTEMPTS + 1):
            try:
                hosts = self.get_route(modid, cmdid)
                if hosts:
                    return hosts
                last = NoExistError("no host exists for this key after "
                                    f"{attempt} attempts", RET_NOEXIST)
            except LarsTimeoutError as e:
                last = e
            if attempt < REG_INIT_ATTEMPTS:
                time.sleep(REG_INIT_WAIT)
        raise last

    def report(self, modid: int, cmdid: int, ip: str, port: int,
               success_or_retcode: Union[bool, int], latency_ms: Optional[float] = None) -> None:
        """Tells the agent how a call to ``ip:port`` went; nothing is awaited
        (the agent never replies).

        ``success_or_retcode``: ``True`` (success, retcode 0) or ``False``
        (failure, retcode 1), or the call's own int retcode (0 is success,
        anything else a failure). ``latency_ms``: how long the call took;
        sent in whole milliseconds, at least 1 (0 on the wire means
        "unknown", which ``None`` sends, like the original clients).

        Raises :class:`LarsIOError`; :class:`ValueError` for a bad argument.
        """
        self._checked(lambda: (_check_id("modid", modid), _check_id("cmdid", cmdid)))
        ip_int = self._checked(lambda: _check_ip(ip))
        self._checked(lambda: _check_port("port", port))
        retcode = self._checked(lambda: _retcode(success_or_retcode))
        timecost = self._checked(lambda: timecost_ms(latency_ms))
        req = _wire.report_request(modid, cmdid, ip_int, port, retcode, timecost)
        self._send(self._ports[self._index(modid, cmdid)].sock, req)
        self._bump("reports")

    # ------------------------------------------------------------ internals

    def _index(self, modid: int, cmdid: int) -> int:
        return (modid + cmdid) % len(self._ports)

    def _send(self, sock: socket.socket, datagram: bytes) -> None:
        # A connected UDP socket reports an earlier ICMP "port unreachable" on
        # its next call; that stale error is retried once.
        try:
            try:
                sock.send(datagram)
            except ConnectionRefusedError:
                sock.send(datagram)
        except OSError as e:
            self._bump("io_errors")
            raise LarsIOError(f"socket error talking to the agent: {e}") from e

    def _request(self, modid: int, cmdid: int, req: bytes,
                 accept: Callable[[int, bytes], Optional[_T]]) -> _T:
        """Sends ``req`` and waits until ``accept(msgid, body)`` returns
        something other than None for a reply, discarding everything else,
        until the timeout."""
        port = self._ports[self._index(modid, cmdid)]
        with port.lock:
            deadline = time.monotonic() + self._timeout
            self._send(port.sock, req)
            self._bump("requests")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                port.sock.settimeout(left)
                try:
                    datagram = port.sock.recv(_MAX_DATAGRAM)
                except socket.timeout:
                    break
                except OSError as e:
                    self._bump("io_errors")
                    raise LarsIOError(f"socket error talking to the agent: {e}") from e
                try:
                    msgid, body = _wire.unframe(datagram)
                    answer = accept(msgid, body)
                except _wire.DecodeError as e:
                    self._bump("discarded")
                    _log.debug("discarding a malformed datagram of %d bytes: %s",
                               len(datagram), e)
                    continue
                if answer is not None:
                    return answer
                self._bump("discarded")
                _log.debug("discarding a late or foreign datagram of %d bytes", len(datagram))
        self._bump("timeouts")
        raise LarsTimeoutError(f"no reply from the agent within {self._timeout * 1000:.0f} ms")
