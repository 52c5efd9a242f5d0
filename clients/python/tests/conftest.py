"""Fixtures: a real lars-agent started by the tests (serving keys from a
route snapshot, no dns), and fake agents on loopback UDP sockets."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
ROOT = HERE.parents[2]

from lars_client import LarsClient  # noqa: E402

# Keys the test agent serves from its snapshot.
KEY_A = (1401, 1)
HOSTS_A = [("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)]
# High-bit addresses: negative int32 on the wire.
KEY_B = (1402, 7)
HOSTS_B = [("192.168.1.177", 8080), ("200.1.2.3", 443)]


def free_udp_run(count: int) -> int:
    """The first of `count` consecutive ports free for UDP and TCP on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535 or 8888 - count < base <= 8890:
            continue
        socks = []
        try:
            for p in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def agent_binary() -> Path:
    env = os.environ.get("LARS_AGENT_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "lars-agent"


class Agent:
    def __init__(self, base_port: int, http_port: int, proc: subprocess.Popen) -> None:
        self.base_port = base_port
        self.http_port = http_port
        self.proc = proc

    def client(self, timeout: float = 0.5) -> LarsClient:
        return LarsClient(base_port=self.base_port, timeout=timeout)

    def routes(self, modid: int, cmdid: int) -> Dict:
        url = f"http://127.0.0.1:{self.http_port}/routes?modid={modid}&cmdid={cmdid}"
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    binary = agent_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build -p lars-agent-bin` "
                    "(clients/python/ci.sh does) or set LARS_AGENT_BIN")
    tmp = tmp_path_factory.mktemp("agent")
    snapshot = tmp / "routes.snapshot"
    lines = ["lars-agent-routes 1"]
    for (m, c), hosts in ((KEY_A, HOSTS_A), (KEY_B, HOSTS_B)):
        lines.append(f"{m} {c} " + " ".join(f"{ip}:{port}" for ip, port in hosts))
    snapshot.write_text("\n".join(lines) + "\n")
    base = free_udp_run(3)
    http_port = free_udp_run(1)
    conf = tmp / "agent.conf"
    conf.write_text(
        f"[agent]\nbase_port = {base}\nsnapshot_path = {snapshot}\n"
        "[dnsserver]\nip = 127.0.0.1\nport = 1\n"
        "[reporter]\nip = 127.0.0.1\nport = 1\n"
        f"[http]\nip = 127.0.0.1\nport = {http_port}\n")
    log = open(tmp / "agent.log", "wb")
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    a = Agent(base, http_port, proc)
    try:
        deadline = time.monotonic() + 15
        with a.client(timeout=0.1) as c:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"lars-agent exited with {proc.returncode}: "
                                f"{(tmp / 'agent.log').read_text()[-2000:]}")
                try:
                    if c.get_route(*KEY_A):
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("lars-agent did not serve its snapshot within 15 s")
                time.sleep(0.05)
        yield a
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Handler of a fake agent: (port index, datagram) -> datagrams to send back.
Handler = Callable[[int, bytes], List[bytes]]


class FakeAgent:
    """`count` bound UDP sockets; a thread answers each datagram with what
    `handler` returns. Stopped (thread joined, sockets closed) by `stop`."""

    def __init__(self, handler: Handler, count: int = 3) -> None:
        self.handler = handler
        self.base_port = free_udp_run(count)
        self.socks = []
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", self.base_port + i))
            s.setblocking(False)
            self.socks.append(s)
        self.received: List[Tuple[int, bytes]] = []
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            for i, s in enumerate(self.socks):
                sel.register(s, selectors.EVENT_READ, i)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.02):
                    self._serve(key.data, self.socks[key.data])

    def _serve(self, i: int, s: socket.socket) -> None:
        while True:
            try:
                data, peer = s.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as e:
                self.errors.append(e)
                return
            self.received.append((i, data))
            try:
                for out in self.handler(i, data):
                    s.sendto(out, peer)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.socks:
            s.close()


@pytest.fixture
def fake_agent() -> Iterator[Callable[..., FakeAgent]]:
    started: List[FakeAgent] = []

    def start(handler: Handler, count: int = 3) -> FakeAgent:
        f = FakeAgent(handler, count)
        started.append(f)
        return f
    yield start
    for f in started:
        f.stop()
        assert not f.errors, f.errors


def silent_ports(count: int = 3) -> Tuple[int, List[socket.socket]]:
    base = free_udp_run(count)
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", base + i))
        socks.append(s)
    return base, socks

