//! Users: creating them (`lars web add-user`), setting a password (`lars
//! web set-password`) and checking a login. Names and argon2id hashes live
//! in `lars_users`; failed logins are counted per (name, client address) in
//! memory.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Block, Params, Version};
use lars_store::{Store, UserStore};

use super::Console;
use super::checker::CheckError;
use crate::error::{ConsoleError, WebError};
use crate::stats::Counters;
use crate::validate;

/// What a failed login answers (the same for unknown names and wrong
/// passwords).
const WRONG: &str = "unknown user or wrong password";

/// Creates a console user with an argon2id hash of `password` (the `lars
/// web add-user` command). Names are 1..=190 bytes without control
/// characters; passwords at least 8 characters.
pub fn add_user(store: &Store, name: &str, password: &str) -> Result<(), WebError> {
    let name = validate::user_name(name).map_err(WebError::InvalidUser)?;
    let hash = hash_password(checked_password(password)?)?;
    store.create_user(name, &hash)?;
    Ok(())
}

/// What [`set_password`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSet {
    /// The user existed; its password is replaced.
    Changed,
    /// There was no such user; it is created with this password.
    Created,
}

/// Sets console user `name`'s password, creating the user when it does not
/// exist (the `lars web set-password` command: the way back in for an
/// operator who lost the password). Same rules as [`add_user`]. A running
/// console keeps the sessions the user already has until they expire or the
/// console restarts.
pub fn set_password(store: &Store, name: &str, password: &str) -> Result<PasswordSet, WebError> {
    let name = validate::user_name(name).map_err(WebError::InvalidUser)?;
    let hash = hash_password(checked_password(password)?)?;
    match store.set_password(name, &hash) {
        Ok(()) => Ok(PasswordSet::Changed),
        Err(lars_store::StoreError::NotFound(_)) => {
            store.create_user(name, &hash)?;
            Ok(PasswordSet::Created)
        }
        Err(e) => Err(e.into()),
    }
}

/// `password` when it is long enough.
fn checked_password(password: &str) -> Result<&str, WebError> {
    if password.chars().count() < 8 {
        return Err(WebError::InvalidUser(
            "the password must have at least 8 characters".into(),
        ));
    }
    Ok(password)
}

impl Console {
    /// Checks a name and password from client address `client` against
    /// `lars_users`; the user name when they match,
    /// [`ConsoleError::Unauthorized`] when not. Unknown names cost the same
    /// argon2 work as wrong passwords. A (name, address) pair in its backoff
    /// after failed logins is refused without a check
    /// ([`ConsoleError::Throttled`]); a login that finds every password
    /// check taken for the whole configured wait is refused as
    /// [`ConsoleError::Busy`].
    pub(crate) async fn log_in(
        &self,
        name: &str,
        password: String,
        client: IpAddr,
    ) -> Result<String, ConsoleError> {
        let name = name.trim().to_owned();
        if name.len() > validate::MAX_USER_NAME {
            // No user can have this name; nothing to check or to remember.
            Counters::bump(&self.counters.logins_failed);
            return Err(ConsoleError::Unauthorized(WRONG));
        }
        if let Some(left) = self.throttle.blocked(&name, client, Instant::now()) {
            Counters::bump(&self.counters.logins_throttled);
            return Err(ConsoleError::Throttled { retry_after: left });
        }
        let turn = match self.checker.turn().await {
            Ok(t) => t,
            Err(CheckError::Busy) => {
                let n = Counters::bump(&self.counters.logins_busy);
                if self.busy_log.open(Instant::now()) {
                    tracing::warn!(
                        refused_total = n,
                        "logins refused: every password check is busy (max_password_checks)"
                    );
                }
                return Err(ConsoleError::Busy);
            }
            Err(CheckError::Gone) => return Err(stopping()),
        };
        // A burst of guesses waited for turns together: the failures of
        // those before it may have blocked the pair meanwhile.
        if let Some(left) = self.throttle.blocked(&name, client, Instant::now()) {
            Counters::bump(&self.counters.logins_throttled);
            return Err(ConsoleError::Throttled { retry_after: left });
        }
        let n2 = name.clone();
        let hash = self
            .run(move |st| Ok(st.user_by_name(&n2)?.map(|u| (u.username, u.password_hash))))
            .await?;
        let (user, turn) = self
            .checker
            .run(turn, move |memory| match hash {
                Some((user, hash)) => verify_password(memory, &password, &hash).then_some(user),
                None => {
                    verify_password(memory, &password, dummy_hash());
                    None
                }
            })
            .await
            .map_err(|_| stopping())?;
        // The outcome is recorded before the turn goes to the next login.
        let _turn = turn;
        match user {
            Some(u) => {
                self.throttle.clear(&name, client);
                Counters::bump(&self.counters.logins_ok);
                Ok(u)
            }
            None => {
                self.throttle.failed(&name, client, Instant::now());
                Counters::bump(&self.counters.logins_failed);
                Err(ConsoleError::Unauthorized(WRONG))
            }
        }
    }
}

/// The console is stopping (its password checkers are gone).
fn stopping() -> ConsoleError {
    ConsoleError::Internal("the console is stopping; password checks have ended".into())
}

/// An argon2id PHC string of `password` with a fresh random salt.
fn hash_password(password: &str) -> Result<String, WebError> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| WebError::Hash(e.to_string()))
}

/// The most argon2 memory a stored hash may ask a check for (64 MiB; the
/// default parameters use 19 MiB). A hash asking more never matches.
const MAX_CHECK_BLOCKS: usize = 64 * 1024;

/// Whether `password` matches the PHC string `hash`; false for a malformed
/// hash. The argon2 working memory is `memory` (grown to the hash's memory
/// cost and kept for the next check), so a checker thread holds one buffer
/// for its whole life instead of allocating ~19 MiB per check.
pub(crate) fn verify_password(memory: &mut Vec<Block>, password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_CHECK_BLOCKS {
        tracing::error!(
            blocks,
            "a stored password hash asks for more argon2 memory than a check may use"
        );
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = argon2::Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    // `Output`'s comparison takes the same time wherever the bytes differ.
    Output::new(&out).is_ok_and(|o| o == *expected)
}

/// A hash nobody's password matches, verified for unknown names.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("no user has this password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        use argon2::password_hash::PasswordVerifier;
        let Ok(h) = hash_password("correct horse") else {
            panic!("hashing failed");
        };
        let mut memory = Vec::new();
        assert!(verify_password(&mut memory, "correct horse", &h));
        assert!(!verify_password(&mut memory, "wrong horse", &h));
        assert!(!verify_password(&mut memory, "correct horse", "not a hash"));
        // The same answers as the argon2 crate's own verification, with the
        // memory reused.
        let Ok(parsed) = PasswordHash::new(&h) else {
            panic!("parse");
        };
        assert!(
            argon2::Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert_eq!(memory.len(), 19 * 1024);
        // Other parameters and algorithms stored by older versions verify too.
        let small = argon2::Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(64, 3, 1, Some(16)).unwrap_or_else(|e| panic!("{e}")),
        );
        let Ok(old) = small.hash_password(b"old one") else {
            panic!("hashing failed");
        };
        let old = old.to_string();
        assert!(verify_password(&mut memory, "old one", &old));
        assert!(!verify_password(&mut memory, "old two", &old));
    }
}
