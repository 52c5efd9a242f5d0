"""Tests of the conformance runner: its verdicts on drivers that skip, lie,
crash or hang, and that it stops every process it started. Needs the debug
binaries (`cargo build -p lars-dns-bin -p lars-reporter-bin -p lars-agent-bin
-p lars-cli`); clients/python/ci.sh builds them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

RUN = Path(__file__).resolve().parents[1] / "run.py"
ROOT = RUN.parents[2]
sys.path.insert(0, str(RUN.parent))
import run  # noqa: E402

ALL_PASS = "\n".join(f"echo 'CHECK {c} PASS fake'" for c in run.CHECKS)

DRIVERS = {
    # Passes every check by saying so, but sends no report: the store check fails it.
    "liar": ALL_PASS,
    "skipper": "echo 'SKIP no toolchain here'; exit 77",
    "crasher": "echo 'CHECK noexist_then_host PASS x'; exit 3",
    # The real Rust driver, through a wrapper (the arguments pass through).
    "rusty": f'exec "{ROOT}/clients/rust/driver.sh" "$@"',
    # Hangs (in a child process) until the runner is stopped.
    "sleeper": 'sleep 120 & echo $! > "$(dirname "$0")/pid"; wait',
}


def make_clients(tmp: Path, names: List[str]) -> Path:
    for n in names:
        d = tmp / n
        d.mkdir()
        f = d / "driver.sh"
        f.write_text("#!/usr/bin/env bash\n" + DRIVERS[n] + "\n")
        f.chmod(0o755)
    return tmp


def run_runner(clients: Path, *args: str, ci: str = "") -> Tuple[int, str, str]:
    env: Dict[str, str] = dict(os.environ, LARS_CONFORMANCE_CLIENTS=str(clients), CI=ci)
    p = subprocess.run([sys.executable, str(RUN), "--no-build", "--report-wait", "3", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def row(stdout: str, client: str) -> List[str]:
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == client:
            return parts[1:]
    raise AssertionError(f"no row for {client} in:\n{stdout}")


def services_ports(stderr: str) -> List[int]:
    for line in stderr.splitlines():
        if "services up" in line:
            # "... (dns D, reporter R, agent A..B, stall S)"
            inner = line.split("(", 1)[1].rstrip(")")
            f = dict(part.strip().split(" ", 1) for part in inner.split(","))
            a, b = f["agent"].split("..")
            return [int(f["dns"]), int(f["reporter"]), int(a), int(b), int(f["stall"])]
    raise AssertionError(f"no 'services up' line in:\n{stderr}")


def test_verdicts_and_cleanup(tmp_path):
    clients = make_clients(tmp_path, ["rusty", "liar", "crasher"])
    code, out, err = run_runner(clients)
    assert code == 1, out + err
    assert row(out, "rusty") == ["PASS"] * 6, out + err
    liar = row(out, "liar")
    assert liar[run.CHECKS.index("report")] == "FAIL", out
    assert "store holds succ=0 err=0" in out
    assert row(out, "crasher") == ["PASS"] + ["FAIL"] * 5, out
    # Every process stopped: the service ports are free again.
    for port in services_ports(err):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("ci,want", [("", 0), ("0", 0), ("false", 0), ("1", 1), ("true", 1)])
def test_a_skip_fails_only_under_ci(tmp_path, ci, want):
    clients = make_clients(tmp_path, ["skipper"])
    code, out, err = run_runner(clients, ci=ci)
    assert code == want, out + err
    assert row(out, "skipper") == ["SKIP"] * 6
    assert "no toolchain here" in out


def test_only_names_a_missing_client(tmp_path):
    clients = make_clients(tmp_path, ["skipper"])
    code, _out, err = run_runner(clients, "--only", "skipper,nosuch")
    assert code == 2 and "nosuch" in err


def test_sigterm_stops_the_services_and_the_driver(tmp_path):
    clients = make_clients(tmp_path, ["sleeper"])
    env = dict(os.environ, LARS_CONFORMANCE_CLIENTS=str(clients), CI="")
    runner = subprocess.Popen([sys.executable, str(RUN), "--no-build"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = clients / "sleeper" / "pid"
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        sleeper = int(pid_file.read_text())
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130, out + err
    # The driver's child is gone (killed with the driver's process group).
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{sleeper}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{sleeper}")
    for port in services_ports(err):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))
