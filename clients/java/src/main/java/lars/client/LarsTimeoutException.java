package lars.client;

/** Thrown when no matching reply from the agent arrived within the receive timeout. */
public final class LarsTimeoutException extends LarsException {
    private static final long serialVersionUID = 1L;

    LarsTimeoutException(String message) {
        super(message);
    }
}
