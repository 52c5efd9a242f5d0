//! Users: creating them (`lars web add-user`) and checking a login. Names
//! and argon2id hashes live in `lars_users`; failed logins are counted per
//! name in memory.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use lars_store::{Store, UserStore};

use super::Console;
use crate::error::{ConsoleError, WebError};
use crate::validate;

/// What a failed login answers (the same for unknown names and wrong
/// passwords).
const WRONG: &str = "unknown user or wrong password";

/// Creates a console user with an argon2id hash of `password` (the `lars
/// web add-user` command). Names are 1..=190 bytes without control
/// characters; passwords at least 8 characters.
pub fn add_user(store: &Store, name: &str, password: &str) -> Result<(), WebError> {
    let name = validate::user_name(name).map_err(WebError::InvalidUser)?;
    if password.chars().count() < 8 {
        return Err(WebError::InvalidUser(
            "the password must have at least 8 characters".into(),
        ));
    }
    let hash = hash_password(password)?;
    store.create_user(name, &hash)?;
    Ok(())
}

impl Console {
    /// Checks a name and password against `lars_users`; the user name when
    /// they match, [`ConsoleError::Unauthorized`] when not. Unknown names
    /// cost the same argon2 work as wrong passwords. After
    /// [`MAX_FAILURES`](super::throttle::MAX_FAILURES) failures for one name
    /// within the window the name is refused without checking
    /// ([`ConsoleError::Throttled`]) until the window passes.
    pub(crate) async fn log_in(
        &self,
        name: &str,
        password: String,
    ) -> Result<String, ConsoleError> {
        let name = name.trim().to_owned();
        if self.throttle.blocked(&name) {
            return Err(ConsoleError::Throttled);
        }
        let n2 = name.clone();
        let user = self
            .run(move |st| {
                Ok(match st.user_by_name(&n2)? {
                    Some(u) if verify_password(&password, &u.password_hash) => Some(u.username),
                    Some(_) => None,
                    None => {
                        verify_password(&password, dummy_hash());
                        None
                    }
                })
            })
            .await?;
        match user {
            Some(u) => {
                self.throttle.clear(&name);
                Ok(u)
            }
            None => {
                self.throttle.failed(&name);
                Err(ConsoleError::Unauthorized(WRONG))
            }
        }
    }
}

/// An argon2id PHC string of `password` with a fresh random salt.
fn hash_password(password: &str) -> Result<String, WebError> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| WebError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`; false for a malformed
/// hash.
fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
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
        let Ok(h) = hash_password("correct horse") else {
            panic!("hashing failed");
        };
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
