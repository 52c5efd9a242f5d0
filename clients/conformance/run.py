#!/usr/bin/env python3
"""The conformance runner of the lars clients (issue 14).

Starts a real lars-dns, lars-reporter and lars-agent over a temporary SQLite
store, adds routes for one fresh key per client, runs every
``clients/<lang>/driver.sh check ...`` against that agent, checks the report
counts each client sent in the store's ServerCallStatus table, and prints one
table: client x check (PASS / FAIL / SKIP).

    python3 clients/conformance/run.py                 # every client
    python3 clients/conformance/run.py --only rust,python
    python3 clients/conformance/run.py --bench 5       # speed, vs the rust client

Exit status: 0 when every check passed; 1 on any FAIL; under CI (env CI set,
not empty/0/false) a SKIP (driver exit 77: toolchain missing) is a failure
too; 2 when the services could not be started. Every process the runner
starts is stopped on the way out, also on failure and Ctrl-C.

Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
# LARS_CONFORMANCE_CLIENTS: another directory of <lang>/driver.sh (the runner's own tests).
CLIENTS_DIR = Path(os.environ.get("LARS_CONFORMANCE_CLIENTS") or ROOT / "clients")
# The table's column order, and the order clients run in.
CHECKS = ["noexist_then_host", "round_robin", "report", "get_route", "timeout", "bad_input"]
KNOWN_CLIENTS = ["rust", "cpp", "python", "go", "java"]
PORT_COUNT = 3
SKIP_EXIT = 77
# How long one driver may take (a first build of a C++/Go/Java client included).
DRIVER_TIMEOUT_S = 600.0
# How long the reporter's counts may take to reach the store.
REPORT_WAIT_S = 15.0
SERVICE_START_S = 20.0


class RunnerError(Exception):
    """The environment could not be set up (build, ports, services)."""


# ---------------------------------------------------------------- helpers


def ci_mode() -> bool:
    """CI is set and not empty / 0 / false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def log(msg: str) -> None:
    print(f"[run.py] {msg}", file=sys.stderr, flush=True)


def _varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def api_get_route_frame(modid: int, cmdid: int) -> bytes:
    """An API GetRouteRequest (msgid 7) datagram, for the readiness probe."""
    body = b""
    if modid:
        body += b"\x08" + _varint(modid)
    if cmdid:
        body += b"\x10" + _varint(cmdid)
    return struct.pack("<ii", 7, len(body)) + body


def ports_free(base: int, count: int) -> bool:
    """`base .. base+count-1` can be bound, TCP and UDP, on 127.0.0.1."""
    socks: List[socket.socket] = []
    try:
        for p in range(base, base + count):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


class PortPicker:
    """Hands out distinct runs of free ports (never the defaults 7778-8890)."""

    def __init__(self) -> None:
        self.taken: Set[int] = set()
        self.rng = random.Random()

    def pick(self, count: int) -> int:
        for _ in range(500):
            base = self.rng.randrange(20000, 60000 - count)
            run = set(range(base, base + count))
            if run & self.taken:
                continue
            if ports_free(base, count):
                self.taken |= run
                return base
        raise RunnerError(f"no run of {count} free ports found")


def wait_tcp(port: int, proc: "subprocess.Popen[bytes]", name: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunnerError(f"{name} exited with {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RunnerError(f"{name} did not listen on {port} within {SERVICE_START_S:.0f} s")


def wait_agent(base: int, proc: "subprocess.Popen[bytes]", deadline: float) -> None:
    """Every agent port answers an API GetRouteRequest (of key (0, i))."""
    for i in range(PORT_COUNT):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while True:
                if proc.poll() is not None:
                    raise RunnerError(f"lars-agent exited with {proc.returncode} at start")
                if time.monotonic() > deadline:
                    raise RunnerError(f"lars-agent did not answer on port {base + i}")
                try:
                    s.sendto(api_get_route_frame(0, i), ("127.0.0.1", base + i))
                    s.recvfrom(65535)
                    break
                except OSError:  # timeout, or ICMP refused before it binds
                    time.sleep(0.05)


# ---------------------------------------------------------------- model


@dataclass
class Key:
    modid: int
    cmdid: int
    hosts: List[Tuple[str, int]]

    @property
    def report_host(self) -> Tuple[str, int]:
        # Must be one of the key's hosts: the agent ignores reports of others.
        return self.hosts[0]


@dataclass
class Result:
    client: str
    status: Dict[str, str] = field(default_factory=dict)  # check -> PASS/FAIL/SKIP
    detail: Dict[str, str] = field(default_factory=dict)
    skipped: Optional[str] = None
    bench: Optional[float] = None


def key_for(index: int) -> Key:
    """A fresh key per client; the sums spread the clients over the shards."""
    modid = 14000 + index
    cmdid = 1 + index
    hosts = [(f"10.14.{index}.{h}", 9000 + h) for h in (1, 2, 3)]
    return Key(modid, cmdid, hosts)


def host_text(h: Tuple[str, int]) -> str:
    return f"{h[0]}:{h[1]}"


# ---------------------------------------------------------------- the cluster


class Cluster:
    """dns + reporter + agent over a temporary SQLite store; a context manager
    that stops every process it started and binds the stall ports."""

    def __init__(self, release: bool, keep: bool) -> None:
        self.profile = "release" if release else "debug"
        self.release = release
        self.keep = keep
        ports = PortPicker()
        self.dns_port = ports.pick(1)
        self.reporter_port = ports.pick(1)
        self.agent_base = ports.pick(PORT_COUNT)
        self.stall_base = ports.pick(PORT_COUNT)
        self.procs: List[Tuple[str, "subprocess.Popen[bytes]"]] = []
        self.stall_socks: List[socket.socket] = []
        # Last: nothing above can leave the directory behind.
        self.tmp = Path(tempfile.mkdtemp(prefix="lars-conformance-"))
        self.db = self.tmp / "lars.db"
        self.store_url = f"sqlite://{self.db}"

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bin(self, name: str) -> Path:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        return target / self.profile / name

    def build(self) -> None:
        cmd = ["cargo", "build", "-q", "-p", "lars-dns-bin", "-p", "lars-reporter-bin",
               "-p", "lars-agent-bin", "-p", "lars-cli"]
        if self.release:
            cmd.append("--release")
        log("building: " + " ".join(cmd))
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise RunnerError("cargo build failed")

    def add_routes(self, keys: Sequence[Key]) -> None:
        for k in keys:
            for h in k.hosts:
                cmd = [str(self.bin("lars")), "route", "add", str(k.modid), str(k.cmdid),
                       host_text(h), "--store", self.store_url]
                r = subprocess.run(cmd, cwd=self.tmp, capture_output=True, text=True)
                if r.returncode != 0:
                    raise RunnerError(f"lars route add failed: {r.stderr.strip()}")

    def write_confs(self) -> None:
        (self.tmp / "dns.conf").write_text(
            f"[reactor]\nip = 127.0.0.1\nport = {self.dns_port}\n"
            f"[store]\nurl = {self.store_url}\n"
            "[dns]\nversion_interval = 1\n")
        (self.tmp / "reporter.conf").write_text(
            f"[reactor]\nip = 127.0.0.1\nport = {self.reporter_port}\n"
            f"[store]\nurl = {self.store_url}\n"
            "[reporter]\nflush_interval = 1\n")
        (self.tmp / "agent.conf").write_text(
            f"[agent]\nip = 127.0.0.1\nbase_port = {self.agent_base}\nport_count = {PORT_COUNT}\n"
            f"report_interval = 1\nsnapshot_path = {self.tmp / 'routes.snapshot'}\n"
            f"[dnsserver]\nip = 127.0.0.1\nport = {self.dns_port}\n"
            f"[reporter]\nip = 127.0.0.1\nport = {self.reporter_port}\n")

    def spawn(self, name: str, conf: str) -> "subprocess.Popen[bytes]":
        out = open(self.tmp / f"{name}.log", "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        try:
            proc = subprocess.Popen([str(self.bin(name)), "-c", str(self.tmp / conf)],
                                    cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        finally:
            out.close()
        self.procs.append((name, proc))
        return proc

    def start(self, keys: Sequence[Key]) -> None:
        self.add_routes(keys)
        self.write_confs()
        deadline = time.monotonic() + SERVICE_START_S
        dns = self.spawn("lars-dns", "dns.conf")
        reporter = self.spawn("lars-reporter", "reporter.conf")
        wait_tcp(self.dns_port, dns, "lars-dns", deadline)
        wait_tcp(self.reporter_port, reporter, "lars-reporter", deadline)
        agent = self.spawn("lars-agent", "agent.conf")
        wait_agent(self.agent_base, agent, deadline)
        # The stall ports: bound, never read, never answered.
        for p in range(self.stall_base, self.stall_base + PORT_COUNT):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", p))
            self.stall_socks.append(s)
        log(f"services up in {self.tmp} (dns {self.dns_port}, reporter {self.reporter_port}, "
            f"agent {self.agent_base}..{self.agent_base + PORT_COUNT - 1}, "
            f"stall {self.stall_base})")

    def check_alive(self) -> Optional[str]:
        for name, p in self.procs:
            if p.poll() is not None:
                return f"{name} exited with {p.returncode} (log: {self.tmp / (name + '.log')})"
        return None

    def stop(self) -> None:
        for s in self.stall_socks:
            s.close()
        self.stall_socks.clear()
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM; killing it")
                p.kill()
                p.wait()
        self.procs.clear()
        if self.keep:
            log(f"kept {self.tmp}")
        else:
            for f in sorted(self.tmp.glob("*"), reverse=True):
                if f.is_file():
                    f.unlink()
            try:
                self.tmp.rmdir()
            except OSError:
                log(f"left {self.tmp} (not empty)")

    def report_counts(self, key: Key) -> Tuple[int, int]:
        """(succ, err) the store holds for the key's report host, summed over callers."""
        ip_text, port = key.report_host
        ip = int(ipaddress.IPv4Address(ip_text))
        signed = ip - (1 << 32) if ip >= 1 << 31 else ip
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2)
        try:
            row = con.execute(
                "SELECT COALESCE(SUM(succ_cnt), 0), COALESCE(SUM(err_cnt), 0) "
                "FROM ServerCallStatus WHERE modid = ? AND cmdid = ? AND ip IN (?, ?) AND port = ?",
                (key.modid, key.cmdid, ip, signed, port)).fetchone()
        finally:
            con.close()
        return int(row[0]), int(row[1])


# ---------------------------------------------------------------- drivers


def discover(only: Optional[List[str]]) -> List[str]:
    found = sorted(p.parent.name for p in CLIENTS_DIR.glob("*/driver.sh"))
    order = {name: i for i, name in enumerate(KNOWN_CLIENTS)}
    found.sort(key=lambda n: (order.get(n, len(order)), n))
    if only is None:
        return found
    missing = [n for n in only if n not in found]
    if missing:
        raise RunnerError(f"no clients/<lang>/driver.sh for: {', '.join(missing)}")
    return [n for n in found if n in only]


def run_driver(client: str, args: List[str], timeout: float) -> Tuple[int, str]:
    """Runs clients/<client>/driver.sh in its own process group (killed whole
    on timeout or Ctrl-C); returns (exit code, stdout)."""
    cmd = [str(CLIENTS_DIR / client / "driver.sh")] + args
    log(f"{client}: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return -1, (out or "") + f"\n(driver killed after {timeout:.0f} s)"
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise


def _kill_group(proc: "subprocess.Popen[str]") -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def parse_checks(result: Result, code: int, out: str) -> None:
    for line in out.splitlines():
        parts = line.strip().split(" ", 3)
        if len(parts) >= 3 and parts[0] == "CHECK" and parts[2] in ("PASS", "FAIL"):
            result.status[parts[1]] = parts[2]
            result.detail[parts[1]] = parts[3] if len(parts) > 3 else ""
    for c in CHECKS:
        if c not in result.status:
            result.status[c] = "FAIL"
            result.detail[c] = f"no CHECK line (driver exit {code})"
    if code != 0 and all(result.status[c] == "PASS" for c in CHECKS):
        result.status["bad_input"] = "FAIL"
        result.detail["bad_input"] = f"every check passed but the driver exited {code}"


def check_args(cluster: Cluster, key: Key, timeout_ms: int) -> List[str]:
    return ["check", "--base-port", str(cluster.agent_base), "--ports", str(PORT_COUNT),
            "--timeout-ms", str(timeout_ms), "--modid", str(key.modid),
            "--cmdid", str(key.cmdid), "--hosts", ",".join(host_text(h) for h in key.hosts),
            "--report-host", host_text(key.report_host),
            "--stall-port", str(cluster.stall_base)]


def verify_reports(cluster: Cluster, results: List[Result], keys: Dict[str, Key],
                   wait_s: float) -> None:
    """The `report` check passes only once the store holds succ >= 5 and err
    >= 2 for the report host (the agent batches every report_interval, the
    reporter writes every flush_interval)."""
    pending = [r for r in results if r.status.get("report") == "PASS"]
    deadline = time.monotonic() + wait_s
    counts: Dict[str, Tuple[int, int]] = {}
    while pending:
        for r in list(pending):
            try:
                counts[r.client] = cluster.report_counts(keys[r.client])
            except sqlite3.Error as e:
                counts[r.client] = (-1, -1)
                log(f"reading the store: {e}")
                continue
            succ, err = counts[r.client]
            if succ >= 5 and err >= 2:
                r.detail["report"] += f"; store: succ={succ} err={err}"
                pending.remove(r)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    for r in pending:
        succ, err = counts.get(r.client, (0, 0))
        r.status["report"] = "FAIL"
        r.detail["report"] = (f"store holds succ={succ} err={err} for "
                              f"{host_text(keys[r.client].report_host)} after "
                              f"{wait_s:.0f} s, want succ>=5 err>=2")


def print_table(results: List[Result]) -> None:
    width = max([len("client")] + [len(r.client) for r in results])
    print("client".ljust(width) + "  " + "  ".join(CHECKS))
    for r in results:
        cells = []
        for c in CHECKS:
            cells.append(("SKIP" if r.skipped else r.status.get(c, "-")).ljust(len(c)))
        print(r.client.ljust(width) + "  " + "  ".join(cells).rstrip())
    for r in results:
        if r.skipped:
            print(f"{r.client}: SKIP {r.skipped}")
            continue
        for c in CHECKS:
            if r.status.get(c) != "PASS":
                print(f"{r.client} {c}: {r.detail.get(c, '')}")


def run_checks(cluster: Cluster, clients: List[str], keys: Dict[str, Key],
               timeout_ms: int, report_wait_s: float) -> List[Result]:
    results = []
    for client in clients:
        r = Result(client)
        code, out = run_driver(client, check_args(cluster, keys[client], timeout_ms),
                               DRIVER_TIMEOUT_S)
        sys.stderr.write(out)
        if code == SKIP_EXIT:
            line = next((ln for ln in out.splitlines() if ln.startswith("SKIP")), "SKIP")
            r.skipped = line[4:].strip() or "toolchain missing"
        else:
            parse_checks(r, code, out)
        dead = cluster.check_alive()
        if dead:
            raise RunnerError(f"after the {client} driver: {dead}")
        results.append(r)
    verify_reports(cluster, results, keys, report_wait_s)
    return results


def run_bench(cluster: Cluster, clients: List[str], keys: Dict[str, Key],
              timeout_ms: int, seconds: int) -> List[Result]:
    results = []
    for client in clients:
        r = Result(client)
        k = keys[client]
        args = ["bench", "--base-port", str(cluster.agent_base), "--ports", str(PORT_COUNT),
                "--timeout-ms", str(timeout_ms), "--modid", str(k.modid),
                "--cmdid", str(k.cmdid), "--seconds", str(seconds)]
        code, out = run_driver(client, args, DRIVER_TIMEOUT_S + seconds)
        if code == SKIP_EXIT:
            r.skipped = "toolchain missing"
        else:
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[:2] == ["BENCH", "ops_per_sec"]:
                    try:
                        r.bench = float(parts[2])
                    except ValueError:
                        pass
            if r.bench is None:
                r.detail["bench"] = f"no BENCH line (driver exit {code})"
        results.append(r)
    rust = next((r.bench for r in results if r.client == "rust" and r.bench), None)
    print(f"{'client':8}  {'ops/s':>10}  vs rust")
    for r in results:
        if r.skipped:
            print(f"{r.client:8}  {'SKIP':>10}  {r.skipped}")
        elif r.bench is None:
            print(f"{r.client:8}  {'FAIL':>10}  {r.detail['bench']}")
        else:
            ratio = f"{r.bench / rust:.2f}" if rust else "-"
            print(f"{r.client:8}  {r.bench:>10.0f}  {ratio}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated clients to run (default: every "
                   "clients/*/driver.sh)")
    p.add_argument("--bench", type=int, metavar="SECONDS",
                   help="run each driver's bench mode for SECONDS instead of the checks")
    p.add_argument("--timeout-ms", type=int, default=50)
    p.add_argument("--report-wait", type=float, default=REPORT_WAIT_S, metavar="SECONDS",
                   help="how long the report counts may take to reach the store (default 15)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    a = p.parse_args(argv)
    if a.bench is not None and a.bench < 1:
        p.error("--bench needs at least 1 second")
    only = [s.strip() for s in a.only.split(",") if s.strip()] if a.only else None

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process.
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    try:
        clients = discover(only)
        if not clients:
            raise RunnerError("no clients/*/driver.sh found")
        keys = {c: key_for(i) for i, c in enumerate(clients)}
        with Cluster(release=a.bench is not None, keep=a.keep) as cluster:
            if not a.no_build:
                cluster.build()
            cluster.start(list(keys.values()))
            if a.bench is not None:
                results = run_bench(cluster, clients, keys, a.timeout_ms, a.bench)
                failed = any(r.bench is None and not r.skipped for r in results)
                skipped = any(r.skipped for r in results)
            else:
                results = run_checks(cluster, clients, keys, a.timeout_ms, a.report_wait)
                print_table(results)
                failed = any(s == "FAIL" for r in results for s in r.status.values())
                skipped = any(r.skipped for r in results)
    except RunnerError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; every started process was stopped")
        return 130
    if failed:
        return 1
    if skipped and ci_mode():
        log("a client was skipped and CI is set: failing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
