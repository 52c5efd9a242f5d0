//! The crate's error type.

use lars_core::FrameError;

/// Why a lars-net operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A socket or poll operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded or decoded.
    #[error("frame error: {0}")]
    Frame(#[from] FrameError),
    /// Nothing arrived before the deadline.
    #[error("timed out")]
    Timeout,
    /// A builder was given an unusable value.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with [`NetError`].
pub type Result<T> = std::result::Result<T, NetError>;
