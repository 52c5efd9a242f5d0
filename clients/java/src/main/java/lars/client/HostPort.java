package lars.client;

/**
 * One host of a service: an IPv4 address and a port (1..65535).
 *
 * <p>The address is kept as the protocol's 32-bit host-order integer
 * ({@code 192.168.1.177} is {@code 0xC0A801B1}, i.e. 3232235953 unsigned);
 * {@link #ip()} shows it as a dotted quad. Immutable; equal when address and
 * port are equal.
 */
public final class HostPort {
    private final int ipBits;
    private final int port;

    private HostPort(int ipBits, int port) {
        this.ipBits = ipBits;
        this.port = port;
    }

    /**
     * A host from a dotted-quad IPv4 text and a port.
     *
     * @throws IllegalArgumentException if {@code ip} is not a dotted quad
     *     (four decimal numbers 0..255, no leading zeros, no spaces; host
     *     names are not resolved) or {@code port} is not in 1..65535
     */
    public static HostPort of(String ip, int port) {
        return new HostPort(parseIpv4(ip), checkPort(port));
    }

    /**
     * A host from the protocol's 32-bit host-order address and a port.
     *
     * @throws IllegalArgumentException if {@code port} is not in 1..65535
     */
    public static HostPort ofBits(int ipBits, int port) {
        return new HostPort(ipBits, checkPort(port));
    }

    /**
     * A host from {@code "a.b.c.d:port"}.
     *
     * @throws IllegalArgumentException if the text is not of that form
     */
    public static HostPort parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("host is null (expected ip:port)");
        }
        int colon = text.lastIndexOf(':');
        if (colon < 0) {
            throw new IllegalArgumentException("host '" + text + "' is not ip:port");
        }
        String portText = text.substring(colon + 1);
        int port;
        if (portText.isEmpty() || portText.length() > 5 || !portText.chars().allMatch(c -> c >= '0' && c <= '9')) {
            throw new IllegalArgumentException("host '" + text + "' has no valid port (expected 1..65535)");
        }
        port = Integer.parseInt(portText);
        return of(text.substring(0, colon), port);
    }

    /** The address as a dotted quad, e.g. {@code "192.168.1.177"}. */
    public String ip() {
        return (ipBits >>> 24) + "." + (ipBits >>> 16 & 0xFF) + "." + (ipBits >>> 8 & 0xFF) + "." + (ipBits & 0xFF);
    }

    /** The address as the protocol's 32-bit host-order integer (as sent on the wire). */
    public int ipBits() {
        return ipBits;
    }

    /** The port, 1..65535. */
    public int port() {
        return port;
    }

    /** {@code "ip:port"}. */
    @Override
    public String toString() {
        return ip() + ":" + port;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostPort h && h.ipBits == ipBits && h.port == port;
    }

    @Override
    public int hashCode() {
        return ipBits * 31 + port;
    }

    static int checkPort(int port) {
        if (port < 1 || port > 65_535) {
            throw new IllegalArgumentException("port " + port + " is out of range (expected 1..65535)");
        }
        return port;
    }

    /**
     * The host-order integer of a strict dotted quad; never resolves a name
     * (so bad input fails at once, without a DNS wait).
     */
    static int parseIpv4(String ip) {
        if (ip == null) {
            throw new IllegalArgumentException("ip address is null");
        }
        int bits = 0;
        int parts = 0;
        int i = 0;
        int n = ip.length();
        while (true) {
            int start = i;
            int v = 0;
            while (i < n && i - start < 3 && ip.charAt(i) >= '0' && ip.charAt(i) <= '9') {
                v = v * 10 + (ip.charAt(i) - '0');
                i++;
            }
            int digits = i - start;
            if (digits == 0 || v > 255 || (digits > 1 && ip.charAt(start) == '0')) {
                throw badIp(ip);
            }
            bits = bits << 8 | v;
            parts++;
            if (parts == 4) {
                if (i != n) {
                    throw badIp(ip);
                }
                return bits;
            }
            if (i >= n || ip.charAt(i) != '.') {
                throw badIp(ip);
            }
            i++;
        }
    }

    private static IllegalArgumentException badIp(String ip) {
        return new IllegalArgumentException(
                "ip address '" + ip + "' is not a dotted-quad IPv4 address (like 10.0.0.1)");
    }
}
