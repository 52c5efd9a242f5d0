package lars.client;

/**
 * The agent's return codes ({@code LarsRetCode} of the protocol), also the
 * values to pass as {@code retcode} to {@link LarsClient#report}: 0 means the
 * call succeeded, anything else that it failed.
 */
public final class LarsRetCode {
    /** Success; in a report: the call succeeded. */
    public static final int RET_SUCC = 0;
    /** Every host is overloaded; in a report: the call failed. */
    public static final int RET_OVERLOAD = 1;
    /** The agent failed; in a report: the call failed. */
    public static final int RET_SYSTEM_ERROR = 2;
    /** The key is unknown to the agent (yet). */
    public static final int RET_NOEXIST = 3;

    private LarsRetCode() {}
}
