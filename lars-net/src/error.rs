//! The crate's error type.

use std::net::SocketAddr;

use lars_core::FrameError;

/// Why a lars-net operation failed. A variant with a cause does not repeat
/// it in its own message: print the chain (`{:#}` with anyhow, or walk
/// [`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A socket or poll operation failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// A listening socket could not be bound (e.g. the address is in use).
    #[error("cannot bind {what} {addr}")]
    Bind {
        /// What was being bound: `tcp`, `udp` or `http`.
        what: &'static str,
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be encoded or decoded.
    #[error("frame error")]
    Frame(#[from] FrameError),
    /// Nothing arrived before the deadline.
    #[error("timed out")]
    Timeout,
    /// A builder was given an unusable value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TLS certificate, key or CA file could not be used (the message
    /// names the file), or a TLS session could not be set up.
    #[error("tls: {0}")]
    Tls(String),
}

impl NetError {
    pub(crate) fn bind(
        what: &'static str,
        addr: SocketAddr,
    ) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Bind { what, addr, source }
    }
}

/// `Result` with [`NetError`].
pub type Result<T> = std::result::Result<T, NetError>;
