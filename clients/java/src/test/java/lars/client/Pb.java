package lars.client;

import java.io.ByteArrayOutputStream;
import java.util.HashMap;
import java.util.Map;

/**
 * A test-only protobuf writer and reader, written apart from {@link Wire}
 * so the tests check the library against a second implementation. The
 * writer always emits the fields it is given (zeros included), which
 * decoders must accept too.
 */
final class Pb {
    private Pb() {}

    /** One frame: msgid, body length (both i32 LE), body. */
    static byte[] frame(int msgid, byte[] body) {
        byte[] f = new byte[8 + body.length];
        Wire.putIntLe(f, 0, msgid);
        Wire.putIntLe(f, 4, body.length);
        System.arraycopy(body, 0, f, 8, body.length);
        return f;
    }

    /** A varint field (int32 values are sign-extended, as protobuf does). */
    static byte[] varint(int field, long v) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        rawVarint(o, (long) field << 3);
        rawVarint(o, v);
        return o.toByteArray();
    }

    /** A length-delimited field. */
    static byte[] len(int field, byte[] content) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        rawVarint(o, (long) field << 3 | 2);
        rawVarint(o, content.length);
        o.writeBytes(content);
        return o.toByteArray();
    }

    /** A fixed32 (wire type 5) field. */
    static byte[] fixed32(int field, int v) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        rawVarint(o, (long) field << 3 | 5);
        for (int i = 0; i < 4; i++) {
            o.write(v >>> (8 * i));
        }
        return o.toByteArray();
    }

    /** A fixed64 (wire type 1) field. */
    static byte[] fixed64(int field, long v) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        rawVarint(o, (long) field << 3 | 1);
        for (int i = 0; i < 8; i++) {
            o.write((int) (v >>> (8 * i)));
        }
        return o.toByteArray();
    }

    static byte[] cat(byte[]... parts) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            o.writeBytes(p);
        }
        return o.toByteArray();
    }

    static byte[] hostInfo(int ip, int port) {
        return cat(varint(1, ip), varint(2, port));
    }

    /** A GetHostResponse frame. */
    static byte[] hostResponse(int seq, int modid, int cmdid, int retcode, int ip, int port) {
        return frame(Wire.ID_GET_HOST_RESPONSE, cat(varint(1, Integer.toUnsignedLong(seq)), varint(2, modid),
                varint(3, cmdid), varint(4, retcode), len(5, hostInfo(ip, port))));
    }

    /** An API GetRouteResponse frame with hosts {ip, port, ip, port, ...}. */
    static byte[] routeResponse(int modid, int cmdid, int... ipPort) {
        byte[] body = cat(varint(1, modid), varint(2, cmdid));
        for (int i = 0; i + 1 < ipPort.length; i += 2) {
            body = cat(body, len(3, hostInfo(ipPort[i], ipPort[i + 1])));
        }
        return frame(Wire.ID_API_GET_ROUTE_RESPONSE, body);
    }

    /** The msgid of a frame. */
    static int msgid(byte[] frame) {
        return Wire.intLe(frame, 0);
    }

    /**
     * The fields of a frame's (or, with {@code off} 0, a bare message's)
     * body: varints as Long, length-delimited as byte[]; the last
     * occurrence wins. Throws on malformed input (tests only).
     */
    static Map<Integer, Object> fields(byte[] d, int off) {
        Map<Integer, Object> out = new HashMap<>();
        int[] pos = {off};
        while (pos[0] < d.length) {
            long key = readVarint(d, pos);
            int field = (int) (key >>> 3);
            switch ((int) (key & 7)) {
                case 0 -> out.put(field, readVarint(d, pos));
                case 2 -> {
                    int n = (int) readVarint(d, pos);
                    byte[] b = new byte[n];
                    System.arraycopy(d, pos[0], b, 0, n);
                    pos[0] += n;
                    out.put(field, b);
                }
                default -> throw new IllegalStateException("unexpected wire type in " + key);
            }
        }
        return out;
    }

    /** The fields of a frame's body (after its 8-byte header, checked). */
    static Map<Integer, Object> body(byte[] frame) {
        if (Wire.intLe(frame, 4) != frame.length - 8) {
            throw new IllegalStateException("frame length " + Wire.intLe(frame, 4) + " for " + frame.length);
        }
        return fields(frame, 8);
    }

    /** A varint field of {@code m} as an int (0 when absent, as proto3 says). */
    static int intField(Map<Integer, Object> m, int field) {
        Object v = m.get(field);
        return v == null ? 0 : (int) (long) (Long) v;
    }

    private static long readVarint(byte[] d, int[] pos) {
        long v = 0;
        for (int shift = 0; ; shift += 7) {
            byte b = d[pos[0]++];
            v |= (long) (b & 0x7F) << shift;
            if (b >= 0) {
                return v;
            }
        }
    }

    private static void rawVarint(ByteArrayOutputStream o, long v) {
        while ((v & ~0x7FL) != 0) {
            o.write((int) (v & 0x7F) | 0x80);
            v >>>= 7;
        }
        o.write((int) v);
    }
}
