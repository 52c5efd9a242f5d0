package lars.client;

/** Thrown when the agent answered RET_SYSTEM_ERROR, an unknown return code, or a success without a valid host. */
public final class LarsSystemException extends LarsException {
    private static final long serialVersionUID = 1L;

    LarsSystemException(String message) {
        super(message);
    }
}
