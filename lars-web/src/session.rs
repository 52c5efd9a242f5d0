//! In-memory sessions: random 256-bit ids, each with its own CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session that never logged in (the login form's) lives.
const ANON_TTL: Duration = Duration::from_secs(30 * 60);

/// What a request's session says.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    /// The session id (the cookie value or the bearer token).
    pub id: String,
    /// The logged-in user; `None` for the login form's anonymous session.
    pub user: Option<String>,
    /// The token every form and cookie-authenticated API write must carry.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    user: Option<String>,
    csrf: String,
    last_seen: Instant,
}

/// The session table.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    idle: Duration,
    max: usize,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle,
            max: max.max(16),
        }
    }

    /// Creates a session (anonymous for `None`) and returns it.
    pub(crate) fn create(&self, user: Option<String>) -> Option<SessionInfo> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max {
            self.evict(&mut map, now);
        }
        map.insert(
            id.clone(),
            Entry {
                user: user.clone(),
                csrf: csrf.clone(),
                last_seen: now,
            },
        );
        Some(SessionInfo { id, user, csrf })
    }

    /// The live session `id`, refreshing its idle timer.
    pub(crate) fn get(&self, id: &str) -> Option<SessionInfo> {
        let now = Instant::now();
        let mut map = self.lock();
        let ttl = match map.get(id) {
            Some(e) if e.user.is_some() => self.idle,
            Some(_) => ANON_TTL,
            None => return None,
        };
        let expired = map
            .get(id)
            .is_some_and(|e| now.duration_since(e.last_seen) > ttl);
        if expired {
            map.remove(id);
            return None;
        }
        let e = map.get_mut(id)?;
        e.last_seen = now;
        Some(SessionInfo {
            id: id.to_owned(),
            user: e.user.clone(),
            csrf: e.csrf.clone(),
        })
    }

    /// Live sessions (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops expired sessions, then the oldest anonymous ones, then the
    /// oldest of all, until a quarter of the room is free.
    fn evict(&self, map: &mut HashMap<String, Entry>, now: Instant) {
        let idle = self.idle;
        map.retain(|_, e| {
            let ttl = if e.user.is_some() { idle } else { ANON_TTL };
            now.duration_since(e.last_seen) <= ttl
        });
        let target = self.max - self.max / 4;
        if map.len() <= target {
            return;
        }
        let mut order: Vec<(bool, Instant, String)> = map
            .iter()
            .map(|(k, e)| (e.user.is_some(), e.last_seen, k.clone()))
            .collect();
        order.sort();
        let excess = map.len() - target;
        for (_, _, k) in order.into_iter().take(excess) {
            map.remove(&k);
        }
    }
}

/// 32 random bytes from the OS, hex encoded; `None` when the OS RNG fails.
pub(crate) fn random_token() -> Option<String> {
    let mut buf = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut buf) {
        tracing::error!("OS random generator failed: {e}");
        return None;
    }
    Some(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..63]));
    }

    #[test]
    fn eviction_prefers_anonymous_sessions() {
        let s = Sessions::new(Duration::from_secs(60), 16);
        let user = s.create(Some("admin".into())).unwrap();
        for _ in 0..40 {
            s.create(None).unwrap();
        }
        assert!(s.lock().len() <= 16);
        assert_eq!(s.get(&user.id).unwrap().user.as_deref(), Some("admin"));
        s.remove(&user.id);
        assert!(s.get(&user.id).is_none());
    }
}
