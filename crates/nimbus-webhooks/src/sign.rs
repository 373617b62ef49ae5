//! Signatures receivers check: GitHub's `X-Hub-Signature-256` and the
//! Standard Webhooks `webhook-signature`, both HMAC-SHA256 with the
//! webhook's secret.
//!
//! - GitHub: `sha256=` and the hex HMAC of the body, keyed with the secret's
//!   bytes as written.
//! - Standard Webhooks: `v1,` and the base64 HMAC of `{id}.{timestamp}.{body}`.
//!   Its secrets are written `whsec_<base64 key>`; such a secret is keyed
//!   with the decoded key (as the Standard Webhooks libraries do), any other
//!   secret with its bytes as written.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const STANDARD_PREFIX: &str = "whsec_";

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The value of `X-Hub-Signature-256`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// The key Standard Webhooks signatures use for `secret`.
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(STANDARD_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The value of `webhook-signature` for message `id` sent at `timestamp`.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = format!("{id}.{timestamp}.");
    let mac = hmac(&standard_key(secret), &[signed.as_bytes(), body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// A new random secret in the Standard Webhooks form (`whsec_` and 32
/// random bytes in base64), usable as a GitHub secret too.
pub fn generate_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("{STANDARD_PREFIX}{}", STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in GitHub's "Validating webhook deliveries".
    #[test]
    fn github_documented_example() {
        assert_eq!(
            github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    /// The example of the Standard Webhooks specification and its
    /// reference libraries.
    #[test]
    fn standard_webhooks_example() {
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn plain_secrets_key_standard_signatures_with_their_bytes() {
        let plain = standard_signature("hunter2-hunter2", "msg", 1, b"{}");
        let expected = STANDARD.encode(hmac(b"hunter2-hunter2", &[b"msg.1.{}"]));
        assert_eq!(plain, format!("v1,{expected}"));
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes_and_differ() {
        let one = generate_secret();
        let two = generate_secret();
        assert_ne!(one, two);
        assert_eq!(standard_key(&one).len(), 32);
    }
}
