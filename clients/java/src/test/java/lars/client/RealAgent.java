package lars.client;

import java.io.IOException;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real lars agent process (target/debug/lars-agent) serving routes from a
 * snapshot file, with no dns (its dns and reporter addresses are
 * 127.0.0.1:1, where nothing listens): the snapshot's keys answer at once,
 * any other key answers RET_NOEXIST. Runs on three free consecutive UDP
 * ports; {@link #close} kills it and removes its directory.
 */
final class RealAgent implements AutoCloseable {
    private final Process process;
    private final Path dir;
    private final int basePort;

    private RealAgent(Process process, Path dir, int basePort) {
        this.process = process;
        this.dir = dir;
        this.basePort = basePort;
    }

    /** The agent binary: -Dlars.agent.bin, else $LARS_AGENT_BIN, else ../../target/debug/lars-agent. */
    static Path binary() {
        String p = System.getProperty("lars.agent.bin");
        if (p == null || p.isEmpty()) {
            p = System.getenv("LARS_AGENT_BIN");
        }
        if (p == null || p.isEmpty()) {
            p = "../../target/debug/lars-agent";
        }
        return Path.of(p).toAbsolutePath().normalize();
    }

    /**
     * Starts the agent with {@code routes} (snapshot lines
     * {@code "modid cmdid ip:port ip:port ..."}) and waits until it answers
     * {@code readyModid/readyCmdid} with hosts. Ports are bind-tested first;
     * if another process takes one before the agent binds it, the agent
     * exits and is started again on other ports (3 attempts).
     */
    static RealAgent start(List<String> routes, int readyModid, int readyCmdid) throws Exception {
        Path bin = binary();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException("no agent binary at " + bin
                    + " (build it: cargo build -p lars-agent-bin; or set LARS_AGENT_BIN)");
        }
        for (int attempt = 1; ; attempt++) {
            RealAgent agent = launch(bin, routes);
            try {
                agent.awaitReady(readyModid, readyCmdid);
                return agent;
            } catch (Exception | AssertionError e) {
                boolean exited = !agent.process.isAlive();
                String log = agent.log();
                agent.close();
                if (!exited || attempt == 3) {
                    throw new IllegalStateException("the agent did not start: " + e + "\nagent log:\n" + log);
                }
            }
        }
    }

    private static RealAgent launch(Path bin, List<String> routes) throws IOException {
        Path dir = Files.createTempDirectory("lars-java-agent");
        int base = freePorts(3);
        Path snapshot = dir.resolve("routes.snapshot");
        List<String> lines = new ArrayList<>();
        lines.add("lars-agent-routes 1");
        lines.addAll(routes);
        Files.write(snapshot, lines, StandardCharsets.UTF_8);
        Path conf = dir.resolve("agent.conf");
        Files.writeString(conf, "[agent]\nbase_port = " + base + "\nsnapshot_path = " + snapshot
                + "\n[dnsserver]\nip = 127.0.0.1\nport = 1\n[reporter]\nip = 127.0.0.1\nport = 1\n");
        Process proc = new ProcessBuilder(bin.toString(), "-c", conf.toString())
                .redirectErrorStream(true)
                .redirectOutput(dir.resolve("agent.log").toFile())
                .start();
        return new RealAgent(proc, dir, base);
    }

    int basePort() {
        return basePort;
    }

    String log() {
        try {
            return Files.readString(dir.resolve("agent.log"));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    private void awaitReady(int modid, int cmdid) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        try (LarsClient c = LarsClient.builder().basePort(basePort).timeoutMillis(100).build()) {
            while (true) {
                if (!process.isAlive()) {
                    throw new IllegalStateException("the agent exited with status " + process.exitValue());
                }
                try {
                    if (!c.getRoute(modid, cmdid).isEmpty()) {
                        return;
                    }
                } catch (LarsException e) {
                    // Not listening yet (port unreachable or timeout): retry.
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("no route for " + modid + "/" + cmdid + " within 20 s");
                }
                Thread.sleep(20);
            }
        }
    }

    /**
     * A base port P such that P, P+1, ..., P+n-1 are free for UDP on
     * loopback right now (bind-tested), away from the defaults 8888..8890.
     */
    static int freePorts(int n) throws IOException {
        InetAddress lo = InetAddress.getLoopbackAddress();
        for (int attempt = 0; attempt < 200; attempt++) {
            int base = ThreadLocalRandom.current().nextInt(20_000, 60_000);
            List<DatagramSocket> held = new ArrayList<>();
            try {
                for (int i = 0; i < n; i++) {
                    held.add(new DatagramSocket(new InetSocketAddress(lo, base + i)));
                }
                return base;
            } catch (IOException e) {
                // taken: try another base
            } finally {
                held.forEach(DatagramSocket::close);
            }
        }
        throw new IOException("found no " + n + " free consecutive UDP ports");
    }

    @Override
    public void close() throws IOException {
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path p : files.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
