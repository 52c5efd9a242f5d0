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
 * another thread at once. Should an interrupt inside a socket call close a
 * port's socket under a waiting request, the next call on that port opens
 * a new socket and the waiting request fails at once with a
 * {@link LarsIoException}.
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
                ports[i] = new AgentPort(addr, reopened);
            } catch (IOException e) {
                for (int j = 0; j < i; j++) {
                    ports[j].shutDown();
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
        p.link(); // wakes a request waiting on a closed channel before queueing behind it
        p.lock.lock();
        try {
            Link l = begin(p, req);
            while (r == null) {
                int n = receive(p, l);
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
        p.link(); // wakes a request waiting on a closed channel before queueing behind it
        p.lock.lock();
        try {
            Link l = begin(p, req);
            while (r == null) {
                int n = receive(p, l);
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
            p.shutDown();
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
        sendDatagram(p, p.link(), req); // never takes the request lock
    }

    /**
     * Under the port's lock: checks the client is open, sets the deadline,
     * sends; the link the request was sent on, the one to wait on.
     */
    private Link begin(AgentPort p, byte[] req) throws LarsException {
        checkOpen();
        Link l = p.link();
        p.deadline = System.nanoTime() + timeoutNanos;
        sendDatagram(p, l, req);
        return l;
    }

    /**
     * Under the port's lock: the length of the next datagram on {@code l}
     * (copied into {@code p.buf}), waiting until the deadline. Fails at once
     * if {@code l} was closed or replaced: checked before every wait, and a
     * replaced link's selector is closed, which ends a wait in progress and
     * fails any later one, so the request cannot miss it.
     */
    private int receive(AgentPort p, Link l) throws LarsException {
        while (true) {
            long left = p.deadline - System.nanoTime();
            if (left <= 0) {
                throw new LarsTimeoutException("no reply from the agent at " + addrText(p.addr) + " within "
                        + timeout.toMillis() + " ms");
            }
            if (p.current() != l || !l.channel.isOpen()) {
                throw closedUnder(p, l, null);
            }
            // Wait first: right after a send the answer is not there yet, so
            // a read first would only cost a system call more.
            try {
                // Whole milliseconds, rounded up (0 would mean "forever").
                l.selector.select(NO_ACTION, Math.max(1, (left + 999_999) / 1_000_000));
            } catch (ClosedSelectorException e) {
                throw closedUnder(p, l, null);
            } catch (IOException e) {
                throw new LarsIoException("cannot wait for the agent at " + addrText(p.addr), e);
            }
            checkInterrupt(p);
            int n = read(p, l);
            if (n > 0) {
                return n;
            }
        }
    }

    /** Under the port's lock: one non-blocking read; 0 when nothing is waiting. */
    private int read(AgentPort p, Link l) throws LarsException {
        p.rbuf.clear();
        int n;
        try {
            n = l.channel.read(p.rbuf);
        } catch (ClosedChannelException e) {
            throw closedUnder(p, l, e);
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
     * Sends one datagram on {@code l}. A connected UDP socket reports an
     * earlier ICMP "port unreachable" on its next call; that stale error is
     * retried once so it does not fail an unrelated later request. (Callers
     * need not hold the port's lock: sends and reads of a channel may run at
     * once.)
     */
    private void sendDatagram(AgentPort p, Link l, byte[] req) throws LarsException {
        checkInterrupt(p);
        ByteBuffer out = ByteBuffer.wrap(req);
        try {
            for (int attempt = 0; ; attempt++) {
                int sent;
                try {
                    sent = l.channel.write(out);
                } catch (PortUnreachableException stale) {
                    sent = l.channel.write(out);
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
            throw closedUnder(p, l, e);
        } catch (IOException e) {
            throw new LarsIoException("socket error sending to the agent at " + addrText(p.addr), e);
        }
    }

    /** How many times a port's channel was replaced (see {@link AgentPort#replace}); for tests. */
    long reopenedChannels() {
        return reopened.get();
    }

    /**
     * Closes the channel of port {@code index} as an interrupt inside a
     * channel call does (without waking a request waiting on it); for tests.
     */
    void closeChannelForTest(int index) throws IOException {
        ports[index].current().channel.close();
    }

    /**
     * The error of a call whose link {@code l} was closed under it; replaces
     * the link (unless the client is closed), so a request waiting on it is
     * woken and the next call gets a new one.
     */
    private LarsIoException closedUnder(AgentPort p, Link l, ClosedChannelException e) {
        if (!closed) {
            try {
                p.replace(l);
            } catch (LarsIoException reopenFailed) {
                return reopenFailed; // the next call tries again
            }
        }
        if (e instanceof ClosedByInterruptException) {
            return interrupted(p, e);
        }
        return new LarsIoException("the socket to the agent at " + addrText(p.addr) + " was closed"
                + (closed ? " (the client is closed)" : " under this request (by an interrupt inside a socket call)"),
                e);
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
     * One agent port: its current {@link Link}, the lock a request holds from
     * its send to its reply, and what that lock protects.
     *
     * <p>An interrupt inside a channel call may close the channel, for every
     * thread, without waking a request waiting on it. So every call first
     * takes the port's link through {@link #link()}, which replaces a closed
     * one at once, without the request lock (a report never waits for a
     * request), and retires the old link: closing its selector ends a wait in
     * progress on it and fails any later one. A waiting request is thus
     * woken by the next call on its port, whenever it enters its wait.
     */
    private static final class AgentPort {
        final InetSocketAddress addr;
        /** Held by a request from its send to its reply (or error); never by a report. */
        final ReentrantLock lock = new ReentrantLock();
        /** Receive buffers, used under {@link #lock}. */
        final ByteBuffer rbuf = ByteBuffer.allocateDirect(MAX_DATAGRAM);
        final byte[] buf = new byte[MAX_DATAGRAM];
        /** The deadline (System.nanoTime) of the request in progress. */
        long deadline;
        /** Counts replaced links (the client's counter). */
        private final AtomicLong replaced;
        /** Guards replacing {@link #link} and shutting down: held only to open or close sockets, never to wait. */
        private final Object swap = new Object();
        /** The channel and selector in use; replaced as a whole under {@link #swap}. */
        private volatile Link link;
        /** Set (under {@link #swap}) when the client closes: no new link is opened. */
        private boolean shut;

        AgentPort(InetSocketAddress addr, AtomicLong replaced) throws IOException {
            this.addr = addr;
            this.replaced = replaced;
            this.link = Link.open(addr);
        }

        /** The link in use, as it is (possibly closed). */
        Link current() {
            return link;
        }

        /**
         * The link to use: the current one, or a new one if its channel was
         * closed (which wakes a request waiting on the closed one).
         *
         * @throws LarsIoException the client is closed, or no socket could be opened
         */
        Link link() throws LarsIoException {
            Link l = link;
            return l.channel.isOpen() ? l : replace(l);
        }

        /**
         * Retires {@code stale} (a request waiting on it wakes at once) and
         * returns the port's open link, opening one if {@code stale} is still
         * the current link or the current one is closed too.
         *
         * @throws LarsIoException the client is closed, or no socket could be opened
         */
        Link replace(Link stale) throws LarsIoException {
            synchronized (swap) {
                stale.retire();
                Link cur = link;
                if (cur != stale && cur.channel.isOpen()) {
                    return cur; // another thread replaced it already
                }
                cur.retire();
                if (shut) {
                    throw new LarsIoException("the socket to the agent at " + addrText(addr)
                            + " was closed: the client is closed", null);
                }
                try {
                    link = Link.open(addr);
                } catch (IOException e) {
                    throw new LarsIoException("cannot reopen the UDP socket to the agent at " + addrText(addr), e);
                }
                replaced.incrementAndGet();
                LOG.log(System.Logger.Level.DEBUG, "replaced the closed socket to {0}", addrText(addr));
                return link;
            }
        }

        /** Closes the port for good (the client closes): a request waiting on it wakes at once. */
        void shutDown() {
            synchronized (swap) {
                shut = true;
                link.retire();
            }
        }
    }

    /**
     * One generation of an agent port's socket: a connected non-blocking
     * channel and the selector a request waits on it with. Never reopened: a
     * port replaces a closed link as a whole. Retiring a link closes its
     * selector as well, which ends a select in progress and makes every later
     * one fail, so a request waiting on a retired link cannot miss it.
     */
    private static final class Link {
        final DatagramChannel channel;
        final Selector selector;

        private Link(DatagramChannel channel, Selector selector) {
            this.channel = channel;
            this.selector = selector;
        }

        static Link open(InetSocketAddress addr) throws IOException {
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
            return new Link(c, s);
        }

        /**
         * Closes channel and selector (idempotent). Closing the selector wakes
         * a request selecting on it, and a later select on it throws
         * {@link ClosedSelectorException}.
         */
        void retire() {
            try {
                channel.close();
            } catch (IOException e) {
                LOG.log(System.Logger.Level.DEBUG, "closing a socket to the agent: {0}", e);
            }
            try {
                selector.close();
            } catch (IOException e) {
                LOG.log(System.Logger.Level.DEBUG, "closing a selector: {0}", e);
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
