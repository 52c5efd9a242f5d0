//! Why a request to the agent produced no answer the caller can use.

/// The error of a [`LarsClient`](crate::LarsClient) request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The agent answered `RET_OVERLOAD`: every host of the key is overloaded
    /// and no probe is due.
    #[error("every host is overloaded")]
    Overload,
    /// The agent answered `RET_NOEXIST` (the key is unknown; the agent starts
    /// pulling it from the dns), or `reg_init` still saw no host after its
    /// retries.
    #[error("no host exists for this key (yet)")]
    NoExist,
    /// The agent answered `RET_SYSTEM_ERROR`, an unknown return code, or a
    /// success without a valid host.
    #[error("agent system error")]
    System,
    /// No matching reply arrived within the receive timeout.
    #[error("no reply from the agent within the timeout")]
    Timeout,
    /// A socket error (e.g. `ConnectionRefused`: nothing listens on the agent
    /// port). Its message includes the OS error, so it is not repeated as a
    /// `source`.
    #[error("socket error talking to the agent: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}
