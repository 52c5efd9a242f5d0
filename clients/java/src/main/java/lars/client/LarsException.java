package lars.client;

import java.io.IOException;

/**
 * Why a request to the agent produced no answer the caller can use. The
 * subclasses say which case it is:
 *
 * <ul>
 *   <li>{@link LarsOverloadException}: the agent answered RET_OVERLOAD;
 *   <li>{@link LarsNoExistException}: the agent answered RET_NOEXIST, or
 *       {@code regInit} still saw no host after its attempts;
 *   <li>{@link LarsSystemException}: RET_SYSTEM_ERROR, an unknown return
 *       code, or a success without a valid host;
 *   <li>{@link LarsTimeoutException}: no matching reply within the timeout;
 *   <li>{@link LarsIoException}: a socket error (its cause), e.g. a
 *       {@link java.net.PortUnreachableException} when no agent listens.
 * </ul>
 *
 * <p>Bad arguments (negative ids, a malformed ip text, a port outside
 * 1..65535) are not sent: they throw {@link IllegalArgumentException} at once.
 */
public class LarsException extends IOException {
    private static final long serialVersionUID = 1L;

    LarsException(String message) {
        super(message);
    }

    LarsException(String message, Throwable cause) {
        super(message, cause);
    }
}
