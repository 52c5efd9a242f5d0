#!/usr/bin/env python3
"""The Python client's conformance driver (issue 14); run by driver.sh with
the command line every lars client driver shares:

    check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \\
          --hosts IP:PORT,... --report-host IP:PORT --stall-port S
    bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N

``check`` prints one ``CHECK <name> PASS|FAIL <detail>`` line per check and
exits 0 only if all passed; ``bench`` prints ``BENCH ops_per_sec <n>``.
Exit code 2: bad command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Callable, List, Optional, Set, Tuple

from lars_client import (
    LarsClient,
    LarsError,
    LarsTimeoutError,
    NoExistError,
)

Host = Tuple[str, int]


class CheckFailed(Exception):
    pass


def parse_host(text: str) -> Host:
    ip, sep, port = text.strip().rpartition(":")
    if not sep or not ip:
        raise argparse.ArgumentTypeError(f"{text!r} is not ip:port")
    try:
        return ip, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ip:port") from None


def parse_hosts(text: str) -> List[Host]:
    return [parse_host(h) for h in text.split(",") if h.strip()]


def noexist_then_host(c: LarsClient, a: argparse.Namespace) -> str:
    try:
        h = c.get_host(a.modid, a.cmdid)
        raise CheckFailed(f"first get_host answered {h}, expected NOEXIST")
    except NoExistError:
        pass
    except LarsError as e:
        raise CheckFailed(f"first get_host: {type(e).__name__}: {e}, expected NOEXIST") from e
    try:
        hosts = c.reg_init(a.modid, a.cmdid)
    except LarsError as e:
        raise CheckFailed(f"reg_init after NOEXIST: {type(e).__name__}: {e}") from e
    try:
        host = c.get_host(a.modid, a.cmdid)
    except LarsError as e:
        raise CheckFailed(f"get_host after reg_init: {type(e).__name__}: {e}") from e
    if host not in a.hosts:
        raise CheckFailed(f"get_host answered {host}, not one of the key's hosts")
    return f"NOEXIST, then reg_init saw {len(hosts)} hosts, then {host[0]}:{host[1]}"


def round_robin(c: LarsClient, a: argparse.Namespace) -> str:
    counts: "Counter[Host]" = Counter()
    for i in range(30):
        try:
            ip, port = c.get_host(a.modid, a.cmdid)
            c.report(a.modid, a.cmdid, ip, port, True, latency_ms=1)
        except LarsError as e:
            raise CheckFailed(f"call #{i}: {type(e).__name__}: {e}") from e
        counts[(ip, port)] += 1
    detail = " ".join(sorted(f"{ip}:{port}={counts[(ip, port)]}" for ip, port in a.hosts))
    strangers = [h for h in counts if h not in a.hosts]
    if strangers:
        raise CheckFailed(f"{strangers[0]} is not a host of the key ({detail})")
    if any(counts[h] < 6 for h in a.hosts):
        raise CheckFailed(f"a host got fewer than 6 of 30 picks: {detail}")
    return detail


def report(c: LarsClient, a: argparse.Namespace) -> str:
    ip, port = a.report_host
    try:
        for ok in [True] * 5 + [False] * 2:
            c.report(a.modid, a.cmdid, ip, port, ok, latency_ms=3)
    except LarsError as e:
        raise CheckFailed(f"report: {type(e).__name__}: {e}") from e
    return f"sent 5 successes and 2 failures for {ip}:{port}, 3 ms"


def get_route(c: LarsClient, a: argparse.Namespace) -> str:
    try:
        got = set(c.get_route(a.modid, a.cmdid))
    except LarsError as e:
        raise CheckFailed(f"get_route: {type(e).__name__}: {e}") from e
    want = set(a.hosts)

    def show(s: Set[Host]) -> str:
        return ",".join(f"{ip}:{port}" for ip, port in sorted(s))
    if got != want:
        raise CheckFailed(f"got {show(got)} want {show(want)}")
    return show(got)


def timeout(a: argparse.Namespace) -> str:
    limit = a.timeout_ms / 1000.0
    with LarsClient(base_port=a.stall_port, port_count=a.ports, timeout=limit) as c:
        start = time.monotonic()
        try:
            h = c.get_host(a.modid, a.cmdid)
            raise CheckFailed(f"a stalled agent answered {h}")
        except LarsTimeoutError:
            took = time.monotonic() - start
        except LarsError as e:
            raise CheckFailed(f"expected LarsTimeoutError, got {type(e).__name__}: {e}") from e
    if took > 2 * limit:
        raise CheckFailed(f"LarsTimeoutError only after {took * 1000:.0f} ms, "
                          f"over 2x {a.timeout_ms} ms")
    return f"LarsTimeoutError after {took * 1000:.0f} ms (timeout {a.timeout_ms} ms)"


def bad_input(c: LarsClient, a: argparse.Namespace) -> str:
    ip, port = a.hosts[0]
    cases: List[Tuple[str, Callable[[], object]]] = [
        ("get_host(-1, C)", lambda: c.get_host(-1, a.cmdid)),
        ("get_host(M, -1)", lambda: c.get_host(a.modid, -1)),
        ("get_route(-1, C)", lambda: c.get_route(-1, a.cmdid)),
        ("report(ip='300.1.2.3')", lambda: c.report(a.modid, a.cmdid, "300.1.2.3", port, True)),
        ("report(ip='10.0.0')", lambda: c.report(a.modid, a.cmdid, "10.0.0", port, True)),
        ("report(port=70000)", lambda: c.report(a.modid, a.cmdid, ip, 70000, True)),
    ]
    limit = a.timeout_ms / 1000.0
    for name, call in cases:
        start = time.monotonic()
        try:
            call()
        except ValueError:
            pass
        except Exception as e:  # noqa: BLE001 - any other outcome fails the check
            raise CheckFailed(f"{name} raised {type(e).__name__}: {e}, expected ValueError") from e
        else:
            raise CheckFailed(f"{name} was accepted")
        took = time.monotonic() - start
        if took >= limit:
            raise CheckFailed(f"{name} took {took * 1000:.0f} ms: a network wait")
    return f"{len(cases)} bad calls raised ValueError at once"


def check(a: argparse.Namespace) -> int:
    for name in ("hosts", "report_host", "stall_port"):
        if getattr(a, name) is None:
            print(f"conformance_driver: check needs --{name.replace('_', '-')}", file=sys.stderr)
            return 2
    all_passed = True

    def emit(name: str, run: Callable[[], str]) -> None:
        nonlocal all_passed
        try:
            print(f"CHECK {name} PASS {run()}", flush=True)
        except CheckFailed as e:
            all_passed = False
            print(f"CHECK {name} FAIL {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - a driver bug is a failed check, not a crash
            all_passed = False
            print(f"CHECK {name} FAIL unexpected {type(e).__name__}: {e}", flush=True)

    client: Optional[LarsClient] = None
    try:
        client = LarsClient(base_port=a.base_port, port_count=a.ports,
                            timeout=a.timeout_ms / 1000.0)
    except (ValueError, LarsError) as e:
        err = f"cannot create the client: {e}"

        def fail() -> str:
            raise CheckFailed(err)
        for name in ("noexist_then_host", "round_robin", "report", "get_route"):
            emit(name, fail)
        emit("timeout", lambda: timeout(a))
        emit("bad_input", fail)
        return 1
    with client as c:
        emit("noexist_then_host", lambda: noexist_then_host(c, a))
        emit("round_robin", lambda: round_robin(c, a))
        emit("report", lambda: report(c, a))
        emit("get_route", lambda: get_route(c, a))
        emit("timeout", lambda: timeout(a))
        emit("bad_input", lambda: bad_input(c, a))
    return 0 if all_passed else 1


def bench(a: argparse.Namespace) -> int:
    with LarsClient(base_port=a.base_port, port_count=a.ports,
                    timeout=a.timeout_ms / 1000.0) as c:
        try:
            c.reg_init(a.modid, a.cmdid)
        except LarsError as e:
            print(f"conformance_driver bench: reg_init: {e}", file=sys.stderr)
            return 1
        ops = errors = 0
        start = time.monotonic()
        end = start + max(1, a.seconds)
        while time.monotonic() < end:
            try:
                ip, port = c.get_host(a.modid, a.cmdid)
                c.report(a.modid, a.cmdid, ip, port, True)
            except LarsError:
                errors += 1
            ops += 1
        rate = ops / (time.monotonic() - start)
    if errors:
        print(f"conformance_driver bench: {errors} of {ops} operations failed", file=sys.stderr)
    print(f"BENCH ops_per_sec {rate:.0f}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="driver.sh")
    p.add_argument("mode", choices=["check", "bench"])
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--ports", type=int, default=3)
    p.add_argument("--timeout-ms", type=int, default=50)
    p.add_argument("--modid", type=int, required=True)
    p.add_argument("--cmdid", type=int, required=True)
    p.add_argument("--hosts", type=parse_hosts)
    p.add_argument("--report-host", type=parse_host)
    p.add_argument("--stall-port", type=int)
    p.add_argument("--seconds", type=int, default=5)
    a = p.parse_args(argv)
    return check(a) if a.mode == "check" else bench(a)


if __name__ == "__main__":
    sys.exit(main())
