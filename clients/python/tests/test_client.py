"""Tests of the Python lars client: against a real lars-agent (started by the
`agent` fixture) and against fake agents for what a real one never sends."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from pathlib import Path
from typing import List

import pytest

from conftest import HOSTS_A, HOSTS_B, KEY_A, KEY_B, silent_ports
from lars_client import (
    REG_INIT_ATTEMPTS,
    RET_NOEXIST,
    RET_OVERLOAD,
    RET_SYSTEM_ERROR,
    LarsClient,
    LarsError,
    LarsIOError,
    LarsSystemError,
    LarsTimeoutError,
    NoExistError,
    OverloadError,
    timecost_ms,
)
from lars_client import _wire

# ---------------------------------------------------------------- real agent


def test_get_host_answers_a_host_of_the_key(agent):
    with agent.client() as c:
        assert c.get_host(*KEY_A) in HOSTS_A
        # High-bit addresses travel as negative int32 and come back intact.
        assert c.get_host(*KEY_B) in HOSTS_B


def test_get_host_round_robins_over_the_hosts(agent):
    with agent.client() as c:
        seen = [c.get_host(*KEY_A) for _ in range(30)]
    assert set(seen) == set(HOSTS_A)


def test_get_route_answers_every_host(agent):
    with agent.client() as c:
        assert sorted(c.get_route(*KEY_A)) == sorted(HOSTS_A)
        assert sorted(c.get_route(*KEY_B)) == sorted(HOSTS_B)
        assert c.reg_init(*KEY_B) and sorted(c.reg_init(*KEY_B)) == sorted(HOSTS_B)


def test_unknown_key_is_noexist_and_reg_init_gives_up(agent):
    with agent.client() as c:
        with pytest.raises(NoExistError) as e:
            c.get_host(1499, 1)
        assert e.value.retcode == RET_NOEXIST
        assert isinstance(e.value, LarsError)
        assert c.get_route(1499, 2) == []
        # No dns: the key never gets hosts; reg_init asks 3 times, then gives up.
        with pytest.raises(NoExistError):
            c.reg_init(1499, 3)


def test_reports_reach_the_agent_with_their_latency(agent):
    ip, port = HOSTS_B[0]
    with agent.client() as c:
        for ok in [True] * 5 + [False] * 2:
            c.report(*KEY_B, ip, port, ok, latency_ms=3)
    deadline = time.monotonic() + 10
    while True:
        hosts = {h["host"]: h for h in agent.routes(*KEY_B)["hosts"]}
        h = hosts[f"{ip}:{port}"]
        if h["succ_total"] >= 5 and h["err_total"] >= 2:
            break
        assert time.monotonic() < deadline, h
        time.sleep(0.05)
    # The timecost travelled: the host has a latency estimate now.
    assert h["latency_ms"] is not None and h["latency_ms"] > 0, h


def test_a_shared_client_serves_many_threads(agent):
    errors: List[BaseException] = []
    picks: List[tuple] = []
    lock = threading.Lock()
    with agent.client(timeout=1.0) as c:
        def work() -> None:
            try:
                for _ in range(50):
                    h = c.get_host(*KEY_A)
                    c.report(*KEY_A, h[0], h[1], True, latency_ms=1)
                    with lock:
                        picks.append(h)
            except BaseException as e:  # noqa: BLE001 - checked below
                errors.append(e)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors
    assert len(picks) == 200 and set(picks) <= set(HOSTS_A)


# ---------------------------------------------------------------- no agent


def test_a_silent_agent_times_out_within_the_timeout():
    base, socks = silent_ports()
    try:
        with LarsClient(base_port=base, timeout=0.05) as c:
            start = time.monotonic()
            with pytest.raises(LarsTimeoutError) as e:
                c.get_host(1, 1)
            took = time.monotonic() - start
            assert isinstance(e.value, TimeoutError) and isinstance(e.value, LarsError)
            assert took < 1.0  # bounded: the C++ API blocked forever here
            with pytest.raises(LarsTimeoutError):
                c.get_route(1, 1)
            start = time.monotonic()
            with pytest.raises(LarsTimeoutError):
                c.reg_init(1, 1)
            assert time.monotonic() - start >= (REG_INIT_ATTEMPTS - 1) * 0.05
    finally:
        for s in socks:
            s.close()


def test_nothing_listening_is_an_io_error():
    from conftest import free_udp_run
    base = free_udp_run(3)
    with LarsClient(base_port=base, timeout=1.0) as c:
        with pytest.raises(LarsIOError) as e:
            c.get_host(1, 1)
        assert isinstance(e.value.__cause__, OSError)
        # The stale ICMP error does not fail a send (retried once).
        c.report(1, 1, "10.0.0.1", 80, True)


# ---------------------------------------------------------------- fake agents


def reply_host(data: bytes, retcode: int = 0, host=(0x0A000001, 80), **over) -> bytes:
    msgid, body = _wire.unframe(data)
    assert msgid == _wire.GET_HOST_REQUEST
    seq, m, c = _wire.get_host_request_fields(body)
    f = dict(seq=seq, modid=m, cmdid=c, retcode=retcode, host=host)
    f.update(over)
    return _wire.get_host_response_frame(**f)


def test_foreign_and_mismatched_replies_are_discarded(fake_agent):
    def handler(_i: int, data: bytes) -> List[bytes]:
        msgid, body = _wire.unframe(data)
        seq, m, c = _wire.get_host_request_fields(body)
        good = reply_host(data, host=(0x0A000009, 9))
        return [
            b"garbage",
            good[:-1],  # length mismatch
            good + b"x",
            _wire.frame(99, good[8:]),  # other msgid
            reply_host(data, seq=seq + 1, host=(0x0A000002, 2)),
            reply_host(data, modid=m + 1, host=(0x0A000003, 3)),
            reply_host(data, cmdid=c + 1, host=(0x0A000004, 4)),
            _wire.frame(_wire.API_GET_ROUTE_RESPONSE, b""),
            good,
        ]
    fake = fake_agent(handler)
    with LarsClient(base_port=fake.base_port, timeout=1.0) as c:
        assert c.get_host(5, 6) == ("10.0.0.9", 9)
        stats = c.stats()
    assert stats["discarded"] == 8 and stats["requests"] == 1 and stats["timeouts"] == 0


def test_a_late_reply_is_not_taken_for_the_next_request(fake_agent):
    held: List[bytes] = []

    def handler(_i: int, data: bytes) -> List[bytes]:
        if not held:  # the first request: no answer now
            held.append(reply_host(data, host=(0x0A000001, 1)))
            return []
        return [held[0], reply_host(data, host=(0x0A000002, 2))]
    fake = fake_agent(handler)
    with LarsClient(base_port=fake.base_port, timeout=0.2) as c:
        with pytest.raises(LarsTimeoutError):
            c.get_host(1, 1)
        assert c.get_host(1, 1) == ("10.0.0.2", 2)
        stats = c.stats()
    assert (stats["requests"], stats["timeouts"], stats["discarded"]) == (2, 1, 1)


@pytest.mark.parametrize("retcode,host,error", [
    (RET_OVERLOAD, None, OverloadError),
    (RET_NOEXIST, None, NoExistError),
    (RET_SYSTEM_ERROR, None, LarsSystemError),
    (42, None, LarsSystemError),
    (0, None, LarsSystemError),  # success without a host
    (0, (0x0A000001, 0), LarsSystemError),  # success with port 0
])
def test_retcodes_become_their_errors(fake_agent, retcode, host, error):
    fake = fake_agent(lambda _i, d: [reply_host(d, retcode=retcode, host=host)])
    with LarsClient(base_port=fake.base_port, timeout=1.0) as c:
        with pytest.raises(error) as e:
            c.get_host(1, 2)
    assert e.value.retcode == retcode


def test_requests_go_to_base_plus_modid_plus_cmdid_mod_count(fake_agent):
    fake = fake_agent(lambda _i, d: [reply_host(d)])
    pairs = [(0, 0), (1, 0), (1, 1), (2, 2), (0xFFFFFFFF, 0xFFFFFFFF), (7, 0xFFFFFFFF)]
    with LarsClient(base_port=fake.base_port, timeout=1.0) as c:
        for m, k in pairs:
            c.get_host(m, k)
            assert c.agent_port(m, k) == fake.base_port + (m + k) % 3
    got = [i for i, _ in fake.received]
    assert got == [(m + k) % 3 for m, k in pairs]


def test_ids_over_2_31_travel_as_int32(fake_agent):
    fake = fake_agent(lambda _i, d: [reply_host(d)])
    with LarsClient(base_port=fake.base_port, timeout=1.0) as c:
        assert c.get_host(0xFFFFFFFF, 0x80000000) == ("10.0.0.1", 80)
    _, body = _wire.unframe(fake.received[0][1])
    assert _wire.get_host_request_fields(body)[1:] == (-1, -(1 << 31))


def test_report_encodes_host_retcode_and_timecost(fake_agent):
    fake = fake_agent(lambda _i, _d: [])
    with LarsClient(base_port=fake.base_port, port_count=1, timeout=1.0) as c:
        c.report(3, 4, "192.168.1.177", 8080, True, latency_ms=0.4)
        c.report(3, 4, "10.0.0.1", 80, False)
        c.report(3, 4, ipaddress.IPv4Address("10.0.0.2"), 81, 7, latency_ms=12.9)
        c.report(3, 4, "10.0.0.3", 82, 0, latency_ms=math.inf)
        assert c.stats()["reports"] == 4
    deadline = time.monotonic() + 5
    while len(fake.received) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    got = []
    for _i, data in fake.received:
        msgid, body = _wire.unframe(data)
        assert msgid == _wire.REPORT_REQUEST
        got.append(_wire.report_request_fields(body))
    assert got == [
        (3, 4, (int(ipaddress.IPv4Address("192.168.1.177")), 8080), 0, 1),
        (3, 4, (0x0A000001, 80), 1, 0),
        (3, 4, (0x0A000002, 81), 7, 12),
        (3, 4, (0x0A000003, 82), 0, 0xFFFFFFFF),
    ]


def test_wire_bytes_are_the_protocol():
    # GetHostRequest{seq=1, modid=1, cmdid=2}: header (msgid 4, len 6), body.
    assert _wire.get_host_request(1, 1, 2) == (
        b"\x04\x00\x00\x00\x06\x00\x00\x00" + b"\x08\x01\x10\x01\x18\x02")
    # proto3 int32 -1 is a 10-byte varint; zero fields are omitted.
    assert _wire.get_route_request(0xFFFFFFFF, 0) == (
        b"\x07\x00\x00\x00\x0b\x00\x00\x00" + b"\x08" + b"\xff" * 9 + b"\x01")
    # A response decodes whatever field order, with unknown fields skipped.
    body = b"\x20\x00" + b"\x2a\x04\x08\x01\x10\x50" + b"\x08\x07" + b"\x35\x00\x00\x00\x00"
    assert _wire.get_host_response(body) == (7, 0, 0, 0, (1, 80))
    for bad in (b"\x08", b"\x0a\x05ab", b"\x0f", b"\x00\x01"):
        with pytest.raises(_wire.DecodeError):
            _wire.get_host_response(bad)


def test_timecost_is_whole_milliseconds_at_least_one():
    assert timecost_ms(None) == 0
    assert timecost_ms(0) == 1
    assert timecost_ms(0.2) == 1
    assert timecost_ms(3) == 3
    assert timecost_ms(3.99) == 3
    assert timecost_ms(1e20) == 0xFFFFFFFF


# ---------------------------------------------------------------- bad input


def test_bad_arguments_raise_value_error_at_once():
    base, socks = silent_ports()
    try:
        with LarsClient(base_port=base, timeout=5.0) as c:
            calls = [
                lambda: c.get_host(-1, 1),
                lambda: c.get_host(1, -1),
                lambda: c.get_host(1 << 32, 1),
                lambda: c.get_host("1", 1),
                lambda: c.get_host(1.0, 1),
                lambda: c.get_host(True, 1),
                lambda: c.get_route(-1, 1),
                lambda: c.reg_init(1, -1),
                lambda: c.report(-1, 1, "10.0.0.1", 80, True),
                lambda: c.report(1, 1, "300.1.2.3", 80, True),
                lambda: c.report(1, 1, "10.0.0", 80, True),
                lambda: c.report(1, 1, "", 80, True),
                lambda: c.report(1, 1, None, 80, True),
                lambda: c.report(1, 1, "::1", 80, True),
                lambda: c.report(1, 1, "10.0.0.1", 0, True),
                lambda: c.report(1, 1, "10.0.0.1", 70000, True),
                lambda: c.report(1, 1, "10.0.0.1", 80, "ok"),
                lambda: c.report(1, 1, "10.0.0.1", 80, 1 << 31),
                lambda: c.report(1, 1, "10.0.0.1", 80, True, latency_ms=-1),
                lambda: c.report(1, 1, "10.0.0.1", 80, True, latency_ms=math.nan),
                lambda: c.report(1, 1, "10.0.0.1", 80, True, latency_ms="3"),
            ]
            for i, call in enumerate(calls):
                start = time.monotonic()
                with pytest.raises(ValueError):
                    call()
                assert time.monotonic() - start < 1.0, f"call {i} waited on the network"
            assert c.stats()["bad_arguments"] == len(calls)
            assert c.stats()["requests"] == 0 and c.stats()["reports"] == 0
        # Nothing reached the agent: every bad call failed before sending.
        for s in socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(65535)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("kwargs", [
    dict(agent_ip="localhost"),
    dict(agent_ip="1.2.3"),
    dict(base_port=0),
    dict(base_port=65534, port_count=3),
    dict(base_port=70000),
    dict(port_count=0),
    dict(timeout=0),
    dict(timeout=-1),
    dict(timeout=math.nan),
    dict(timeout=math.inf),
    dict(timeout="0.05"),
])
def test_bad_constructor_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        LarsClient(**kwargs)


def test_the_readme_example_runs(agent):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "base_port=8888" in code and "(1, 1" in code
    code = code.replace("base_port=8888", f"base_port={agent.base_port}")
    code = code.replace("(1, 1", f"({KEY_A[0]}, {KEY_A[1]}")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own docs
    assert (scope["ip"], scope["port"]) in HOSTS_A
