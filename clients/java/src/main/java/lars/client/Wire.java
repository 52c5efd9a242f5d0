package lars.client;

import java.util.ArrayList;
import java.util.List;

/**
 * The Lars wire format (shared/spec/PROTOCOL.md), written by hand so the
 * library needs no protobuf runtime: one frame is msgid (i32 LE), msglen
 * (i32 LE, body length only), then a proto3 body.
 *
 * <p>Encoding follows proto3's canonical form (fields with value zero are
 * left out, except the nested host of a report, which is always present),
 * so the bytes equal the Rust client's. Decoding skips unknown fields and
 * returns {@code null} for anything malformed; it never throws on input.
 */
final class Wire {
    static final int ID_GET_HOST_REQUEST = 4;
    static final int ID_GET_HOST_RESPONSE = 5;
    static final int ID_REPORT_REQUEST = 6;
    static final int ID_API_GET_ROUTE_REQUEST = 7;
    static final int ID_API_GET_ROUTE_RESPONSE = 8;

    /** Frame header length: msgid + msglen. */
    static final int HEADER_LEN = 8;
    /** Largest body a frame may carry (65535 minus the header). */
    static final int MAX_BODY = 65_527;

    private static final int WT_VARINT = 0;
    private static final int WT_I64 = 1;
    private static final int WT_LEN = 2;
    private static final int WT_I32 = 5;

    private Wire() {}

    /** A decoded GetHostResponse (msgid 5). */
    record HostResponse(int seq, int modid, int cmdid, int retcode, boolean hasHost, int ip, int port) {}

    /** A decoded API GetRouteResponse (msgid 8). */
    record RouteResponse(int modid, int cmdid, List<int[]> hosts) {}

    // ---- encoding -------------------------------------------------------

    /** GetHostRequest {seq=1 uint32, modid=2, cmdid=3} in a frame. */
    static byte[] getHostRequest(int seq, int modid, int cmdid) {
        Writer w = new Writer(ID_GET_HOST_REQUEST);
        w.varintField(1, Integer.toUnsignedLong(seq));
        w.varintField(2, modid);
        w.varintField(3, cmdid);
        return w.finish();
    }

    /** API GetRouteRequest {modid=1, cmdid=2} in a frame. */
    static byte[] getRouteRequest(int modid, int cmdid) {
        Writer w = new Writer(ID_API_GET_ROUTE_REQUEST);
        w.varintField(1, modid);
        w.varintField(2, cmdid);
        return w.finish();
    }

    /**
     * ReportRequest {modid=1, cmdid=2, host=3 {ip=1, port=2}, retcode=4,
     * timecost=5 uint32} in a frame.
     */
    static byte[] reportRequest(int modid, int cmdid, int ip, int port, int retcode, int timecost) {
        Writer w = new Writer(ID_REPORT_REQUEST);
        w.varintField(1, modid);
        w.varintField(2, cmdid);
        int hostLen = fieldLen(1, ip) + fieldLen(2, port);
        w.tag(3, WT_LEN);
        w.varint(hostLen);
        w.varintField(1, ip);
        w.varintField(2, port);
        w.varintField(4, retcode);
        w.varintField(5, Integer.toUnsignedLong(timecost));
        return w.finish();
    }

    /** Bytes of field {@code n} holding int32 {@code v} (0 when v is 0: omitted). */
    private static int fieldLen(int n, int v) {
        return v == 0 ? 0 : varintLen(n << 3) + varintLen(v);
    }

    /** An int32 is sign-extended to 64 bits on the wire (10 bytes when negative). */
    static int varintLen(long v) {
        int n = 1;
        while ((v & ~0x7FL) != 0) {
            v >>>= 7;
            n++;
        }
        return n;
    }

    /** Builds one frame: header placeholder, body, then the header filled in. */
    private static final class Writer {
        private byte[] buf = new byte[64];
        private int pos = HEADER_LEN;
        private final int msgid;

        Writer(int msgid) {
            this.msgid = msgid;
        }

        void tag(int field, int wireType) {
            varint((long) field << 3 | wireType);
        }

        /** A varint field, left out when zero (proto3). */
        void varintField(int field, long v) {
            if (v != 0) {
                tag(field, WT_VARINT);
                varint(v);
            }
        }

        void varint(long v) {
            if (pos + 10 > buf.length) {
                buf = java.util.Arrays.copyOf(buf, buf.length * 2);
            }
            while ((v & ~0x7FL) != 0) {
                buf[pos++] = (byte) ((v & 0x7F) | 0x80);
                v >>>= 7;
            }
            buf[pos++] = (byte) v;
        }

        byte[] finish() {
            putIntLe(buf, 0, msgid);
            putIntLe(buf, 4, pos - HEADER_LEN);
            return java.util.Arrays.copyOf(buf, pos);
        }
    }

    static void putIntLe(byte[] b, int off, int v) {
        b[off] = (byte) v;
        b[off + 1] = (byte) (v >>> 8);
        b[off + 2] = (byte) (v >>> 16);
        b[off + 3] = (byte) (v >>> 24);
    }

    static int intLe(byte[] b, int off) {
        return (b[off] & 0xFF) | (b[off + 1] & 0xFF) << 8 | (b[off + 2] & 0xFF) << 16 | (b[off + 3] & 0xFF) << 24;
    }

    // ---- decoding -------------------------------------------------------

    /**
     * The body offset of a datagram holding exactly one frame of
     * {@code msgid}, or -1 when it is not one (short, wrong msgid, msglen out
     * of range or not matching the datagram length).
     */
    static int frameBody(byte[] d, int len, int msgid) {
        if (len < HEADER_LEN || intLe(d, 0) != msgid) {
            return -1;
        }
        int msglen = intLe(d, 4);
        if (msglen < 0 || msglen > MAX_BODY || msglen + HEADER_LEN != len) {
            return -1;
        }
        return HEADER_LEN;
    }

    /** A GetHostResponse from a datagram, or null if it is not a well-formed one. */
    static HostResponse hostResponse(byte[] d, int len) {
        int off = frameBody(d, len, ID_GET_HOST_RESPONSE);
        if (off < 0) {
            return null;
        }
        Reader r = new Reader(d, off, len);
        int seq = 0;
        int modid = 0;
        int cmdid = 0;
        int retcode = 0;
        boolean hasHost = false;
        int[] host = {0, 0};
        while (r.more()) {
            long key = r.key();
            if (key < 0) {
                return null;
            }
            int field = (int) (key >>> 3);
            int wt = (int) (key & 7);
            if (wt == WT_VARINT && field >= 1 && field <= 4) {
                long v = r.varint();
                if (r.failed) {
                    return null;
                }
                switch (field) {
                    case 1 -> seq = (int) v;
                    case 2 -> modid = (int) v;
                    case 3 -> cmdid = (int) v;
                    default -> retcode = (int) v;
                }
            } else if (wt == WT_LEN && field == 5) {
                int end = r.lenEnd();
                if (end < 0 || !hostInfo(d, r.pos, end, host)) {
                    return null;
                }
                r.pos = end;
                hasHost = true;
            } else if (!r.skip(wt)) {
                return null;
            }
        }
        return new HostResponse(seq, modid, cmdid, retcode, hasHost, host[0], host[1]);
    }

    /** An API GetRouteResponse from a datagram, or null if it is not a well-formed one. */
    static RouteResponse routeResponse(byte[] d, int len) {
        int off = frameBody(d, len, ID_API_GET_ROUTE_RESPONSE);
        if (off < 0) {
            return null;
        }
        Reader r = new Reader(d, off, len);
        int modid = 0;
        int cmdid = 0;
        List<int[]> hosts = new ArrayList<>();
        while (r.more()) {
            long key = r.key();
            if (key < 0) {
                return null;
            }
            int field = (int) (key >>> 3);
            int wt = (int) (key & 7);
            if (wt == WT_VARINT && (field == 1 || field == 2)) {
                long v = r.varint();
                if (r.failed) {
                    return null;
                }
                if (field == 1) {
                    modid = (int) v;
                } else {
                    cmdid = (int) v;
                }
            } else if (wt == WT_LEN && field == 3) {
                int end = r.lenEnd();
                int[] host = {0, 0};
                if (end < 0 || !hostInfo(d, r.pos, end, host)) {
                    return null;
                }
                r.pos = end;
                hosts.add(host);
            } else if (!r.skip(wt)) {
                return null;
            }
        }
        return new RouteResponse(modid, cmdid, hosts);
    }

    /** Merges a HostInfo body d[from..to) into {ip, port}; false if malformed. */
    private static boolean hostInfo(byte[] d, int from, int to, int[] out) {
        Reader r = new Reader(d, from, to);
        while (r.more()) {
            long key = r.key();
            if (key < 0) {
                return false;
            }
            int field = (int) (key >>> 3);
            int wt = (int) (key & 7);
            if (wt == WT_VARINT && (field == 1 || field == 2)) {
                long v = r.varint();
                if (r.failed) {
                    return false;
                }
                out[field - 1] = (int) v;
            } else if (!r.skip(wt)) {
                return false;
            }
        }
        return true;
    }

    /** A bounds-checked protobuf reader over d[pos..end). */
    private static final class Reader {
        private final byte[] d;
        private final int end;
        int pos;
        boolean failed;

        Reader(byte[] d, int pos, int end) {
            this.d = d;
            this.pos = pos;
            this.end = end;
        }

        boolean more() {
            return pos < end;
        }

        /** The next field key (field number {@code << 3 | } wire type), or -1 if malformed. */
        long key() {
            long k = varint();
            if (failed || k >>> 3 == 0 || k > 0xFFFF_FFFFL) {
                failed = true;
                return -1;
            }
            return k;
        }

        /** The next varint; sets {@code failed} and returns -1 if truncated or too long. */
        long varint() {
            long v = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= end) {
                    failed = true;
                    return -1;
                }
                byte b = d[pos++];
                v |= (long) (b & 0x7F) << shift;
                if (b >= 0) {
                    return v;
                }
            }
            failed = true;
            return -1;
        }

        /** Reads a length prefix; the end offset of the bytes it covers, or -1. */
        int lenEnd() {
            long n = varint();
            if (failed || n < 0 || n > end - pos) {
                return -1;
            }
            return pos + (int) n;
        }

        /** Skips a field of wire type {@code wt}; false for groups or truncation. */
        boolean skip(int wt) {
            switch (wt) {
                case WT_VARINT -> {
                    varint();
                    return !failed;
                }
                case WT_I64 -> {
                    return advance(8);
                }
                case WT_LEN -> {
                    int e = lenEnd();
                    if (e < 0) {
                        return false;
                    }
                    pos = e;
                    return true;
                }
                case WT_I32 -> {
                    return advance(4);
                }
                default -> {
                    return false;
                }
            }
        }

        private boolean advance(int n) {
            if (end - pos < n) {
                return false;
            }
            pos += n;
            return true;
        }
    }
}
