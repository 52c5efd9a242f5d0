package lars.client;

/** Thrown when every host of the key is overloaded (RET_OVERLOAD) and no probe is due. */
public final class LarsOverloadException extends LarsException {
    private static final long serialVersionUID = 1L;

    LarsOverloadException(String message) {
        super(message);
    }
}
