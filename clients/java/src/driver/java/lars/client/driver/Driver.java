package lars.client.driver;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import lars.client.HostPort;
import lars.client.LarsClient;
import lars.client.LarsException;
import lars.client.LarsNoExistException;
import lars.client.LarsRetCode;
import lars.client.LarsTimeoutException;

/**
 * The Java client's conformance driver (issue 14), with the command line
 * every client's driver shares (see clients/conformance/run.py):
 *
 * <pre>
 * check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
 *     --hosts IP:PORT,IP:PORT,IP:PORT --report-host IP:PORT --stall-port S
 * bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
 * </pre>
 *
 * {@code check} prints one {@code CHECK <name> PASS|FAIL <detail>} line per
 * check and exits 0 only if all passed; {@code bench} prints
 * {@code BENCH ops_per_sec <n>}. Exit code 2: bad command line.
 */
public final class Driver {
    private final boolean bench;
    private final int basePort;
    private final int ports;
    private final long timeoutMs;
    private final int modid;
    private final int cmdid;
    private final List<HostPort> hosts;
    private final HostPort reportHost;
    private final int stallPort;
    private final long seconds;

    /** A check's verdict. */
    private record Verdict(boolean pass, String detail) {
        static Verdict pass(String detail) {
            return new Verdict(true, detail);
        }

        static Verdict fail(String detail) {
            return new Verdict(false, detail);
        }
    }

    /** A check body; a LarsException it throws fails the check with its message. */
    private interface Check {
        Verdict run() throws LarsException;
    }

    private Driver(String[] argv) {
        if (argv.length == 0 || !(argv[0].equals("check") || argv[0].equals("bench"))) {
            throw new IllegalArgumentException(
                    argv.length == 0 ? "missing mode (check or bench)" : "unknown mode '" + argv[0] + "'");
        }
        bench = argv[0].equals("bench");
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i < argv.length; i += 2) {
            if (i + 1 >= argv.length) {
                throw new IllegalArgumentException(argv[i] + " needs a value");
            }
            opts.put(argv[i], argv[i + 1]);
        }
        basePort = num(opts, "--base-port", null);
        ports = num(opts, "--ports", "3");
        timeoutMs = num(opts, "--timeout-ms", "50");
        modid = num(opts, "--modid", null);
        cmdid = num(opts, "--cmdid", null);
        seconds = num(opts, "--seconds", "5");
        hosts = new ArrayList<>();
        if (opts.containsKey("--hosts")) {
            for (String h : opts.get("--hosts").split(",")) {
                hosts.add(host("--hosts", h.trim()));
            }
        }
        reportHost = opts.containsKey("--report-host") ? host("--report-host", opts.get("--report-host")) : null;
        stallPort = opts.containsKey("--stall-port") ? num(opts, "--stall-port", null) : -1;
        if (!bench && (hosts.isEmpty() || reportHost == null || stallPort < 0)) {
            throw new IllegalArgumentException("check needs --hosts, --report-host and --stall-port");
        }
    }

    public static void main(String[] argv) {
        Driver d;
        try {
            d = new Driver(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("driver: " + e.getMessage());
            System.err.println("usage: driver.sh check --base-port P --ports N --timeout-ms T --modid M --cmdid C"
                    + " --hosts IP:PORT,... --report-host IP:PORT --stall-port S\n"
                    + "       driver.sh bench --base-port P --ports N --timeout-ms T --modid M --cmdid C --seconds N");
            System.exit(2);
            return;
        }
        System.exit(d.bench ? d.bench() : d.check());
    }

    private static int num(Map<String, String> opts, String name, String dflt) {
        String v = opts.getOrDefault(name, dflt);
        if (v == null) {
            throw new IllegalArgumentException("missing " + name);
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + ": '" + v + "' is not a valid number");
        }
    }

    private static HostPort host(String name, String v) {
        try {
            return HostPort.parse(v);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(name + ": " + e.getMessage());
        }
    }

    /** An exception and its causes, "message: cause: cause" (a cause is never in its wrapper's message). */
    static String describe(Throwable e) {
        StringBuilder b = new StringBuilder(e.getClass().getSimpleName()).append(": ").append(e.getMessage());
        for (Throwable c = e.getCause(); c != null; c = c.getCause()) {
            b.append(": ").append(c.getMessage() != null ? c.getMessage() : c.getClass().getSimpleName());
        }
        return b.toString();
    }

    private LarsClient client(int base) throws LarsException {
        return LarsClient.builder().agentIp("127.0.0.1").basePort(base).portCount(ports).timeoutMillis(timeoutMs)
                .build();
    }

    // ---- check ----------------------------------------------------------

    private int check() {
        boolean[] allPassed = {true};
        LarsClient main = null;
        String mainError = null;
        try {
            main = client(basePort);
        } catch (LarsException | IllegalArgumentException e) {
            mainError = "cannot create the client: " + describe(e);
        }
        LarsClient c = main;
        String err = mainError;
        Map<String, Check> checks = new java.util.LinkedHashMap<>();
        checks.put("noexist_then_host", () -> noexistThenHost(c));
        checks.put("round_robin", () -> roundRobin(c));
        checks.put("report", () -> report(c));
        checks.put("get_route", () -> getRoute(c));
        checks.put("timeout", this::timeout);
        checks.put("bad_input", this::badInput);
        for (Map.Entry<String, Check> e : checks.entrySet()) {
            Verdict v;
            boolean needsMain = !e.getKey().equals("timeout") && !e.getKey().equals("bad_input");
            if (needsMain && c == null) {
                v = Verdict.fail(err);
            } else {
                try {
                    v = e.getValue().run();
                } catch (LarsException | RuntimeException ex) {
                    v = Verdict.fail(describe(ex));
                }
            }
            allPassed[0] &= v.pass();
            System.out.println("CHECK " + e.getKey() + (v.pass() ? " PASS " : " FAIL ") + v.detail());
        }
        if (main != null) {
            main.close();
        }
        return allPassed[0] ? 0 : 1;
    }

    private Verdict noexistThenHost(LarsClient c) throws LarsException {
        try {
            HostPort h = c.getHost(modid, cmdid);
            return Verdict.fail("first get_host answered " + h + ", expected NOEXIST");
        } catch (LarsNoExistException expected) {
            // the agent was never asked for this key
        } catch (LarsException e) {
            return Verdict.fail("first get_host: " + describe(e) + ", expected NOEXIST");
        }
        List<HostPort> route;
        try {
            route = c.regInit(modid, cmdid);
        } catch (LarsException e) {
            return Verdict.fail("reg_init after NOEXIST: " + describe(e));
        }
        HostPort h = c.getHost(modid, cmdid);
        if (!hosts.contains(h)) {
            return Verdict.fail("get_host answered " + h + ", not one of the key's hosts");
        }
        return Verdict.pass("NOEXIST, then reg_init saw " + route.size() + " hosts, then " + h);
    }

    private Verdict roundRobin(LarsClient c) throws LarsException {
        Map<HostPort, Integer> counts = new HashMap<>();
        for (int i = 0; i < 30; i++) {
            HostPort h = c.getHost(modid, cmdid);
            c.report(modid, cmdid, h, LarsRetCode.RET_SUCC, 1);
            counts.merge(h, 1, Integer::sum);
        }
        Map<String, Integer> shown = new TreeMap<>();
        hosts.forEach(h -> shown.put(h.toString(), counts.getOrDefault(h, 0)));
        StringBuilder detail = new StringBuilder();
        shown.forEach((h, n) -> detail.append(detail.length() == 0 ? "" : " ").append(h).append('=').append(n));
        for (HostPort h : counts.keySet()) {
            if (!hosts.contains(h)) {
                return Verdict.fail(h + " is not a host of the key (" + detail + ")");
            }
        }
        for (HostPort h : hosts) {
            if (counts.getOrDefault(h, 0) < 6) {
                return Verdict.fail("a host got fewer than 6 of 30 picks: " + detail);
            }
        }
        return Verdict.pass(detail.toString());
    }

    private Verdict report(LarsClient c) throws LarsException {
        for (int i = 0; i < 5; i++) {
            c.report(modid, cmdid, reportHost, LarsRetCode.RET_SUCC, 3);
        }
        for (int i = 0; i < 2; i++) {
            c.report(modid, cmdid, reportHost, 1, 3);
        }
        return Verdict.pass("sent 5 successes and 2 failures for " + reportHost + ", 3 ms");
    }

    private Verdict getRoute(LarsClient c) throws LarsException {
        Set<String> got = new TreeSet<>();
        c.getRoute(modid, cmdid).forEach(h -> got.add(h.toString()));
        Set<String> want = new TreeSet<>();
        hosts.forEach(h -> want.add(h.toString()));
        if (got.equals(want)) {
            return Verdict.pass(String.join(",", got));
        }
        return Verdict.fail("got " + String.join(",", got) + " want " + String.join(",", want));
    }

    private Verdict timeout() throws LarsException {
        try (LarsClient c = client(stallPort)) {
            long start = System.nanoTime();
            try {
                HostPort h = c.getHost(modid, cmdid);
                return Verdict.fail("a stalled agent answered " + h);
            } catch (LarsTimeoutException e) {
                long tookMs = (System.nanoTime() - start) / 1_000_000;
                if (tookMs <= 2 * timeoutMs) {
                    return Verdict.pass("LarsTimeoutException after " + tookMs + " ms (timeout " + timeoutMs + " ms)");
                }
                return Verdict.fail("LarsTimeoutException only after " + tookMs + " ms, over 2x " + timeoutMs + " ms");
            } catch (LarsException e) {
                return Verdict.fail("expected LarsTimeoutException, got " + describe(e));
            }
        }
    }

    /**
     * Bad input against the stalled agent: anything that reached the network
     * would end in a timeout, not an IllegalArgumentException.
     */
    private Verdict badInput() throws LarsException {
        try (LarsClient c = client(stallPort)) {
            List<String> seen = new ArrayList<>();
            long start = System.nanoTime();
            String[] names = {"get_host(-1, C)", "get_host(M, -1)", "report ip 300.1.2.3", "report ip not-an-ip"};
            Check[] calls = {
                () -> Verdict.fail("answered " + c.getHost(-1, cmdid)),
                () -> Verdict.fail("answered " + c.getHost(modid, -1)),
                () -> {
                    c.report(modid, cmdid, "300.1.2.3", 80, LarsRetCode.RET_SUCC, 1);
                    return Verdict.fail("sent");
                },
                () -> {
                    c.report(modid, cmdid, "not-an-ip", 80, LarsRetCode.RET_SUCC, 1);
                    return Verdict.fail("sent");
                },
            };
            for (int i = 0; i < calls.length; i++) {
                try {
                    Verdict v = calls[i].run();
                    return Verdict.fail(names[i] + ": no error (" + v.detail() + ")");
                } catch (IllegalArgumentException e) {
                    seen.add(names[i] + ": " + e.getMessage());
                } catch (LarsException e) {
                    return Verdict.fail(names[i] + ": " + e.getClass().getSimpleName() + " (it went to the network)");
                }
            }
            long tookMs = (System.nanoTime() - start) / 1_000_000;
            if (tookMs >= timeoutMs) {
                return Verdict.fail("IllegalArgumentException, but only after " + tookMs + " ms");
            }
            return Verdict.pass("IllegalArgumentException in " + tookMs + " ms: " + String.join("; ", seen));
        }
    }

    // ---- bench ----------------------------------------------------------

    /**
     * get_host + report(success) in one thread for --seconds; after a
     * warm-up of min(1 s, seconds / 5) that is not counted (the JIT compiles
     * the loop first).
     */
    private int bench() {
        try (LarsClient c = client(basePort)) {
            try {
                c.regInit(modid, cmdid);
            } catch (LarsException e) {
                System.err.println("driver bench: reg_init: " + describe(e));
                return 1;
            }
            long warmNanos = Math.min(1_000_000_000L, Math.max(1, seconds) * 200_000_000L);
            loop(c, warmNanos);
            long runNanos = Math.max(1, seconds) * 1_000_000_000L;
            long start = System.nanoTime();
            long[] r = loop(c, runNanos);
            double rate = r[0] / ((System.nanoTime() - start) / 1e9);
            if (r[1] > 0) {
                System.err.println("driver bench: " + r[1] + " of " + r[0] + " operations failed");
            }
            System.out.printf("BENCH ops_per_sec %.0f%n", rate);
            return 0;
        } catch (LarsException e) {
            System.err.println("driver bench: " + describe(e));
            return 1;
        }
    }

    /** Runs the loop for {@code nanos}; returns {operations, errors}. */
    private long[] loop(LarsClient c, long nanos) {
        long ops = 0;
        long errors = 0;
        long end = System.nanoTime() + nanos;
        Set<Class<?>> errorKinds = new HashSet<>();
        while (System.nanoTime() < end) {
            try {
                HostPort h = c.getHost(modid, cmdid);
                c.report(modid, cmdid, h, LarsRetCode.RET_SUCC);
            } catch (LarsException e) {
                errors++;
                if (errorKinds.add(e.getClass())) {
                    System.err.println("driver bench: " + describe(e));
                }
            }
            ops++;
        }
        return new long[] {ops, errors};
    }
}
