//! Local passwords: hashed with argon2id (the `argon2` crate's defaults,
//! OWASP's recommended parameters: 19 MiB, 2 passes, 1 lane) and judged by
//! zxcvbn, which estimates how many guesses a password takes, with the user
//! name counted as known to the attacker.
//!
//! Hashing takes tens of milliseconds of CPU on purpose: call these from a
//! blocking thread ([`tokio::task::spawn_blocking`]), as the web layer does.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The shortest password accepted, in characters.
pub const MIN_LENGTH: usize = 10;
/// The longest password accepted, in bytes: hashing is bounded.
pub const MAX_BYTES: usize = 1024;

/// Why a password is refused. Messages go to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_LENGTH} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_BYTES} bytes long")]
    TooLong,
    #[error("the password is too easy to guess{hint}")]
    TooWeak { hint: String },
    #[error("could not hash the password")]
    Hashing,
}

/// Check that `password` is long and hard enough to guess for `user_name`.
pub fn check_strength(password: &str, user_name: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_LENGTH {
        return Err(PasswordError::TooShort);
    }
    let estimate = zxcvbn::zxcvbn(password, &[user_name, "nimbus"]);
    if estimate.score() < zxcvbn::Score::Three {
        let hint = estimate
            .feedback()
            .and_then(|feedback| feedback.warning())
            .map(|warning| format!(": {warning}"))
            .unwrap_or_default();
        return Err(PasswordError::TooWeak { hint });
    }
    Ok(())
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| PasswordError::Hashing)
}

/// Whether `password` matches `stored` (a PHC string). A missing or
/// malformed hash, or an over-long password, never matches; the work done
/// is the same as for a real comparison, so timing does not tell whether
/// the account exists or has a password.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let parsed = stored.and_then(|stored| PasswordHash::new(stored).ok());
    let too_long = password.len() > MAX_BYTES;
    match parsed {
        Some(hash) if !too_long => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        _ => {
            // Spend the same effort on a throwaway hash.
            let _ = self::hash(if too_long { "" } else { password });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let first = hash("correct horse battery staple").expect("hash");
        let second = hash("correct horse battery staple").expect("hash");
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify("correct horse battery staple", Some(&first)));
        assert!(!verify("correct horse battery stapler", Some(&first)));
        assert!(!verify("anything", None));
        assert!(!verify("anything", Some("not a phc string")));
        assert!(!verify(&"x".repeat(MAX_BYTES + 1), Some(&first)));
    }

    #[test]
    fn weak_short_and_long_passwords_are_refused() {
        assert_eq!(check_strength("short", "bob"), Err(PasswordError::TooShort));
        assert!(matches!(
            check_strength("password123", "bob"),
            Err(PasswordError::TooWeak { .. })
        ));
        assert!(matches!(
            check_strength("bobsmith1985", "bobsmith1985"),
            Err(PasswordError::TooWeak { .. })
        ));
        assert_eq!(
            check_strength(&"a".repeat(MAX_BYTES + 1), "bob"),
            Err(PasswordError::TooLong)
        );
        check_strength("violet-canyon-drifts-at-noon", "bob").expect("strong");
    }
}
