//! What the TCP servers and clients did: [`NetStats`] (relaxed atomic
//! counters, shared with the event loops), its plain copy
//! [`NetStatsSnapshot`], and [`ConnLimitStats`], the part a service shows on
//! `/status` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of a TCP server or client (relaxed atomics; read with
/// [`NetStats::snapshot`]). Fields that do not apply stay zero.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted (server) or established (client), in total.
    pub accepted: AtomicU64,
    /// Connections closed at once on accept, for any reason (the sum of
    /// `refused_max_conn` and `refused_per_peer`).
    pub refused: AtomicU64,
    /// Connections closed at once because `maxConn` were open.
    pub refused_max_conn: AtomicU64,
    /// Connections closed at once because their address already held
    /// `maxConnPerPeer`.
    pub refused_per_peer: AtomicU64,
    /// Log lines written about refused connections (at most one per
    /// `refusedLogInterval`, each counting the refusals since the last).
    pub refused_log_lines: AtomicU64,
    /// Connections closed because they completed no frame within
    /// `idleTimeout` of being accepted, while connections were being
    /// refused.
    pub closed_idle: AtomicU64,
    /// Connections closed because a partial frame sat in their buffer
    /// longer than `frameTimeout`.
    pub closed_partial_frame: AtomicU64,
    /// Connections closed for a frame with a bad length.
    pub bad_frames: AtomicU64,
    /// Frames skipped because no handler knows their msgid.
    pub unknown_msgids: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames queued for sending.
    pub frames_out: AtomicU64,
    /// Client: connect attempts that failed.
    pub connect_failures: AtomicU64,
    /// Client: frames dropped because the client was disconnected (or its
    /// disconnected queue was full).
    pub dropped: AtomicU64,
    /// Server: accept errors such as EMFILE survived.
    pub accept_errors: AtomicU64,
    /// Server: connections closed at once because their address is not in
    /// the listener's allowlist (`allow`; also counted in `refused`).
    pub refused_not_allowed: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Server: TLS clients refused for sending no certificate while
    /// `client_auth = required`.
    pub tls_refused_no_cert: AtomicU64,
    /// Server: TLS clients refused for a certificate that does not chain to
    /// `[tls] ca` (or is expired, or not for client use).
    pub tls_refused_bad_cert: AtomicU64,
    /// TLS handshakes that failed for another reason (a plain client on the
    /// TLS port, no common version or cipher; client side: a server
    /// certificate that does not verify).
    pub tls_refused_handshake: AtomicU64,
    /// Server: TLS connections closed for not finishing the handshake
    /// within `frameTimeout`.
    pub tls_handshake_timeout: AtomicU64,
    /// Certificate reloads (SIGHUP) that succeeded.
    pub tls_reloads: AtomicU64,
    /// Certificate reloads that failed (the previous certificate stays).
    pub tls_reload_failures: AtomicU64,
}

/// A plain copy of [`NetStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NetStatsSnapshot {
    pub open: u64,
    pub accepted: u64,
    pub refused: u64,
    pub refused_max_conn: u64,
    pub refused_per_peer: u64,
    pub refused_log_lines: u64,
    pub closed_idle: u64,
    pub closed_partial_frame: u64,
    pub bad_frames: u64,
    pub unknown_msgids: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub connect_failures: u64,
    pub dropped: u64,
    pub accept_errors: u64,
    pub refused_not_allowed: u64,
    pub tls_handshakes: u64,
    pub tls_refused_no_cert: u64,
    pub tls_refused_bad_cert: u64,
    pub tls_refused_handshake: u64,
    pub tls_handshake_timeout: u64,
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
}

impl NetStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStatsSnapshot {
            open: r(&self.open),
            accepted: r(&self.accepted),
            refused: r(&self.refused),
            refused_max_conn: r(&self.refused_max_conn),
            refused_per_peer: r(&self.refused_per_peer),
            refused_log_lines: r(&self.refused_log_lines),
            closed_idle: r(&self.closed_idle),
            closed_partial_frame: r(&self.closed_partial_frame),
            bad_frames: r(&self.bad_frames),
            unknown_msgids: r(&self.unknown_msgids),
            frames_in: r(&self.frames_in),
            frames_out: r(&self.frames_out),
            connect_failures: r(&self.connect_failures),
            dropped: r(&self.dropped),
            accept_errors: r(&self.accept_errors),
            refused_not_allowed: r(&self.refused_not_allowed),
            tls_handshakes: r(&self.tls_handshakes),
            tls_refused_no_cert: r(&self.tls_refused_no_cert),
            tls_refused_bad_cert: r(&self.tls_refused_bad_cert),
            tls_refused_handshake: r(&self.tls_refused_handshake),
            tls_handshake_timeout: r(&self.tls_handshake_timeout),
            tls_reloads: r(&self.tls_reloads),
            tls_reload_failures: r(&self.tls_reload_failures),
        }
    }

    pub(crate) fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

impl NetStatsSnapshot {
    /// The counters of the server's connection limits, as the services show
    /// them on `/status` ([`ConnLimitStats`]).
    pub fn limits(&self) -> ConnLimitStats {
        ConnLimitStats {
            refused_max_conn: self.refused_max_conn,
            refused_per_peer: self.refused_per_peer,
            closed_idle: self.closed_idle,
            closed_partial_frame: self.closed_partial_frame,
            refused_not_allowed: self.refused_not_allowed,
            tls_handshakes: self.tls_handshakes,
            tls_refused_no_cert: self.tls_refused_no_cert,
            tls_refused_bad_cert: self.tls_refused_bad_cert,
            tls_refused_handshake: self.tls_refused_handshake,
            tls_handshake_timeout: self.tls_handshake_timeout,
            tls_reloads: self.tls_reloads,
            tls_reload_failures: self.tls_reload_failures,
        }
    }
}

/// What a TCP server's connection limits did (`[reactor] maxConn`,
/// `maxConnPerPeer`, `idleTimeout`, `frameTimeout`, `allow`) and its TLS
/// listener (`[tls]`): the part of [`NetStats`] a service puts on its
/// `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnLimitStats {
    /// Connections refused because `maxConn` were open.
    pub refused_max_conn: u64,
    /// Connections refused because their address held `maxConnPerPeer`.
    pub refused_per_peer: u64,
    /// Connections closed for completing no frame within `idleTimeout`.
    pub closed_idle: u64,
    /// Connections closed for a partial frame older than `frameTimeout`.
    pub closed_partial_frame: u64,
    /// Connections refused because their address is not in `allow`.
    pub refused_not_allowed: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS clients refused: no client certificate (`client_auth = required`).
    pub tls_refused_no_cert: u64,
    /// TLS clients refused: a certificate not signed by `[tls] ca`.
    pub tls_refused_bad_cert: u64,
    /// TLS handshakes failed otherwise (e.g. a plain client on the TLS port).
    pub tls_refused_handshake: u64,
    /// TLS connections closed for not finishing the handshake in time.
    pub tls_handshake_timeout: u64,
    /// Certificate reloads that succeeded.
    pub tls_reloads: u64,
    /// Certificate reloads that failed (the previous certificate stays).
    pub tls_reload_failures: u64,
}

impl ConnLimitStats {
    /// Writes the counters as `{prefix}_tcp_refused_total{reason=..}`,
    /// `{prefix}_tcp_closed_total{reason=..}`,
    /// `{prefix}_tls_refused_total{reason=..}`, `{prefix}_tls_handshakes_total`
    /// and `{prefix}_tls_reloads_total{result=..}` (e.g. prefix `lars_dns`).
    pub fn prometheus(&self, prefix: &str, out: &mut crate::http::PromText) {
        out.labelled(
            &format!("{prefix}_tcp_refused_total"),
            "counter",
            "TCP connections refused on accept, by reason (maxConn, maxConnPerPeer, allow).",
            [
                ("reason=\"max_conn\"".to_owned(), self.refused_max_conn),
                ("reason=\"per_peer\"".to_owned(), self.refused_per_peer),
                (
                    "reason=\"not_allowed\"".to_owned(),
                    self.refused_not_allowed,
                ),
            ],
        );
        out.labelled(
            &format!("{prefix}_tcp_closed_total"),
            "counter",
            "TCP connections closed by a limit (idleTimeout, frameTimeout).",
            [
                ("reason=\"idle\"".to_owned(), self.closed_idle),
                (
                    "reason=\"partial_frame\"".to_owned(),
                    self.closed_partial_frame,
                ),
            ],
        );
        out.labelled(
            &format!("{prefix}_tls_refused_total"),
            "counter",
            "TLS connections refused during the handshake, by reason.",
            [
                (
                    "reason=\"no_client_cert\"".to_owned(),
                    self.tls_refused_no_cert,
                ),
                (
                    "reason=\"bad_client_cert\"".to_owned(),
                    self.tls_refused_bad_cert,
                ),
                (
                    "reason=\"handshake\"".to_owned(),
                    self.tls_refused_handshake,
                ),
                (
                    "reason=\"handshake_timeout\"".to_owned(),
                    self.tls_handshake_timeout,
                ),
            ],
        );
        out.metric(
            &format!("{prefix}_tls_handshakes_total"),
            "counter",
            "TLS handshakes completed.",
            self.tls_handshakes,
        );
        out.labelled(
            &format!("{prefix}_tls_reloads_total"),
            "counter",
            "Certificate reloads (SIGHUP), by result.",
            [
                ("result=\"ok\"".to_owned(), self.tls_reloads),
                ("result=\"failed\"".to_owned(), self.tls_reload_failures),
            ],
        );
    }
}
