package lars.client;

/** Thrown when the agent answered RET_NOEXIST (the key is unknown to it; it starts pulling it from the dns), or regInit still saw no host. */
public final class LarsNoExistException extends LarsException {
    private static final long serialVersionUID = 1L;

    LarsNoExistException(String message) {
        super(message);
    }
}
