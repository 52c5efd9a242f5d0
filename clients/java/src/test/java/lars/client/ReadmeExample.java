package lars.client;

/** The five-line example of clients/java/README.md, kept compiling by the build. */
final class ReadmeExample {
    private ReadmeExample() {}

    static void example(int modid, int cmdid) throws LarsException {
        try (LarsClient lars = LarsClient.builder().build()) {          // agent 127.0.0.1:8888..8890, 50 ms
            lars.regInit(modid, cmdid);                                  // once per key, before first use
            HostPort host = lars.getHost(modid, cmdid);                  // or a LarsException subclass
            long t0 = System.nanoTime(); boolean ok = callService(host.ip(), host.port());
            lars.report(modid, cmdid, host, ok ? LarsRetCode.RET_SUCC : 1, (System.nanoTime() - t0) / 1_000_000);
        }
    }

    private static boolean callService(String ip, int port) {
        return !ip.isEmpty() && port > 0;
    }
}
