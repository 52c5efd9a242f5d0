//! [`Chain`]: an error and its causes on one line.

use std::error::Error as StdError;

/// Displays an error and its causes on one line, `outer: cause: root`, for
/// log lines and status pages that hold the error itself rather than an
/// `anyhow` chain. The workspace's error types never repeat their cause in
/// their own message, so each appears once.
///
/// ```
/// use lars_core::Chain;
///
/// #[derive(Debug)]
/// struct Outer(std::io::Error);
/// impl std::fmt::Display for Outer {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot write the snapshot")
///     }
/// }
/// impl std::error::Error for Outer {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
/// let e = Outer(std::io::Error::other("disk full"));
/// assert_eq!(Chain(&e).to_string(), "cannot write the snapshot: disk full");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
