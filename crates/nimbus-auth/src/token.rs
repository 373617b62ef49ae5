//! Personal access tokens: generated from the OS random source, stored only
//! as SHA-256 hashes (tokens carry 238 bits of entropy, so a slow password
//! hash would add nothing).

use rand::Rng;
use sha2::{Digest, Sha256};

/// Every token starts with this, so leaked tokens are easy to find.
pub const PREFIX: &str = "nimbus_";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random token.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{PREFIX}{body}")
}

/// The stored form of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 40);
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a.clone()));
    }
}
