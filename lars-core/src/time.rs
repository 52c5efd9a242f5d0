//! The wall clock in unix seconds, for the services' shells (statistics
//! timestamps, stored times, status pages).
//!
//! This is the one place lars turns `SystemTime` into unix seconds. Nothing
//! else in lars-core calls [`unix_now`], and the pure crates (lars-lb,
//! lars-stats, lars-sim) forbid it in their `clippy.toml`: there, time is
//! an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch at `t`; 0 before 1970.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the unix epoch, now.
#[allow(clippy::disallowed_methods)] // the one wall-clock read shared by the shells
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_since_the_epoch_and_zero_before_it() {
        assert_eq!(
            unix_secs(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999)),
            1_700_000_000
        );
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(unix_now() > 1_700_000_000);
    }
}
