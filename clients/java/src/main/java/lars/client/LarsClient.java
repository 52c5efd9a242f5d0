package lars.client;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.PortUnreachableException;
import java.net.StandardProtocolFamily;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ClosedSelectorException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The blocking UDP client of the local lars agent: asks which host serves a
 * service {@code (modid, cmdid)} and reports how calls to it went.
 *
 * <p>One connected UDP socket per agent port; a request for
 * {@code (modid, cmdid)} goes to port {@code basePort + (modid + cmdid) % portCount}
 * (the mapping existing agents rely on). Every request waits at most the
 * receive timeout (default 50 ms) after sending; while waiting, anything that
 * is not its answer (a reply with another seq or key, e.g. the late reply of
 * a request that timed out earlier, a wrong message type, a malformed
 * datagram) is discarded and counted in {@link #discardedReplies()}, without
 * extending the deadline.
 *
 * <pre>{@code
 * try (LarsClient lars = LarsClient.builder().build()) {   // 127.0.0.1:8888..8890, 50 ms
 *     lars.regInit(modid, cmdid);
 *     HostPort host = lars.getHost(modid, cmdid);
 *     lars.report(modid, cmdid, host, LarsRetCode.RET_SUCC, elapsedMs);
 * }
 * }</pre>
 *
 * <h2>Threads</h2>
 * A {@code LarsClient} is thread-safe. Each agent socket has a lock held from
 * the send of a request to its reply (or timeout), so one thread never reads
 * another's reply; requests of threads sharing a client that map to the same
 * agent port therefore wait for each other. For throughput give each thread
 * its own client (a client is {@code portCount} sockets). {@code report}
 * only sends and never waits for that lock.
 *
 * <p>A request of an interrupted thread, or one interrupted while it waits,
 * fails with a {@link LarsIoException} and leaves the interrupt flag set;
 * the client stays usable. {@link #close()} ends a waiting request of
 * another thread at once.
 *
 * <h2>Errors</h2>
 * Requests throw a {@link LarsException} subclass (see there); bad arguments
 * (negative ids, a malformed ip text, a port outside 1..65535, a negative
 * latency) throw {@link IllegalArgumentException} before anything is sent;
 * any call on a closed client throws {@link IllegalStateException}.
 */
public final class LarsClient implements AutoCloseable {
    /** The agent's address in the original deployment. */
    public static final String DEFAULT_AGENT_IP = "127.0.0.1";
    /** The agent's first UDP port in the original deployment. */
    public static final int DEFAULT_BASE_PORT = 8888;
    /** How many UDP ports the original agent listens on (8888, 8889, 8890). */
    public static final int DEFAULT_PORT_COUNT = 3;
    /** Default receive timeout of one request. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofMillis(50);
    /** How many times {@link #regInit} asks for the route (the original's 3). */
    public static final int REG_INIT_ATTEMPTS = 3;
    /** How long {@link #regInit} waits between attempts (the original's 50 ms). */
    public static final Duration REG_INIT_WAIT = Duration.ofMillis(50);
    /** The largest timecost a report carries (uint32 milliseconds). */
    static final long MAX_TIMECOST = 0xFFFF_FFFFL;

    /** Largest datagram the agent can send (one frame: 8 + 65527 bytes). */
    private static final int MAX_DATAGRAM = 65_535;
    /** Retries of a send that found the socket buffer full. */
    private static final int SEND_ATTEMPTS = 100;
    /** The selector's per-key action: nothing (the caller reads). */
    private static final java.util.function.Consumer<SelectionKey> NO_ACTION = k -> { };
    private static final System.Logger LOG = System.getLogger("lars.client");

    private final String agentIp;
    private final int basePort;
    private final AgentPort[] ports;
    private final Duration timeout;
    private final long timeoutNanos;
    private final AtomicInteger seq = new AtomicInteger();
    private final AtomicLong discarded = new AtomicLong();
    private final AtomicLong reopened = new AtomicLong();
    private volatile boolean closed;

    private LarsClient(Builder b) throws LarsIoException {
        this.agentIp = b.agentIp;
        this.basePort = b.basePort;
        this.timeout = b.timeout;
        this.timeoutNanos = b.timeout.toNanos();
        InetAddress ip;
        try {
            ip = InetAddress.getByAddress(ipBytes(HostPort.parseIpv4(b.agentIp)));
        } catch (UnknownHostException e) {
            // getByAddress only fails for a byte[] of the wrong length; ours has 4.
            throw new LarsIoException("cannot use agent address " + b.agentIp, e);
        }
        this.ports = new AgentPort[b.portCount];
        for (int i = 0; i < b.portCount; i++) {
            InetSocketAddress addr = new InetSocketAddress(ip, b.basePort + i);
            try {
                ports[i] = new AgentPort(addr);
            } catch (IOException e) {
                for (int j = 0; j < i; j++) {
                    ports[j].closeQuietly();
                }
                throw new LarsIoException("cannot open a UDP socket to the agent at " + addrText(addr), e);
            }
        }
    }

    /** A builder starting from the defaults (127.0.0.1, ports 8888..8890, 50 ms). */
    public static Builder builder() {
        return new Builder();
    }

    /** The agent's IPv4 address. */
    public String agentIp() {
        return agentIp;
    }

    /** The agent's first UDP port. */
    public int basePort() {
        return basePort;
    }

    /** How many consecutive UDP ports the agent listens on. */
    public int portCount() {
        return ports.length;
    }

    /** The receive timeout of every request. */
    public Duration timeout() {
        return timeout;
    }

    /**
     * The agent UDP port serving {@code (modid, cmdid)}:
     * {@code basePort + (modid + cmdid) % portCount}.
     *
     * @throws IllegalArgumentException if an id is negative
     */
    public int agentPort(int modid, int cmdid) {
        checkIds(modid, cmdid);
        return basePort + index(modid, cmdid);
    }

    /**
     * How many datagrams this client discarded while waiting for an answer
     * (stale or foreign replies, wrong message types, malformed frames).
     */
    public long discardedReplies() {
        return discarded.get();
    }

    /**
     * Asks the agent for one host of {@code (modid, cmdid)}.
     *
     * @throws LarsNoExistException first request of a key (the agent starts
     *     pulling it; see {@link #regInit})
     * @throws LarsOverloadException every host is overloaded
     * @throws LarsSystemException the agent failed or answered nonsense
     * @throws LarsTimeoutException no answer within the timeout
     * @throws LarsIoException a socket error (e.g. no agent listens)
     * @throws IllegalArgumentException an id is negative
     */
    public HostPort getHost(int modid, int cmdid) throws LarsException {
        checkOpen();
        checkIds(modid, cmdid);
        int s = seq.getAndIncrement();
        byte[] req = Wire.getHostRequest(s, modid, cmdid);
        AgentPort p = ports[index(modid, cmdid)];
        Wire.HostResponse r = null;
        p.lock.lock();
        try {
            begin(p, req);
            while (r == null) {
                int n = receive(p);
                Wire.HostResponse m = Wire.hostResponse(p.buf, n);
                if (m != null && m.seq() == s && m.modid() == modid && m.cmdid() == cmdid) {
                    r = m;
                } else {
                    discard(p, n, m == null ? "not a GetHostResponse" : "a reply to another request");
                }
            }
        } finally {
            p.lock.unlock();
        }
        switch (r.retcode()) {
            case LarsRetCode.RET_SUCC -> {
                if (!r.hasHost() || r.port() < 1 || r.port() > 65_535) {
                    throw new LarsSystemException("the agent answered RET_SUCC for " + key(modid, cmdid)
                            + " without a valid host (port " + r.port() + ")");
                }
                return HostPort.ofBits(r.ip(), r.port());
            }
            case LarsRetCode.RET_OVERLOAD -> throw new LarsOverloadException(
                    "every host of " + key(modid, cmdid) + " is overloaded (RET_OVERLOAD)");
            case LarsRetCode.RET_NOEXIST -> throw new LarsNoExistException(
                    "no host exists for " + key(modid, cmdid) + " (yet): the agent answered RET_NOEXIST");
            case LarsRetCode.RET_SYSTEM_ERROR -> throw new LarsSystemException(
                    "the agent answered RET_SYSTEM_ERROR for " + key(modid, cmdid));
            default -> throw new LarsSystemException(
                    "the agent answered an unknown return code " + r.retcode() + " for " + key(modid, cmdid));
        }
    }

    /**
     * Asks the agent for every host of {@code (modid, cmdid)}. An empty list
     * is a valid answer (the agent does not know the key yet and starts
     * pulling it). The reply carries no seq: it is matched by
     * {@code (modid, cmdid)}. Hosts with an invalid port are left out.
     *
     * @return an unmodifiable list
     * @throws LarsTimeoutException no answer within the timeout
     * @throws LarsIoException a socket error (e.g. no agent listens)
     * @throws IllegalArgumentException an id is negative
     */
    public List<HostPort> getRoute(int modid, int cmdid) throws LarsException {
        checkOpen();
        checkIds(modid, cmdid);
        byte[] req = Wire.getRouteRequest(modid, cmdid);
        AgentPort p = ports[index(modid, cmdid)];
        Wire.RouteResponse r = null;
        p.lock.lock();
        try {
            begin(p, req);
            while (r == null) {
                int n = receive(p);
                Wire.RouteResponse m = Wire.routeResponse(p.buf, n);
                if (m != null && m.modid() == modid && m.cmdid() == cmdid) {
                    r = m;
                } else {
                    discard(p, n, m == null ? "not a GetRouteResponse" : "a reply for another key");
                }
            }
        } finally {
            p.lock.unlock();
        }
        List<HostPort> hosts = new ArrayList<>(r.hosts().size());
        for (int[] h : r.hosts()) {
            if (h[1] >= 1 && h[1] <= 65_535) {
                hosts.add(HostPort.ofBits(h[0], h[1]));
            }
        }
        return Collections.unmodifiableList(hosts);
    }

    /**
     * Registers interest in {@code (modid, cmdid)} before first use, like the
     * original: asks for the route up to {@link #REG_INIT_ATTEMPTS} times,
     * waiting {@link #REG_INIT_WAIT} after each empty answer or timeout, and
     * returns the hosts.
     *
     * @throws LarsNoExistException the route stayed empty
     * @throws LarsTimeoutException the last attempt timed out
     * @throws LarsIoException a socket error (at once), or the thread was
     *     interrupted while waiting (its interrupt flag is set again)
     * @throws IllegalArgumentException an id is negative
     */
    public List<HostPort> regInit(int modid, int cmdid) throws LarsException {
        checkOpen();
        checkIds(modid, cmdid);
        LarsException last = null;
        for (int attempt = 1; attempt <= REG_INIT_ATTEMPTS; attempt++) {
            try {
                List<HostPort> hosts = getRoute(modid, cmdid);
                if (!hosts.isEmpty()) {
                    return hosts;
                }
                last = new LarsNoExistException("no host exists for " + key(modid, cmdid) + " after "
                        + attempt + " get_route attempt(s) " + REG_INIT_WAIT.toMillis() + " ms apart");
            } catch (LarsTimeoutException e) {
                last = e;
            }
            if (attempt < REG_INIT_ATTEMPTS) {
                try {
                    Thread.sleep(REG_INIT_WAIT.toMillis());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new LarsIoException("interrupted during regInit of " + key(modid, cmdid), e);
                }
            }
        }
        throw last;
    }

    /**
     * Tells the agent how a call to {@code host} went. Nothing is awaited
     * (the agent never replies).
     *
     * @param retcode 0 ({@link LarsRetCode#RET_SUCC}) if the call succeeded,
     *     anything else if it failed
     * @param latencyMs how long the call took, for successes as well as
     *     failures (the agent prefers faster hosts and weighs slow failures
     *     more): sent in whole milliseconds, at least 1 (0 on the wire means
     *     "unknown"), saturating at 2^32-1
     * @throws LarsIoException a socket error
     * @throws IllegalArgumentException an id or the latency is negative, or
     *     {@code host} is null
     */
    public void report(int modid, int cmdid, HostPort host, int retcode, long latencyMs) throws LarsException {
        if (latencyMs < 0) {
            throw new IllegalArgumentException("latency " + latencyMs + " ms is negative");
        }
        send(modid, cmdid, host, retcode, (int) Math.min(Math.max(latencyMs, 1), MAX_TIMECOST));
    }

    /**
     * {@link #report(int, int, HostPort, int, long)} without a latency: sends
     * timecost 0 ("unknown"), like the original clients; such a report is
     * neutral for the agent's latency estimate.
     */
    public void report(int modid, int cmdid, HostPort host, int retcode) throws LarsException {
        send(modid, cmdid, host, retcode, 0);
    }

    /**
     * {@link #report(int, int, HostPort, int, long)} with the host as a
     * dotted-quad text and a port.
     *
     * @throws IllegalArgumentException also if {@code ip} is not a dotted
     *     quad or {@code port} is not in 1..65535
     */
    public void report(int modid, int cmdid, String ip, int port, int retcode, long latencyMs) throws LarsException {
        report(modid, cmdid, HostPort.of(ip, port), retcode, latencyMs);
    }

    /**
     * {@link #report(int, int, HostPort, int)} with the host as a dotted-quad
     * text and a port.
     *
     * @throws IllegalArgumentException also if {@code ip} is not a dotted
     *     quad or {@code port} is not in 1..65535
     */
    public void report(int modid, int cmdid, String ip, int port, int retcode) throws LarsException {
        report(modid, cmdid, HostPort.of(ip, port), retcode);
    }

    /**
     * Closes the sockets. A request in progress in another thread ends at
     * once with a {@link LarsIoException}. Idempotent; later calls throw
     * {@link IllegalStateException}.
     */
    @Override
    public void close() {
        closed = true;
        for (AgentPort p : ports) {
            p.closeChannel();
        }
        // The selectors are used under the locks: close each once its
        // request (woken above) is over.
        for (AgentPort p : ports) {
            p.lock.lock();
            try {
                p.closeQuietly();
            } finally {
                p.lock.unlock();
            }
        }
    }

    @Override
    public String toString() {
        return "LarsClient[" + agentIp + ":" + basePort + ".." + (basePort + ports.length - 1) + ", timeout "
                + timeout.toMillis() + " ms]";
    }

    // ---- internals ------------------------------------------------------

    private void send(int modid, int cmdid, HostPort host, int retcode, int timecost) throws LarsException {
        checkOpen();
        checkIds(modid, cmdid);
        if (host == null) {
            throw new IllegalArgumentException("host is null");
        }
        byte[] req = Wire.reportRequest(modid, cmdid, host.ipBits(), host.port(), retcode, timecost);
        AgentPort p = ports[index(modid, cmdid)];
        if (!p.channel.isOpen()) {
            reopen(p); // closed by an interrupt of an earlier request
        }
        sendDatagram(p, req);
    }

    /** Under the port's lock: checks the client is open, sets the deadline, sends. */
    private void begin(AgentPort p, byte[] req) throws LarsException {
        checkOpen();
        if (!p.channel.isOpen()) {
            reopen(p); // closed by an interrupt of an earlier request
        }
        p.deadline = System.nanoTime() + timeoutNanos;
        sendDatagram(p, req);
    }

    /**
     * Under the port's lock: the length of the next datagram (copied into
     * {@code p.buf}), waiting until the deadline.
     */
    private int receive(AgentPort p) throws LarsException {
        while (true) {
            long left = p.deadline - System.nanoTime();
            if (left <= 0) {
                throw new LarsTimeoutException("no reply from the agent at " + addrText(p.addr) + " within "
                        + timeout.toMillis() + " ms");
            }
            // Wait first: right after a send the answer is not there yet, so
            // a read first would only cost a system call more.
            try {
                // Whole milliseconds, rounded up (0 would mean "forever").
                p.selector.select(NO_ACTION, Math.max(1, (left + 999_999) / 1_000_000));
            } catch (IOException | ClosedSelectorException e) {
                throw new LarsIoException("cannot wait for the agent at " + addrText(p.addr), e);
            }
            checkInterrupt(p);
            int n = read(p);
            if (n > 0) {
                return n;
            }
        }
    }

    /** Under the port's lock: one non-blocking read; 0 when nothing is waiting. */
    private int read(AgentPort p) throws LarsException {
        p.rbuf.clear();
        int n;
        try {
            n = p.channel.read(p.rbuf);
        } catch (ClosedChannelException e) {
            reopen(p);
            throw closedUnder(p, e);
        } catch (IOException e) {
            throw new LarsIoException("socket error receiving from the agent at " + addrText(p.addr), e);
        }
        if (n > 0) {
            p.rbuf.flip();
            p.rbuf.get(p.buf, 0, n);
        }
        return n;
    }

    /**
     * Counts and logs a discarded datagram; a timeout if the deadline passed
     * meanwhile (a stream of stale datagrams must not keep a request alive).
     */
    private void discard(AgentPort p, int len, String why) throws LarsTimeoutException {
        discarded.incrementAndGet();
        LOG.log(System.Logger.Level.DEBUG, "discarding a datagram of {0} bytes from {1}: {2}", len,
                addrText(p.addr), why);
        if (p.deadline - System.nanoTime() <= 0) {
            throw new LarsTimeoutException("no reply from the agent at " + addrText(p.addr) + " within "
                    + timeout.toMillis() + " ms");
        }
    }

    /**
     * Sends one datagram. A connected UDP socket reports an earlier ICMP
     * "port unreachable" on its next call; that stale error is retried once
     * so it does not fail an unrelated later request. (Callers need not hold
     * the port's lock: sends and reads of a channel may run at once.)
     */
    private void sendDatagram(AgentPort p, byte[] req) throws LarsException {
        checkInterrupt(p);
        ByteBuffer out = ByteBuffer.wrap(req);
        try {
            for (int attempt = 0; ; attempt++) {
                int sent;
                try {
                    sent = p.channel.write(out);
                } catch (PortUnreachableException stale) {
                    sent = p.channel.write(out);
                }
                if (sent > 0) {
                    return;
                }
                // Non-blocking: 0 when the socket's send buffer is full (a
                // loopback UDP socket hardly ever is); let the kernel drain it.
                if (attempt == SEND_ATTEMPTS) {
                    throw new LarsIoException("the socket send buffer to the agent at " + addrText(p.addr)
                            + " stayed full; datagram dropped", null);
                }
                Thread.yield();
            }
        } catch (ClosedChannelException e) {
            reopen(p);
            throw closedUnder(p, e);
        } catch (IOException e) {
            throw new LarsIoException("socket error sending to the agent at " + addrText(p.addr), e);
        }
    }

    /**
     * Opens a new channel for a port whose channel was closed under a
     * request while the client is open: an interrupt inside a channel call
     * closes the channel (for every thread using it). Takes the port's lock
     * (reentrant: a request holds it already, a report does not).
     */
    private void reopen(AgentPort p) throws LarsIoException {
        if (!p.lock.isHeldByCurrentThread()) {
            // A request waiting on the closed channel would only notice at its timeout.
            p.selector.wakeup();
        }
        p.lock.lock();
        try {
            if (p.reopen(closed)) {
                reopened.incrementAndGet();
            }
        } finally {
            p.lock.unlock();
        }
    }

    /** How many times a port's channel was opened again (see {@link #reopen}); for tests. */
    long reopenedChannels() {
        return reopened.get();
    }

    /**
     * Closes the channel of port {@code index} as an interrupt inside a
     * channel call does (without waking a request waiting on it); for tests.
     */
    void closeChannelForTest(int index) throws IOException {
        ports[index].channel.close();
    }

    private LarsIoException closedUnder(AgentPort p, ClosedChannelException e) {
        if (e instanceof ClosedByInterruptException) {
            return interrupted(p, e);
        }
        return new LarsIoException("the socket to the agent at " + addrText(p.addr) + " was closed"
                + (closed ? " (the client is closed)" : " under this request (by an interrupt of another thread)"), e);
    }

    /**
     * Fails a request of an interrupted thread before it touches the channel
     * (an interrupt during channel I/O closes the channel), keeping the
     * thread's interrupt flag set.
     */
    private static void checkInterrupt(AgentPort p) throws LarsIoException {
        if (Thread.currentThread().isInterrupted()) {
            throw interrupted(p, new InterruptedIOException("the thread is interrupted"));
        }
    }

    private static LarsIoException interrupted(AgentPort p, IOException cause) {
        return new LarsIoException("interrupted talking to the agent at " + addrText(p.addr), cause);
    }

    private int index(int modid, int cmdid) {
        return (int) (((long) modid + cmdid) % ports.length);
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this LarsClient is closed");
        }
    }

    static void checkIds(int modid, int cmdid) {
        if (modid < 0 || cmdid < 0) {
            throw new IllegalArgumentException(
                    "modid and cmdid must not be negative (got modid " + modid + ", cmdid " + cmdid + ")");
        }
    }

    private static String key(int modid, int cmdid) {
        return "modid " + modid + " cmdid " + cmdid;
    }

    private static String addrText(InetSocketAddress a) {
        return a.getAddress().getHostAddress() + ":" + a.getPort();
    }

    private static byte[] ipBytes(int bits) {
        return new byte[] {(byte) (bits >>> 24), (byte) (bits >>> 16), (byte) (bits >>> 8), (byte) bits};
    }

    /**
     * One agent port: its connected non-blocking channel, the selector that
     * waits for it, and what its request lock protects.
     */
    private static final class AgentPort {
        final InetSocketAddress addr;
        final ReentrantLock lock = new ReentrantLock();
        /** Replaced (under the lock) when an interrupt closed it. */
        volatile DatagramChannel channel;
        /** Selects under {@link #lock}; replaced with the channel (wakeup() needs no lock). */
        volatile Selector selector;
        /** Receive buffers, used under {@link #lock}. */
        final ByteBuffer rbuf = ByteBuffer.allocateDirect(MAX_DATAGRAM);
        final byte[] buf = new byte[MAX_DATAGRAM];
        /** The deadline (System.nanoTime) of the request in progress. */
        long deadline;

        AgentPort(InetSocketAddress addr) throws IOException {
            this.addr = addr;
            open();
        }

        private void open() throws IOException {
            DatagramChannel c = DatagramChannel.open(StandardProtocolFamily.INET);
            Selector s = null;
            try {
                c.configureBlocking(false);
                c.connect(addr);
                s = Selector.open();
                c.register(s, SelectionKey.OP_READ);
            } catch (IOException | RuntimeException e) {
                c.close();
                if (s != null) {
                    s.close();
                }
                throw e;
            }
            this.selector = s;
            this.channel = c;
        }

        /**
         * Under the lock: a new channel if this one was closed, unless the
         * client is closed; true if it opened one.
         */
        boolean reopen(boolean clientClosed) throws LarsIoException {
            if (clientClosed || channel.isOpen()) {
                return false;
            }
            closeQuietly();
            try {
                open();
            } catch (IOException e) {
                throw new LarsIoException("cannot reopen the UDP socket to the agent at " + addrText(addr), e);
            }
            return true;
        }

        /** Closes the channel and wakes a request waiting on it. */
        void closeChannel() {
            try {
                channel.close();
            } catch (IOException e) {
                LOG.log(System.Logger.Level.DEBUG, "closing the socket to {0}: {1}", addrText(addr), e);
            }
            selector.wakeup();
        }

        /** Under the lock (or before the port is shared): closes channel and selector. */
        void closeQuietly() {
            try {
                channel.close();
                selector.close();
            } catch (IOException e) {
                LOG.log(System.Logger.Level.DEBUG, "closing the socket to {0}: {1}", addrText(addr), e);
            }
        }
    }

    /**
     * Options of a {@link LarsClient}, checked as they are set: a bad value
     * throws {@link IllegalArgumentException} naming it.
     */
    public static final class Builder {
        private String agentIp = DEFAULT_AGENT_IP;
        private int basePort = DEFAULT_BASE_PORT;
        private int portCount = DEFAULT_PORT_COUNT;
        private Duration timeout = DEFAULT_TIMEOUT;

        private Builder() {}

        /** The agent's dotted-quad IPv4 address (default 127.0.0.1; names are not resolved). */
        public Builder agentIp(String ip) {
            HostPort.parseIpv4(ip);
            this.agentIp = ip;
            return this;
        }

        /** The agent's first UDP port, 1..65535 (default 8888). */
        public Builder basePort(int port) {
            this.basePort = HostPort.checkPort(port);
            return this;
        }

        /** How many consecutive UDP ports the agent listens on, at least 1 (default 3). */
        public Builder portCount(int count) {
            if (count < 1) {
                throw new IllegalArgumentException("port count " + count + " must be at least 1");
            }
            this.portCount = count;
            return this;
        }

        /**
         * The receive timeout of one request, 1 ms .. 2^31-1 ms, in whole
         * milliseconds (default 50 ms).
         */
        public Builder timeout(Duration timeout) {
            if (timeout == null || timeout.toNanos() < 1_000_000L || timeout.toMillis() > Integer.MAX_VALUE
                    || timeout.toNanos() % 1_000_000L != 0) {
                throw new IllegalArgumentException("timeout " + timeout
                        + " must be a whole number of milliseconds between 1 ms and 2^31-1 ms");
            }
            this.timeout = timeout;
            return this;
        }

        /** {@link #timeout(Duration)} in milliseconds. */
        public Builder timeoutMillis(long millis) {
            if (millis < 1 || millis > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("timeout " + millis + " ms must be between 1 and 2^31-1 ms");
            }
            return timeout(Duration.ofMillis(millis));
        }

        /**
         * Opens one UDP socket per agent port (connecting a UDP socket sends
         * nothing, so this succeeds even if no agent runs).
         *
         * @throws IllegalArgumentException if basePort + portCount - 1 exceeds 65535
         * @throws LarsIoException if a socket cannot be opened
         */
        public LarsClient build() throws LarsIoException {
            if ((long) basePort + portCount - 1 > 65_535) {
                throw new IllegalArgumentException("ports " + basePort + ".." + ((long) basePort + portCount - 1)
                        + " go beyond 65535 (base port " + basePort + ", port count " + portCount + ")");
            }
            return new LarsClient(this);
        }
    }
}
