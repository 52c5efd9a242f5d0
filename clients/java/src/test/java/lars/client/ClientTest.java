package lars.client;

import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.PortUnreachableException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The Java client's tests: a plain main (no test framework) that runs every
 * case, prints one line per case and {@code N passed, N failed}, and exits
 * non-zero if any failed. Arguments, if any, select the cases whose name
 * contains one of them.
 *
 * <p>Unit cases check the codec and the client against scripted fake agents
 * on loopback; the {@code agent_*} cases run against a real lars agent
 * process (see {@link RealAgent}).
 */
public final class ClientTest {
    /** A test body. */
    interface Body {
        void run() throws Exception;
    }

    private static final Map<String, Body> CASES = new LinkedHashMap<>();

    private ClientTest() {}

    public static void main(String[] args) {
        register();
        int passed = 0;
        int failed = 0;
        for (Map.Entry<String, Body> c : CASES.entrySet()) {
            if (args.length > 0 && java.util.Arrays.stream(args).noneMatch(a -> c.getKey().contains(a))) {
                continue;
            }
            long t = System.nanoTime();
            try {
                c.getValue().run();
                passed++;
                System.out.printf("ok   %s (%d ms)%n", c.getKey(), (System.nanoTime() - t) / 1_000_000);
            } catch (Throwable e) {
                failed++;
                System.out.printf("FAIL %s: %s%n", c.getKey(), e);
                e.printStackTrace(System.out);
            }
        }
        System.out.printf("%d passed, %d failed%n", passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }

    private static void register() {
        CASES.put("wire_encodes_known_bytes", ClientTest::wireEncodesKnownBytes);
        CASES.put("wire_decodes_with_unknown_fields_and_explicit_zeros", ClientTest::wireDecodes);
        CASES.put("wire_rejects_malformed_datagrams", ClientTest::wireRejectsMalformed);
        CASES.put("wire_never_throws_on_random_bodies", ClientTest::wireNeverThrows);
        CASES.put("ip_text_is_a_strict_dotted_quad", ClientTest::ipParsing);
        CASES.put("host_port_values", ClientTest::hostPortValues);
        CASES.put("builder_rejects_bad_config", ClientTest::builderRejectsBadConfig);
        CASES.put("bad_input_fails_fast_and_sends_nothing", ClientTest::badInputFailsFast);
        CASES.put("key_goes_to_base_plus_sum_mod_count", ClientTest::portMapping);
        CASES.put("retcodes_become_exceptions", ClientTest::retcodes);
        CASES.put("stale_and_foreign_replies_are_discarded", ClientTest::staleRepliesDiscarded);
        CASES.put("late_reply_of_a_timed_out_request_is_discarded", ClientTest::lateReplyDiscarded);
        CASES.put("silent_agent_times_out", ClientTest::silentAgentTimesOut);
        CASES.put("discards_do_not_extend_the_deadline", ClientTest::discardsDoNotExtendDeadline);
        CASES.put("no_agent_is_an_io_error_and_a_stale_icmp_is_retried", ClientTest::noAgent);
        CASES.put("report_wire_fields_and_latency", ClientTest::reportWire);
        CASES.put("get_route_filters_and_matches_key", ClientTest::getRouteDecoding);
        CASES.put("reg_init_retries_like_the_original", ClientTest::regInitRetries);
        CASES.put("shared_client_across_threads", ClientTest::sharedClientAcrossThreads);
        CASES.put("closed_client_refuses_calls", ClientTest::closedClient);
        CASES.put("interrupt_ends_a_wait_and_the_client_stays_usable", ClientTest::interruptDuringWait);
        CASES.put("close_ends_a_wait_in_another_thread", ClientTest::closeDuringWait);
        CASES.put("interrupt_storm_leaves_a_working_client", ClientTest::interruptStorm);
        CASES.put("a_channel_closed_under_the_client_is_reopened", ClientTest::channelReopened);
        CASES.put("a_request_waiting_on_a_closed_channel_is_woken_by_the_next_call", ClientTest::wakeUpStress);
        CASES.put("a_report_never_waits_for_a_request", ClientTest::reportNeverWaitsForARequest);
        CASES.put("agent_round_robin_report_route_reg_init", ClientTest::agentEndToEnd);
    }

    // ---- codec ----------------------------------------------------------

    private static void wireEncodesKnownBytes() {
        // 192.168.1.177 = 0xC0A801B1: a negative int32, sent as a 10-byte varint.
        eq("060000001b000000080110021a0d08b183a085fcffffffff011050200128ffffffff0f",
                hex(Wire.reportRequest(1, 2, 0xC0A801B1, 80, 1, -1)), "report bytes");
        eq("040000000a00000008ffffffff0f10071809", hex(Wire.getHostRequest(-1, 7, 9)), "get_host bytes");
        eq("0400000000000000", hex(Wire.getHostRequest(0, 0, 0)), "zero fields are left out");
        eq("07000000040000000801100f", hex(Wire.getRouteRequest(1, 15)), "get_route bytes");
        // A report always carries its host; timecost 0 is left out.
        eq("060000000800000008011a0210012002", hex(Wire.reportRequest(1, 0, 0, 1, 2, 0)), "report zeros");
    }

    private static void wireDecodes() {
        byte[] body = Pb.cat(Pb.varint(9, 5), Pb.varint(1, 0xFFFF_FFFFL), Pb.len(10, new byte[] {1, 2, 3}),
                Pb.varint(2, 7), Pb.fixed32(11, 42), Pb.varint(3, 0), Pb.fixed64(12, -1L),
                Pb.varint(4, 0), Pb.len(5, Pb.cat(Pb.varint(1, 0xC0A801B1), Pb.varint(7, 1), Pb.varint(2, 80))));
        byte[] d = Pb.frame(Wire.ID_GET_HOST_RESPONSE, body);
        Wire.HostResponse r = Wire.hostResponse(d, d.length);
        check(r != null, "decoded");
        eq(-1, r.seq(), "seq (uint32 max)");
        eq(7, r.modid(), "modid");
        eq(0, r.cmdid(), "cmdid");
        eq(0, r.retcode(), "retcode");
        check(r.hasHost(), "has host");
        eq(0xC0A801B1, r.ip(), "negative ip");
        eq(80, r.port(), "port");
        // A trailing unused buffer area does not matter: only len bytes count.
        byte[] big = java.util.Arrays.copyOf(d, d.length + 100);
        check(Wire.hostResponse(big, d.length) != null, "decoded from a larger buffer");

        byte[] route = Pb.routeResponse(3, 4, 0x0A000001, 80, 0x0A000002, 81);
        Wire.RouteResponse rr = Wire.routeResponse(route, route.length);
        check(rr != null, "route decoded");
        eq(2, rr.hosts().size(), "two hosts");
        eq(0x0A000002, rr.hosts().get(1)[0], "second ip");
        eq(81, rr.hosts().get(1)[1], "second port");
        // A lars dns's confirmed_empty (field 4 of the same body) is skipped.
        byte[] ext = Pb.frame(Wire.ID_API_GET_ROUTE_RESPONSE, Pb.cat(Pb.varint(1, 3), Pb.varint(2, 4),
                Pb.varint(4, 1)));
        Wire.RouteResponse er = Wire.routeResponse(ext, ext.length);
        check(er != null && er.hosts().isEmpty() && er.modid() == 3 && er.cmdid() == 4, "ext field skipped");
    }

    private static void wireRejectsMalformed() {
        byte[] good = Pb.hostResponse(1, 2, 3, 0, 0x7F000001, 80);
        check(Wire.hostResponse(good, good.length) != null, "the good one decodes");
        List<byte[]> bad = new ArrayList<>();
        bad.add(new byte[0]);
        bad.add(new byte[] {5, 0, 0, 0, 0, 0, 0});
        bad.add(java.util.Arrays.copyOf(good, good.length - 1)); // msglen says more
        byte[] longer = java.util.Arrays.copyOf(good, good.length + 1); // datagram longer than msglen
        bad.add(longer);
        bad.add(Pb.frame(Wire.ID_API_GET_ROUTE_RESPONSE, Pb.varint(1, 1))); // wrong msgid
        byte[] neg = good.clone();
        Wire.putIntLe(neg, 4, -1);
        bad.add(neg);
        byte[] huge = new byte[8 + 65_528];
        Wire.putIntLe(huge, 0, Wire.ID_GET_HOST_RESPONSE);
        Wire.putIntLe(huge, 4, 65_528); // beyond the protocol's 65527
        bad.add(huge);
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {0x08, (byte) 0x80})); // truncated varint
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {0x0B, 0x0C})); // group wire type
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {0x00, 0x01})); // field number 0
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {0x2A, 0x05, 0x08})); // LEN past the end
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, Pb.len(5, new byte[] {0x08}))); // bad nested host
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {0x5D, 1, 2})); // short fixed32
        bad.add(Pb.frame(Wire.ID_GET_HOST_RESPONSE, new byte[] {
            0x08, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF,
            (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, 0x01})); // 11-byte varint
        for (int i = 0; i < bad.size(); i++) {
            byte[] d = bad.get(i);
            check(Wire.hostResponse(d, d.length) == null, "bad datagram #" + i + " rejected: " + hex(d));
        }
        byte[] routeBad = Pb.frame(Wire.ID_API_GET_ROUTE_RESPONSE, Pb.len(3, new byte[] {0x10}));
        check(Wire.routeResponse(routeBad, routeBad.length) == null, "bad route host rejected");
    }

    private static void wireNeverThrows() {
        Random rnd = new Random(42);
        for (int i = 0; i < 20_000; i++) {
            byte[] body = new byte[rnd.nextInt(40)];
            rnd.nextBytes(body);
            byte[] d = Pb.frame(i % 2 == 0 ? Wire.ID_GET_HOST_RESPONSE : Wire.ID_API_GET_ROUTE_RESPONSE, body);
            Wire.hostResponse(d, d.length);
            Wire.routeResponse(d, d.length);
        }
    }

    private static void ipParsing() {
        eq(0xC0A801B1, HostPort.parseIpv4("192.168.1.177"), "192.168.1.177");
        eq(0, HostPort.parseIpv4("0.0.0.0"), "zeros");
        eq(-1, HostPort.parseIpv4("255.255.255.255"), "broadcast");
        for (String bad : new String[] {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "01.2.3.4",
            "1..2.3", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "a.b.c.d", "localhost", "1.2.3.4:80", "1234.1.1.1",
            "::1", "1.2.3.-4", "1.2.3.", "\u0661.2.3.4"}) {
            IllegalArgumentException e = throwsIae(() -> HostPort.parseIpv4(bad));
            check(e.getMessage().contains("dotted-quad"), "message names the problem: " + e.getMessage());
        }
        throwsIae(() -> HostPort.parseIpv4(null));
    }

    private static void hostPortValues() {
        HostPort h = HostPort.ofBits(0xC0A801B1, 80);
        eq("192.168.1.177", h.ip(), "ip");
        eq("192.168.1.177:80", h.toString(), "toString");
        eq(h, HostPort.of("192.168.1.177", 80), "of");
        eq(h, HostPort.parse("192.168.1.177:80"), "parse");
        eq(h.hashCode(), HostPort.parse("192.168.1.177:80").hashCode(), "hashCode");
        check(!h.equals(HostPort.of("192.168.1.177", 81)), "port matters");
        for (String bad : new String[] {"1.2.3.4", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:-1",
            "1.2.3.4:8x", "x:80", "1.2.3.4:123456"}) {
            throwsIae(() -> HostPort.parse(bad));
        }
        throwsIae(() -> HostPort.of("1.2.3.4", 0));
        throwsIae(() -> HostPort.ofBits(1, 65_536));
    }

    private static void builderRejectsBadConfig() {
        throwsIae(() -> LarsClient.builder().portCount(0));
        throwsIae(() -> LarsClient.builder().basePort(0));
        throwsIae(() -> LarsClient.builder().basePort(65_536));
        throwsIae(() -> LarsClient.builder().basePort(65_535).portCount(2).build());
        throwsIae(() -> LarsClient.builder().timeout(Duration.ZERO));
        throwsIae(() -> LarsClient.builder().timeout(Duration.ofMillis(-5)));
        throwsIae(() -> LarsClient.builder().timeout(Duration.ofNanos(1_500_000)));
        throwsIae(() -> LarsClient.builder().timeout(null));
        throwsIae(() -> LarsClient.builder().timeoutMillis(0));
        throwsIae(() -> LarsClient.builder().agentIp("localhost"));
        try (LarsClient c = LarsClient.builder().basePort(65_533).portCount(3).timeoutMillis(7).build()) {
            eq(65_533, c.basePort(), "base port");
            eq(3, c.portCount(), "port count");
            eq(Duration.ofMillis(7), c.timeout(), "timeout");
            eq("127.0.0.1", c.agentIp(), "default ip");
        } catch (LarsException e) {
            throw new AssertionError(e);
        }
    }

    private static void badInputFailsFast() throws Exception {
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST) {
                reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1, 80));
            }
        }); LarsClient c = client(fake.port(), 1, 50)) {
            HostPort h = HostPort.of("10.0.0.1", 80);
            List<Body> calls = List.of(
                    () -> c.getHost(-1, 1), () -> c.getHost(1, -1), () -> c.getHost(Integer.MIN_VALUE, 0),
                    () -> c.getRoute(-1, 1), () -> c.regInit(1, -1), () -> c.report(-1, 1, h, 0, 1),
                    () -> c.report(1, -1, h, 0), () -> c.report(1, 1, "300.1.2.3", 80, 0, 1),
                    () -> c.report(1, 1, "not-an-ip", 80, 0, 1), () -> c.report(1, 1, "10.0.0.1", 0, 0, 1),
                    () -> c.report(1, 1, "10.0.0.1", 65_536, 0), () -> c.report(1, 1, h, 0, -1),
                    () -> c.report(1, 1, (HostPort) null, 0), () -> c.agentPort(-1, 0));
            for (Body call : calls) {
                throwsIae(call);
            }
            // Only this valid request reaches the agent.
            eq(HostPort.ofBits(1, 80), c.getHost(1, 2), "valid request answered");
            eq(1, fake.received().size(), "datagrams the agent saw");
        }
    }

    private static void portMapping() throws Exception {
        int base = RealAgent.freePorts(3);
        List<FakeAgent> fakes = new ArrayList<>();
        try {
            for (int i = 0; i < 3; i++) {
                int index = i;
                fakes.add(new FakeAgent(base + i, (req, reply) -> {
                    Map<Integer, Object> f = Pb.body(req);
                    reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1,
                            1000 + index));
                }));
            }
            try (LarsClient c = client(base, 3, 200)) {
                int[][] keys = {{1, 1}, {1, 2}, {2, 2}, {0, 0}, {Integer.MAX_VALUE, Integer.MAX_VALUE}};
                for (int[] k : keys) {
                    int want = (int) (((long) k[0] + k[1]) % 3);
                    eq(base + want, c.agentPort(k[0], k[1]), "agentPort of " + k[0] + "/" + k[1]);
                    eq(1000 + want, c.getHost(k[0], k[1]).port(), "port index of " + k[0] + "/" + k[1]);
                }
            }
        } finally {
            for (FakeAgent f : fakes) {
                f.close();
            }
        }
    }

    private static void retcodes() throws Exception {
        // modid selects the answer: 1 OVERLOAD, 2 NOEXIST, 3 SYSTEM, 4 unknown 7,
        // 5 SUCC without host, 6 SUCC with port 0, 7 SUCC with port 70000.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            int seq = Pb.intField(f, 1);
            int m = Pb.intField(f, 2);
            int cmd = Pb.intField(f, 3);
            byte[] head = Pb.cat(Pb.varint(1, Integer.toUnsignedLong(seq)), Pb.varint(2, m), Pb.varint(3, cmd));
            switch (m) {
                case 1 -> reply.send(Pb.frame(5, Pb.cat(head, Pb.varint(4, LarsRetCode.RET_OVERLOAD))));
                case 2 -> reply.send(Pb.frame(5, Pb.cat(head, Pb.varint(4, LarsRetCode.RET_NOEXIST))));
                case 3 -> reply.send(Pb.frame(5, Pb.cat(head, Pb.varint(4, LarsRetCode.RET_SYSTEM_ERROR))));
                case 4 -> reply.send(Pb.frame(5, Pb.cat(head, Pb.varint(4, 7))));
                case 5 -> reply.send(Pb.frame(5, head));
                case 6 -> reply.send(Pb.hostResponse(seq, m, cmd, 0, 1, 0));
                default -> reply.send(Pb.hostResponse(seq, m, cmd, 0, 1, 70_000));
            }
        }); LarsClient c = client(fake.port(), 1, 500)) {
            expect(LarsOverloadException.class, () -> c.getHost(1, 9));
            LarsNoExistException ne = expect(LarsNoExistException.class, () -> c.getHost(2, 9));
            check(ne.getMessage().contains("modid 2 cmdid 9"), "message names the key: " + ne.getMessage());
            expect(LarsSystemException.class, () -> c.getHost(3, 9));
            LarsSystemException un = expect(LarsSystemException.class, () -> c.getHost(4, 9));
            check(un.getMessage().contains("unknown return code 7"), un.getMessage());
            expect(LarsSystemException.class, () -> c.getHost(5, 9));
            expect(LarsSystemException.class, () -> c.getHost(6, 9));
            expect(LarsSystemException.class, () -> c.getHost(7, 9));
            eq(0L, c.discardedReplies(), "nothing discarded");
        }
    }

    private static void staleRepliesDiscarded() throws Exception {
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            int seq = Pb.intField(f, 1);
            int m = Pb.intField(f, 2);
            int cmd = Pb.intField(f, 3);
            reply.send(Pb.hostResponse(seq - 1, m, cmd, 0, 1, 1)); // an older request's
            reply.send(Pb.hostResponse(seq, m, cmd + 1, 0, 1, 2)); // another key
            reply.send(new byte[] {1, 2, 3}); // garbage
            reply.send(Pb.routeResponse(m, cmd, 1, 3)); // wrong message type
            byte[] cut = Pb.hostResponse(seq, m, cmd, 0, 1, 4);
            reply.send(java.util.Arrays.copyOf(cut, cut.length - 1)); // truncated
            reply.send(Pb.hostResponse(seq, m, cmd, 0, 0x0A000001, 5)); // the answer
        }); LarsClient c = client(fake.port(), 1, 1000)) {
            eq(HostPort.of("10.0.0.1", 5), c.getHost(4, 5), "the matching reply");
            eq(5L, c.discardedReplies(), "discarded");
        }
    }

    private static void lateReplyDiscarded() throws Exception {
        AtomicInteger requests = new AtomicInteger();
        int[] firstSeq = {0};
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            int seq = Pb.intField(f, 1);
            if (requests.getAndIncrement() == 0) {
                firstSeq[0] = seq; // stall: no answer until the next request
                return;
            }
            reply.send(Pb.hostResponse(firstSeq[0], 1, 2, 0, 1, 1111)); // late, for the first request
            reply.send(Pb.hostResponse(seq, 1, 2, 0, 1, 2222));
        }); LarsClient c = client(fake.port(), 1, 50)) {
            expect(LarsTimeoutException.class, () -> c.getHost(1, 2));
            eq(2222, c.getHost(1, 2).port(), "the second request's own answer");
            eq(1L, c.discardedReplies(), "the late reply was discarded");
        }
    }

    private static void silentAgentTimesOut() throws Exception {
        try (FakeAgent fake = FakeAgent.silent(); LarsClient c = client(fake.port(), 1, 50)) {
            long t = System.nanoTime();
            LarsTimeoutException e = expect(LarsTimeoutException.class, () -> c.getHost(1, 2));
            long ms = (System.nanoTime() - t) / 1_000_000;
            check(ms >= 49, "waited the timeout, not less: " + ms + " ms");
            check(ms < 5_000, "did not hang: " + ms + " ms");
            check(e.getMessage().contains("50 ms"), e.getMessage());
            expect(LarsTimeoutException.class, () -> c.getRoute(1, 2));
            eq(2, fake.received().size(), "both requests were sent");
        }
    }

    private static void discardsDoNotExtendDeadline() throws Exception {
        // The fake answers every request with a stream of stale replies, one
        // every 5 ms for up to 2 s: a client that restarted its timeout after
        // each discard would wait the full 2 s.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            int seq = Pb.intField(Pb.body(req), 1);
            for (int i = 0; i < 400; i++) {
                reply.send(Pb.hostResponse(seq + 1, 1, 2, 0, 1, 1));
                try {
                    Thread.sleep(5);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }); LarsClient c = client(fake.port(), 1, 50)) {
            long t = System.nanoTime();
            expect(LarsTimeoutException.class, () -> c.getHost(1, 2));
            long ms = (System.nanoTime() - t) / 1_000_000;
            check(ms < 1_000, "timed out near 50 ms despite the stream of stale replies: " + ms + " ms");
            check(c.discardedReplies() > 0, "replies were discarded");
        }
    }

    private static void noAgent() throws Exception {
        int port;
        try (DatagramSocket s = new DatagramSocket(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            port = s.getLocalPort();
        }
        try (LarsClient c = client(port, 1, 1000)) {
            long t = System.nanoTime();
            LarsIoException e = expect(LarsIoException.class, () -> c.getHost(1, 2));
            check(e.getCause() instanceof PortUnreachableException, "cause: " + e.getCause());
            String cause = e.getCause().getMessage();
            check(cause == null || !e.getMessage().contains(cause), "message repeats the cause: " + e.getMessage());
            check((System.nanoTime() - t) / 1_000_000 < 1_000, "failed before the timeout");
            // A report to the dead port leaves an ICMP error pending on the
            // socket; once an agent listens, the next request must not fail
            // with that stale error.
            c.report(1, 2, HostPort.of("10.0.0.1", 80), 0, 1);
            Thread.sleep(20);
            try (FakeAgent fake = new FakeAgent(port, (req, reply) -> {
                Map<Integer, Object> f = Pb.body(req);
                if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST) {
                    reply.send(Pb.hostResponse(Pb.intField(f, 1), 1, 2, 0, 1, 80));
                }
            })) {
                eq(80, c.getHost(1, 2).port(), "answered after the agent came up");
                eq(port, fake.port(), "the fake took the dead port");
            }
        }
    }

    private static void reportWire() throws Exception {
        try (FakeAgent fake = FakeAgent.silent(); LarsClient c = client(fake.port(), 1, 50)) {
            c.report(7, 8, "192.168.1.177", 8080, LarsRetCode.RET_SUCC, 25);
            c.report(7, 8, HostPort.of("10.0.0.1", 80), 1, 0); // sub-millisecond: 1
            c.report(7, 8, "10.0.0.1", 80, 2); // no latency: 0, left out
            c.report(7, 8, HostPort.of("10.0.0.1", 80), 1, 1L << 40); // saturates
            List<byte[]> got = awaitDatagrams(fake, 4);
            Map<Integer, Object> r = Pb.body(got.get(0));
            eq(Wire.ID_REPORT_REQUEST, Pb.msgid(got.get(0)), "msgid");
            eq(7, Pb.intField(r, 1), "modid");
            eq(8, Pb.intField(r, 2), "cmdid");
            Map<Integer, Object> host = Pb.fields((byte[]) r.get(3), 0);
            eq(0xC0A801B1, Pb.intField(host, 1), "ip");
            eq(8080, Pb.intField(host, 2), "port");
            eq(0, Pb.intField(r, 4), "retcode");
            eq(25, Pb.intField(r, 5), "timecost");
            eq(1, Pb.intField(Pb.body(got.get(1)), 5), "sub-ms latency is 1");
            eq(1, Pb.intField(Pb.body(got.get(1)), 4), "failure retcode");
            check(!Pb.body(got.get(2)).containsKey(5), "no latency: timecost left out");
            eq(2, Pb.intField(Pb.body(got.get(2)), 4), "retcode passed through");
            eq(-1, Pb.intField(Pb.body(got.get(3)), 5), "timecost saturates at 2^32-1");
        }
    }

    private static void getRouteDecoding() throws Exception {
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            int m = Pb.intField(f, 1);
            int cmd = Pb.intField(f, 2);
            reply.send(Pb.routeResponse(m + 1, cmd, 1, 1)); // another key: discarded
            if (m == 1) {
                reply.send(Pb.routeResponse(m, cmd, 0x0A000001, 80, 0x0A000002, 0, 0xC0A801B1, 81));
            } else {
                reply.send(Pb.routeResponse(m, cmd));
            }
        }); LarsClient c = client(fake.port(), 1, 1000)) {
            List<HostPort> hosts = c.getRoute(1, 3);
            eq(List.of(HostPort.of("10.0.0.1", 80), HostPort.of("192.168.1.177", 81)), hosts,
                    "hosts (port 0 left out)");
            eq(List.of(), c.getRoute(2, 3), "empty route is an answer");
            eq(2L, c.discardedReplies(), "other keys' replies discarded");
            eq(Wire.ID_API_GET_ROUTE_REQUEST, Pb.msgid(fake.received().get(0)), "request msgid");
        }
    }

    private static void regInitRetries() throws Exception {
        AtomicInteger requests = new AtomicInteger();
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            int m = Pb.intField(f, 1);
            int cmd = Pb.intField(f, 2);
            int n = requests.incrementAndGet();
            if (m == 1 && n >= 3) {
                reply.send(Pb.routeResponse(m, cmd, 0x0A000001, 80));
            } else if (m != 3) {
                reply.send(Pb.routeResponse(m, cmd));
            }
        }); LarsClient c = client(fake.port(), 1, 50)) {
            long t = System.nanoTime();
            eq(List.of(HostPort.of("10.0.0.1", 80)), c.regInit(1, 1), "hosts on the third attempt");
            eq(3, requests.get(), "three get_route requests");
            check((System.nanoTime() - t) / 1_000_000 >= 99, "waited 50 ms between attempts");

            requests.set(0);
            LarsNoExistException e = expect(LarsNoExistException.class, () -> c.regInit(2, 1));
            eq(3, requests.get(), "gave up after three attempts");
            check(e.getMessage().contains("3 get_route attempt"), e.getMessage());

            requests.set(0);
            expect(LarsTimeoutException.class, () -> c.regInit(3, 1));
            eq(3, requests.get(), "timeouts are retried too");

            // An interrupted thread: an error at once, nothing sent, and the
            // thread's interrupt flag stays set.
            requests.set(0);
            Thread.currentThread().interrupt();
            LarsIoException ie = expect(LarsIoException.class, () -> c.regInit(2, 1));
            check(Thread.interrupted(), "interrupt flag kept (and cleared here)");
            check(ie.getCause() instanceof java.io.InterruptedIOException, "cause: " + ie.getCause());
            eq(0, requests.get(), "nothing sent");
            eq(List.of(HostPort.of("10.0.0.1", 80)), c.regInit(1, 1), "the client still works");
        }
    }

    private static void sharedClientAcrossThreads() throws Exception {
        // The fake answers host 0.0.0.<cmdid> : <modid>, so each thread can
        // tell its own answers; all threads share one agent port and socket.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST) {
                int m = Pb.intField(f, 2);
                int cmd = Pb.intField(f, 3);
                reply.send(Pb.hostResponse(Pb.intField(f, 1), m, cmd, 0, cmd, m));
            }
        }); LarsClient c = client(fake.port(), 1, 2000)) {
            ConcurrentLinkedQueue<Throwable> errors = new ConcurrentLinkedQueue<>();
            List<Thread> threads = new ArrayList<>();
            for (int t = 1; t <= 8; t++) {
                int id = t;
                threads.add(new Thread(() -> {
                    try {
                        for (int i = 0; i < 300; i++) {
                            HostPort h = c.getHost(id, i);
                            if (h.port() != id || h.ipBits() != i) {
                                throw new AssertionError("thread " + id + " got " + h + " for cmdid " + i);
                            }
                            c.report(id, i, h, 0, 1);
                        }
                    } catch (Throwable e) {
                        errors.add(e);
                    }
                }));
            }
            threads.forEach(Thread::start);
            for (Thread th : threads) {
                th.join(30_000);
                check(!th.isAlive(), "thread finished");
            }
            check(errors.isEmpty(), "no errors: " + errors);
            eq(0L, c.discardedReplies(), "no thread read another's reply");
        }
    }

    private static void closedClient() throws Exception {
        try (FakeAgent fake = FakeAgent.silent()) {
            LarsClient c = client(fake.port(), 1, 50);
            c.close();
            c.close();
            for (Body call : List.<Body>of(() -> c.getHost(1, 1), () -> c.getRoute(1, 1), () -> c.regInit(1, 1),
                    () -> c.report(1, 1, HostPort.of("10.0.0.1", 1), 0))) {
                expect(IllegalStateException.class, call);
            }
        }
    }

    private static void interruptDuringWait() throws Exception {
        // modid 1 is never answered; others are.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.intField(f, 2) != 1) {
                reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1, 80));
            }
        }); LarsClient c = client(fake.port(), 1, 10_000)) {
            Throwable[] got = new Throwable[1];
            boolean[] flag = new boolean[1];
            Thread t = new Thread(() -> {
                try {
                    c.getHost(1, 1);
                } catch (Throwable e) {
                    got[0] = e;
                }
                flag[0] = Thread.currentThread().isInterrupted();
            });
            long start = System.nanoTime();
            t.start();
            while (fake.received().isEmpty()) {
                Thread.sleep(1);
            }
            t.interrupt();
            t.join(10_000);
            check(!t.isAlive(), "the waiting thread ended");
            check((System.nanoTime() - start) / 1_000_000 < 5_000, "ended by the interrupt, not the 10 s timeout");
            check(got[0] instanceof LarsIoException, "LarsIoException: " + got[0]);
            check(flag[0], "the interrupt flag stays set");
            // The channel an interrupt may have closed is replaced.
            eq(80, c.getHost(2, 1).port(), "the client still answers");
            c.report(2, 1, HostPort.of("10.0.0.1", 80), 0, 1);
        }
    }

    private static void interruptStorm() throws Exception {
        // Two threads share a client; one is interrupted again and again, at
        // random points of its calls (some land inside a socket call, which
        // closes the channel for both). Every failure must be an error of the
        // call, never a hang, and the client must work at the end.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST) {
                reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1, 80));
            }
        }); LarsClient c = client(fake.port(), 1, 1000)) {
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            ConcurrentLinkedQueue<Throwable> unexpected = new ConcurrentLinkedQueue<>();
            AtomicInteger ok = new AtomicInteger();
            Runnable work = () -> {
                while (!stop.get()) {
                    try {
                        HostPort h = c.getHost(1, 1);
                        c.report(1, 1, h, 0, 1);
                        ok.incrementAndGet();
                    } catch (LarsIoException e) {
                        Thread.interrupted(); // expected: interrupted, or the channel closed under us
                    } catch (Throwable e) {
                        unexpected.add(e);
                    }
                }
            };
            Thread victim = new Thread(work, "victim");
            Thread bystander = new Thread(work, "bystander");
            victim.start();
            bystander.start();
            Random rnd = new Random(7);
            for (int i = 0; i < 2_000; i++) {
                victim.interrupt();
                for (int spin = rnd.nextInt(20_000); spin > 0; spin--) {
                    Thread.onSpinWait();
                }
            }
            stop.set(true);
            victim.join(10_000);
            bystander.join(10_000);
            check(!victim.isAlive() && !bystander.isAlive(), "threads ended");
            check(unexpected.isEmpty(), "only LarsIoException: " + unexpected);
            check(ok.get() > 0, "calls went through meanwhile");
            eq(80, c.getHost(1, 1).port(), "the client works afterwards");
            System.out.println("     (" + ok.get() + " calls, " + c.reopenedChannels() + " channel(s) reopened)");
        }
    }

    private static void channelReopened() throws Exception {
        // modid 1 is never answered; others are.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST && Pb.intField(f, 2) != 1) {
                reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1, 80));
            }
        }); LarsClient c = client(fake.port(), 1, 30_000)) {
            // Closed between requests: the next request and report reopen it.
            c.closeChannelForTest(0);
            eq(80, c.getHost(2, 1).port(), "answered on a new channel");
            eq(1L, c.reopenedChannels(), "reopened once");
            c.closeChannelForTest(0);
            c.report(2, 1, HostPort.of("10.0.0.1", 80), 0, 1);
            eq(2L, c.reopenedChannels(), "a report reopens it too");
            // Closed while a request waits (an interrupt does not wake it): the
            // next report replaces the channel and wakes the request, which
            // fails at once (within the 10 s the test waits) instead of at
            // its 30 s timeout.
            try (Call w = new Call("waiter", () -> c.getHost(1, 1))) {
                awaitGetHost(fake, 1, 1); // sent on the channel: waiting, or about to
                c.closeChannelForTest(0);
                c.report(2, 1, HostPort.of("10.0.0.1", 80), 0, 1);
                w.await("the waiting request");
                checkClosedUnder(w.error, "woken by the report");
            }
            eq(3L, c.reopenedChannels(), "replaced once more");
            eq(80, c.getHost(2, 1).port(), "the client works afterwards");
            eq(3L, c.reopenedChannels(), "no further reopen needed");
        }
    }

    private static void wakeUpStress() throws Exception {
        // Rounds of: a request waits on the channel (modid 1 is never
        // answered), the channel is closed under it as an interrupt inside a
        // socket call does (no wake-up), and the next call on that port, a
        // report or a request of another thread, must wake it: it fails with
        // a LarsIoException at once (within the 10 s the test waits for it)
        // instead of at its 30 s timeout. A random spin
        // moves the close around the waiter entering its select.
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST && Pb.intField(f, 2) != 1) {
                reply.send(Pb.hostResponse(Pb.intField(f, 1), Pb.intField(f, 2), Pb.intField(f, 3), 0, 1, 80));
            }
        }); LarsClient c = client(fake.port(), 1, 30_000)) {
            Random rnd = new Random(11);
            int rounds = 40;
            for (int round = 0; round < rounds; round++) {
                int cmdid = 100 + round;
                try (Call w = new Call("waiter", () -> c.getHost(1, cmdid))) {
                    awaitGetHost(fake, 1, cmdid);
                    for (int spin = rnd.nextInt(4_000); spin > 0; spin--) {
                        Thread.onSpinWait();
                    }
                    c.closeChannelForTest(0);
                    boolean byReport = round % 2 == 0;
                    // The next request queues behind the waiter on the port's
                    // lock: it must wake the waiter before queueing, or both
                    // wait 30 s.
                    try (Call next = new Call("next call", () -> byReport
                            ? reportReturning(c, HostPort.of("10.0.0.1", 80))
                            : c.getHost(2, cmdid))) {
                        w.await("round " + round + ": the waiting request");
                        checkClosedUnder(w.error, "round " + round + ": woken by the next "
                                + (byReport ? "report" : "request"));
                        next.await("round " + round + ": the next call");
                        check(next.error == null, "round " + round + ": the next call succeeded: " + next.error);
                        if (!byReport) {
                            eq(80, ((HostPort) next.value).port(), "round " + round + ": the next request's answer");
                        }
                    }
                }
            }
            eq((long) rounds, c.reopenedChannels(), "one new channel per closed one");
            eq(80, c.getHost(2, 1).port(), "the client works afterwards");
        }
    }

    private static void reportNeverWaitsForARequest() throws Exception {
        // A request waits on the channel (modid 1, never answered) and a
        // second one (modid 3) is queued behind it on the port's lock; the
        // channel is closed under them. The fake answers modid 3 only once
        // it got a report: a report that needed the request lock to replace
        // the channel would queue behind that request, which then waits for
        // its timeout.
        boolean[] reported = new boolean[1];
        Object[] held = new Object[2];
        try (FakeAgent fake = new FakeAgent((req, reply) -> {
            Map<Integer, Object> f = Pb.body(req);
            if (Pb.msgid(req) == Wire.ID_REPORT_REQUEST) {
                reported[0] = true;
                if (held[0] != null) {
                    ((FakeAgent.Replier) held[0]).send((byte[]) held[1]);
                }
            } else if (Pb.msgid(req) == Wire.ID_GET_HOST_REQUEST && Pb.intField(f, 2) == 3) {
                byte[] r = Pb.hostResponse(Pb.intField(f, 1), 3, Pb.intField(f, 3), 0, 1, 80);
                if (reported[0]) {
                    reply.send(r);
                } else {
                    held[0] = reply;
                    held[1] = r;
                }
            }
        }); LarsClient c = client(fake.port(), 1, 5_000);
                Call first = new Call("first request", () -> c.getHost(1, 1))) {
            awaitGetHost(fake, 1, 1);
            try (Call second = new Call("second request", () -> c.getHost(3, 1))) {
                second.awaitParked("the second request queued on the port's lock");
                c.closeChannelForTest(0);
                try (Call report = new Call("report", () -> {
                    c.report(3, 1, HostPort.of("10.0.0.1", 80), 0, 1);
                    return null;
                })) {
                    report.await("the report");
                    check(report.error == null, "the report went out: " + report.error);
                }
                first.await("the first request");
                checkClosedUnder(first.error, "the first request woken by the report");
                second.await("the second request");
                check(second.error == null, "the second request answered after the report, not timed out: "
                        + second.error);
                eq(80, ((HostPort) second.value).port(), "the second request's answer");
            }
        }
    }

    private static void closeDuringWait() throws Exception {
        try (FakeAgent fake = FakeAgent.silent()) {
            LarsClient c = client(fake.port(), 1, 10_000);
            Throwable[] got = new Throwable[1];
            Thread t = new Thread(() -> {
                try {
                    c.getHost(1, 1);
                } catch (Throwable e) {
                    got[0] = e;
                }
            });
            long start = System.nanoTime();
            t.start();
            while (fake.received().isEmpty()) {
                Thread.sleep(1);
            }
            c.close();
            t.join(10_000);
            check(!t.isAlive(), "the waiting thread ended");
            check((System.nanoTime() - start) / 1_000_000 < 5_000, "ended by close, not the 10 s timeout");
            check(got[0] instanceof LarsIoException, "LarsIoException: " + got[0]);
            expect(IllegalStateException.class, () -> c.getHost(1, 1));
        }
    }

    // ---- against a real agent -------------------------------------------

    private static void agentEndToEnd() throws Exception {
        // Keys whose modid + cmdid cover every residue mod 3: each agent port
        // answers. (The agent forwards a request that reaches the wrong
        // shard, so the mapping itself is checked against fakes above.)
        List<String> routes = List.of(
                "11 1 192.168.1.177:9001 10.0.0.2:9002 127.0.0.1:9003", // sum 12: port 0
                "11 2 10.1.0.1:7001", // sum 13: port 1
                "11 3 10.2.0.1:7002 10.2.0.2:7003"); // sum 14: port 2
        try (RealAgent agent = RealAgent.start(routes, 11, 1);
                LarsClient c = client(agent.basePort(), 3, 50)) {
            Set<HostPort> three = Set.of(HostPort.of("192.168.1.177", 9001), HostPort.of("10.0.0.2", 9002),
                    HostPort.of("127.0.0.1", 9003));
            eq(three, new HashSet<>(c.getRoute(11, 1)), "get_route");
            eq(three, new HashSet<>(c.regInit(11, 1)), "reg_init");
            Map<HostPort, Integer> seen = new HashMap<>();
            for (int i = 0; i < 30; i++) {
                HostPort h = c.getHost(11, 1);
                check(three.contains(h), "a host of the key: " + h);
                seen.merge(h, 1, Integer::sum);
                c.report(11, 1, h, LarsRetCode.RET_SUCC, 1);
            }
            for (HostPort h : three) {
                check(seen.getOrDefault(h, 0) >= 6, "round robin over the three hosts: " + seen);
            }
            eq(HostPort.of("10.1.0.1", 7001), c.getHost(11, 2), "key on the second port");
            eq(Set.of(HostPort.of("10.2.0.1", 7002), HostPort.of("10.2.0.2", 7003)),
                    new HashSet<>(c.getRoute(11, 3)), "key on the third port");
            c.report(11, 3, "10.2.0.1", 7002, 1, 3);
            // An unknown key: NOEXIST (the agent starts pulling it from a dns
            // that is not there), and reg_init gives up after its attempts.
            expect(LarsNoExistException.class, () -> c.getHost(500, 1));
            expect(LarsNoExistException.class, () -> c.regInit(501, 1));
            eq(0L, c.discardedReplies(), "nothing discarded");
        }
    }

    // ---- helpers --------------------------------------------------------

    private static LarsClient client(int basePort, int portCount, long timeoutMs) throws LarsIoException {
        return LarsClient.builder().basePort(basePort).portCount(portCount).timeoutMillis(timeoutMs).build();
    }

    /** A client call running in its own thread, and how it ended. */
    private static final class Call implements AutoCloseable {
        private final Thread thread;
        private volatile Object value;
        private volatile Throwable error;

        Call(String name, java.util.concurrent.Callable<?> body) {
            thread = new Thread(() -> {
                try {
                    value = body.call();
                } catch (Throwable e) {
                    error = e;
                }
            }, name);
            thread.setDaemon(true);
            thread.start();
        }

        /** Waits up to 10 s for the call to end; fails the test if it did not. */
        void await(String what) throws InterruptedException {
            thread.join(10_000);
            check(!thread.isAlive(), what + " ended within 10 s");
        }

        /** Waits up to 5 s until the thread is parked (queued on a lock). */
        void awaitParked(String what) throws InterruptedException {
            long end = System.nanoTime() + 5_000_000_000L;
            while (thread.getState() != Thread.State.WAITING) {
                check(thread.isAlive() && System.nanoTime() - end < 0, what + " within 5 s");
                Thread.sleep(1);
            }
        }

        /** Ends a call still running (a failed test): an interrupt ends its wait. */
        @Override
        public void close() {
            thread.interrupt();
            try {
                thread.join(5_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            check(!thread.isAlive(), thread.getName() + " stopped");
        }
    }

    /** Reports a success of {@code host} for key (2, 1); returns {@code host}. */
    private static HostPort reportReturning(LarsClient c, HostPort host) throws LarsException {
        c.report(2, 1, host, 0, 1);
        return host;
    }

    /** Waits up to 5 s until the fake got a GetHostRequest for (modid, cmdid). */
    private static void awaitGetHost(FakeAgent fake, int modid, int cmdid) throws InterruptedException {
        long end = System.nanoTime() + 5_000_000_000L;
        while (fake.received().stream().noneMatch(d -> Pb.msgid(d) == Wire.ID_GET_HOST_REQUEST
                && Pb.intField(Pb.body(d), 2) == modid && Pb.intField(Pb.body(d), 3) == cmdid)) {
            check(System.nanoTime() - end < 0, "the agent got the request of modid " + modid + " cmdid " + cmdid
                    + " within 5 s");
            Thread.sleep(1);
        }
    }

    /** Checks a request failed because its channel was closed under it. */
    private static void checkClosedUnder(Throwable got, String what) {
        check(got instanceof LarsIoException && got.getMessage().contains("was closed under this request"),
                what + ": want a LarsIoException (closed under this request), got " + got);
    }

    private static List<byte[]> awaitDatagrams(FakeAgent fake, int n) throws InterruptedException {
        for (int i = 0; i < 500 && fake.received().size() < n; i++) {
            Thread.sleep(10);
        }
        List<byte[]> got = fake.received();
        eq(n, got.size(), "datagrams received");
        return got;
    }

    private static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private static void eq(Object want, Object got, String what) {
        if (!java.util.Objects.equals(want, got)) {
            throw new AssertionError(what + ": want " + want + ", got " + got);
        }
    }

    private static IllegalArgumentException throwsIae(Body call) {
        return expect(IllegalArgumentException.class, call);
    }

    private static <T extends Throwable> T expect(Class<T> type, Body call) {
        try {
            call.run();
        } catch (Throwable e) {
            if (type.isInstance(e)) {
                return type.cast(e);
            }
            throw new AssertionError("want " + type.getSimpleName() + ", got " + e, e);
        }
        throw new AssertionError("want " + type.getSimpleName() + ", got no exception");
    }
}
