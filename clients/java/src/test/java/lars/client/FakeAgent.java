package lars.client;

import java.io.IOException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.SocketException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A scripted agent on one loopback UDP port: a thread hands every datagram
 * to a {@link Handler}, which may answer any number of datagrams. Records
 * what it received. {@link #close} stops the thread.
 */
final class FakeAgent implements AutoCloseable {
    /** What the fake does with one received datagram. */
    interface Handler {
        void handle(byte[] request, Replier reply) throws IOException;
    }

    /** Sends datagrams back to the sender of the request being handled. */
    static final class Replier {
        private final DatagramSocket sock;
        private final SocketAddress to;

        Replier(DatagramSocket sock, SocketAddress to) {
            this.sock = sock;
            this.to = to;
        }

        void send(byte[] datagram) throws IOException {
            sock.send(new DatagramPacket(datagram, datagram.length, to));
        }
    }

    private final DatagramSocket sock;
    private final Thread thread;
    private final List<byte[]> received = new ArrayList<>();
    private volatile boolean stopping;

    /** A fake on an ephemeral port. */
    FakeAgent(Handler handler) throws IOException {
        this(0, handler);
    }

    /** A fake on {@code port} (0: ephemeral). */
    FakeAgent(int port, Handler handler) throws IOException {
        sock = new DatagramSocket(new InetSocketAddress(InetAddress.getLoopbackAddress(), port));
        thread = new Thread(() -> loop(handler), "fake-agent-" + sock.getLocalPort());
        thread.setDaemon(true);
        thread.start();
    }

    /** A fake that never answers. */
    static FakeAgent silent() throws IOException {
        return new FakeAgent((req, reply) -> { });
    }

    int port() {
        return sock.getLocalPort();
    }

    /** Copies of every datagram received so far. */
    synchronized List<byte[]> received() {
        return new ArrayList<>(received);
    }

    private void loop(Handler handler) {
        byte[] buf = new byte[65_535];
        DatagramPacket p = new DatagramPacket(buf, buf.length);
        while (!stopping) {
            p.setData(buf, 0, buf.length);
            try {
                sock.receive(p);
            } catch (SocketException e) {
                return; // closed
            } catch (IOException e) {
                continue;
            }
            byte[] req = Arrays.copyOf(buf, p.getLength());
            synchronized (this) {
                received.add(req);
            }
            try {
                handler.handle(req, new Replier(sock, p.getSocketAddress()));
            } catch (IOException e) {
                if (stopping) {
                    return;
                }
            }
        }
    }

    @Override
    public void close() {
        stopping = true;
        sock.close();
        try {
            thread.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (thread.isAlive()) {
            throw new IllegalStateException("fake agent thread did not stop");
        }
    }
}
