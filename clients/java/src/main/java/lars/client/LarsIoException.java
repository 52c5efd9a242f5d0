package lars.client;

/**
 * Thrown on a socket error talking to the agent; the cause is the
 * {@link java.io.IOException} (e.g. {@link java.net.PortUnreachableException}:
 * nothing listens on the agent port). The message does not repeat the
 * cause's (a stack trace prints both).
 */
public final class LarsIoException extends LarsException {
    private static final long serialVersionUID = 1L;

    LarsIoException(String message, Throwable cause) {
        super(message, cause);
    }
}
