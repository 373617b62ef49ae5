//! Web sessions: a short-lived signed session token (a JWT, EdDSA) and a
//! long-lived refresh secret, both in cookies, backed by a session row.
//!
//! - The session token names the session (`sid`), the user and the
//!   session's anti-CSRF token, and lives [`ACCESS_TTL`].
//! - The refresh secret (`<sid>.<secret>`) is stored only as a hash and
//!   replaced on every use ("rotation"); presenting the replaced one again
//!   means it leaked, and revokes the session.
//! - Every request also checks the session row, so logging out, a password
//!   change or the removal of the account ends the session at once. A
//!   process that cannot reach the database (the split deployment) verifies
//!   session tokens with [`KeySet`] alone, from the JWKS document at
//!   `/.well-known/jwks.json`; revocation then takes effect within
//!   [`ACCESS_TTL`].
//!
//! The signing keys are Ed25519 keys stored in the metadata database, so
//! every process of an instance signs and verifies with the same keys.

use crate::token;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nimbus_types::identity::{NewSession, Rotation, SessionRecord, SigningKey};
use nimbus_types::metadata::{MetadataError, MetadataStore, User};
use nimbus_types::unix_now as now;
use nimbus_types::{Principal, Scopes, UserId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// How long a session token is accepted.
pub const ACCESS_TTL: i64 = 15 * 60;
/// How long a session lasts at most, refreshed or not.
pub const SESSION_TTL: i64 = 30 * 24 * 3600;
/// The audience of session tokens: the web interface.
pub const AUDIENCE: &str = "nimbus-web";
/// Clock skew tolerated when checking expiry.
const LEEWAY: u64 = 30;

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The issuing instance (its public URL).
    pub iss: String,
    pub aud: String,
    /// The user id, as a string (JWT subjects are strings).
    pub sub: String,
    pub name: String,
    pub owner: bool,
    pub sid: String,
    pub csrf: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a session token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the session token names no known signing key")]
    UnknownKey,
    #[error("a signing key is malformed")]
    BadKey,
    #[error("could not fetch the signing keys: {0}")]
    Fetch(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Public keys that verify session tokens: an instance's own, or those of
/// a JWKS document fetched from it.
#[derive(Clone)]
pub struct KeySet {
    issuer: String,
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// Keys from a JWKS document (`{"keys": [...]}`); only Ed25519 keys
    /// (`kty` `OKP`, `crv` `Ed25519`) are taken.
    pub fn from_jwks(issuer: &str, document: &serde_json::Value) -> Result<KeySet, SessionError> {
        let mut keys = HashMap::new();
        let entries = document
            .get("keys")
            .and_then(|keys| keys.as_array())
            .ok_or(SessionError::BadKey)?;
        for entry in entries {
            let field = |name: &str| entry.get(name).and_then(|v| v.as_str());
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            let (Some(kid), Some(x)) = (field("kid"), field("x")) else {
                return Err(SessionError::BadKey);
            };
            keys.insert(kid.to_owned(), decoding_key(x)?);
        }
        Ok(KeySet {
            issuer: issuer.to_owned(),
            keys,
        })
    }

    /// Fetch `<issuer>/.well-known/jwks.json` (no redirects, 10 s timeout,
    /// at most 64 KiB).
    pub async fn fetch(issuer: &str) -> Result<KeySet, SessionError> {
        let client = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SessionError::Fetch(e.to_string()))?;
        let url = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| SessionError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(SessionError::Fetch(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| SessionError::Fetch(e.to_string()))?;
        if body.len() > 64 << 10 {
            return Err(SessionError::Fetch(format!("{url} is too large")));
        }
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| SessionError::Fetch(e.to_string()))?;
        KeySet::from_jwks(issuer, &document)
    }

    /// Check a session token's signature, algorithm, issuer, audience and
    /// expiry at `now`. Nothing but EdDSA with a known key id is accepted
    /// (so neither `alg: none` nor an HMAC keyed with a public key).
    pub fn verify(&self, token: &str, now: i64) -> Result<SessionClaims, SessionError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(jsonwebtoken::errors::Error::from(
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm,
            )
            .into());
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(SessionError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY;
        // Expiry is checked against the caller's clock, below.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<SessionClaims>(token, key, &validation)?.claims;
        if claims.exp + LEEWAY as i64 <= now {
            return Err(jsonwebtoken::errors::Error::from(
                jsonwebtoken::errors::ErrorKind::ExpiredSignature,
            )
            .into());
        }
        Ok(claims)
    }
}

fn decoding_key(x: &str) -> Result<DecodingKey, SessionError> {
    // jsonwebtoken slices the first 32 bytes: refuse anything else first.
    match URL_SAFE_NO_PAD.decode(x) {
        Ok(bytes) if bytes.len() == 32 => {
            DecodingKey::from_ed_components(x).map_err(|_| SessionError::BadKey)
        }
        _ => Err(SessionError::BadKey),
    }
}

/// The instance's signing key and every key it verifies with.
#[derive(Clone)]
pub struct SessionKeys {
    kid: String,
    encoding: EncodingKey,
    verify: KeySet,
    jwks: serde_json::Value,
}

impl SessionKeys {
    /// Load the instance's keys, creating the first one if there is none.
    /// Processes starting together agree: each inserts its candidate only if
    /// the id is free, then all use the newest stored key.
    pub async fn load_or_create(
        store: &dyn MetadataStore,
        issuer: &str,
    ) -> Result<SessionKeys, SessionError> {
        let mut keys = store.signing_keys().await?;
        if keys.is_empty() {
            store.add_signing_key(&generate_key()?).await?;
            keys = store.signing_keys().await?;
        }
        Self::from_keys(&keys, issuer)
    }

    fn from_keys(keys: &[SigningKey], issuer: &str) -> Result<SessionKeys, SessionError> {
        let current = keys.first().ok_or(SessionError::BadKey)?;
        let mut jwks = Vec::new();
        for key in keys.iter().filter(|key| key.algorithm == "EdDSA") {
            jwks.push(serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": key.kid,
                "x": URL_SAFE_NO_PAD.encode(&key.public_key),
            }));
        }
        let jwks = serde_json::json!({ "keys": jwks });
        Ok(SessionKeys {
            kid: current.kid.clone(),
            encoding: EncodingKey::from_ed_der(&current.private_key),
            verify: KeySet::from_jwks(issuer, &jwks)?,
            jwks,
        })
    }

    /// The JWKS document of the public keys.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn key_set(&self) -> &KeySet {
        &self.verify
    }

    pub fn issuer(&self) -> &str {
        &self.verify.issuer
    }

    /// Sign `claims`.
    pub fn sign(&self, claims: &SessionClaims) -> Result<String, SessionError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// A new random Ed25519 key.
pub fn generate_key() -> Result<SigningKey, SessionError> {
    let seed: [u8; 32] = rand::rng().random();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_key = key
        .to_pkcs8_der()
        .map_err(|_| SessionError::BadKey)?
        .as_bytes()
        .to_vec();
    let public_key = key.verifying_key().to_bytes().to_vec();
    Ok(SigningKey {
        kid: hex_id(&token::hash(&URL_SAFE_NO_PAD.encode(&public_key))[..8]),
        algorithm: "EdDSA".into(),
        private_key,
        public_key,
        created_at: now(),
    })
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` random bytes, base64url without padding.
pub fn random_string(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// The cookies of a new or refreshed session.
#[derive(Clone)]
pub struct IssuedSession {
    /// The signed session token.
    pub access: String,
    /// `<sid>.<secret>`.
    pub refresh: String,
    pub csrf: String,
    /// Unix seconds: when the refresh cookie should expire.
    pub expires_at: i64,
}

impl std::fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedSession(<redacted>)")
    }
}

/// Who a request's session cookies belong to.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    /// The signed-in user, with the session id and its CSRF token.
    pub session: Option<ActiveSession>,
    /// New cookies to send: the session was refreshed.
    pub renewed: Option<IssuedSession>,
    /// The cookies are dead: clear them.
    pub clear: bool,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub id: String,
    pub user: User,
    pub csrf: String,
}

impl ActiveSession {
    /// A session acts with all of its user's rights.
    pub fn principal(&self) -> Principal {
        Principal::User {
            id: self.user.id,
            name: self.user.name.clone(),
            is_owner: self.user.is_owner,
            scopes: Scopes::ALL,
        }
    }
}

/// Starts, checks, refreshes and ends web sessions.
pub struct Sessions {
    store: Arc<dyn MetadataStore>,
    keys: SessionKeys,
}

impl Sessions {
    pub fn new(store: Arc<dyn MetadataStore>, keys: SessionKeys) -> Sessions {
        Sessions { store, keys }
    }

    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// Sign `user` in: a new session row and its cookies.
    pub async fn start(&self, user: &User, now: i64) -> Result<IssuedSession, SessionError> {
        let id = random_string(18);
        let secret = random_string(32);
        let csrf = random_string(24);
        let expires_at = now + SESSION_TTL;
        self.store
            .create_session(&NewSession {
                id: id.clone(),
                user: user.id,
                refresh_hash: token::hash(&secret).to_vec(),
                csrf: csrf.clone(),
                created_at: now,
                expires_at,
            })
            .await?;
        let access = self.access_token(&id, user, &csrf, now, expires_at)?;
        Ok(IssuedSession {
            access,
            refresh: format!("{id}.{secret}"),
            csrf,
            expires_at,
        })
    }

    fn access_token(
        &self,
        sid: &str,
        user: &User,
        csrf: &str,
        now: i64,
        session_end: i64,
    ) -> Result<String, SessionError> {
        self.keys.sign(&SessionClaims {
            iss: self.keys.issuer().to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.id.0.to_string(),
            name: user.name.clone(),
            owner: user.is_owner,
            sid: sid.to_owned(),
            csrf: csrf.to_owned(),
            iat: now,
            exp: (now + ACCESS_TTL).min(session_end),
        })
    }

    /// Resolve the session cookies of a request at `now`: a valid session
    /// token of a live session signs the user in; otherwise a valid refresh
    /// secret renews the session; anything else leaves the request
    /// anonymous and asks for the cookies to be cleared.
    pub async fn resolve(
        &self,
        access: Option<&str>,
        refresh: Option<&str>,
        now: i64,
    ) -> Result<SessionOutcome, MetadataError> {
        if access.is_none() && refresh.is_none() {
            return Ok(SessionOutcome::default());
        }
        if let Some(claims) = access.and_then(|token| self.keys.key_set().verify(token, now).ok())
            && let Some(record) = self.store.session(&claims.sid).await?
            && live(&record, now)
            && record.user.id == UserId(claims.sub.parse().unwrap_or(-1))
        {
            return Ok(SessionOutcome {
                session: Some(ActiveSession {
                    id: record.id,
                    user: record.user,
                    csrf: record.csrf,
                }),
                renewed: None,
                clear: false,
            });
        }
        let dead = SessionOutcome {
            session: None,
            renewed: None,
            clear: true,
        };
        let Some((sid, secret)) = refresh.and_then(|value| value.split_once('.')) else {
            return Ok(dead);
        };
        let replacement = random_string(32);
        let rotation = self
            .store
            .rotate_session(sid, &token::hash(secret), &token::hash(&replacement), now)
            .await?;
        match rotation {
            Rotation::Rotated(record) => {
                let access = match self.access_token(
                    &record.id,
                    &record.user,
                    &record.csrf,
                    now,
                    record.expires_at,
                ) {
                    Ok(access) => access,
                    Err(err) => {
                        tracing::error!(error = %err, "could not sign a session token");
                        return Ok(dead);
                    }
                };
                Ok(SessionOutcome {
                    renewed: Some(IssuedSession {
                        access,
                        refresh: format!("{}.{replacement}", record.id),
                        csrf: record.csrf.clone(),
                        expires_at: record.expires_at,
                    }),
                    session: Some(ActiveSession {
                        id: record.id,
                        user: record.user,
                        csrf: record.csrf,
                    }),
                    clear: false,
                })
            }
            Rotation::Reused => {
                tracing::warn!(
                    session = sid,
                    "a replaced refresh secret was presented again; session revoked"
                );
                Ok(dead)
            }
            Rotation::Refused => Ok(dead),
        }
    }

    /// Sign out: revoke the session.
    pub async fn end(&self, sid: &str, now: i64) -> Result<(), MetadataError> {
        self.store.revoke_session(sid, now).await?;
        Ok(())
    }
}

fn live(record: &SessionRecord, now: i64) -> bool {
    record.revoked_at.is_none() && record.expires_at > now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(issuer: &str, now: i64) -> SessionClaims {
        SessionClaims {
            iss: issuer.into(),
            aud: AUDIENCE.into(),
            sub: "1".into(),
            name: "owner".into(),
            owner: true,
            sid: "s".into(),
            csrf: "c".into(),
            iat: now,
            exp: now + ACCESS_TTL,
        }
    }

    fn keys(issuer: &str) -> SessionKeys {
        SessionKeys::from_keys(&[generate_key().expect("key")], issuer).expect("keys")
    }

    #[test]
    fn signed_tokens_verify_and_forgeries_do_not() {
        let now = 1_800_000_000;
        let ours = keys("https://nimbus.test");
        let token = ours
            .sign(&claims("https://nimbus.test", now))
            .expect("sign");
        let verified = ours.key_set().verify(&token, now).expect("valid");
        assert_eq!(verified.name, "owner");

        // Expired.
        assert!(
            ours.key_set()
                .verify(&token, now + ACCESS_TTL + 60)
                .is_err()
        );
        // Another instance's key (same kid would not help: different key).
        let theirs = keys("https://nimbus.test");
        let foreign = theirs
            .sign(&claims("https://nimbus.test", now))
            .expect("sign");
        assert!(ours.key_set().verify(&foreign, now).is_err());
        // Same key, other issuer.
        let other_issuer = ours.sign(&claims("https://evil.test", now)).expect("sign");
        assert!(ours.key_set().verify(&other_issuer, now).is_err());
        // `alg: none`, with and without a signature.
        let mut parts = token.split('.');
        let (_, payload) = (parts.next(), parts.next().expect("payload"));
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        for forged in [
            format!("{none_header}.{payload}."),
            format!("{none_header}.{payload}"),
        ] {
            assert!(ours.key_set().verify(&forged, now).is_err(), "{forged}");
        }
        // HS256 keyed with the public key (algorithm confusion).
        let public = ours.jwks()["keys"][0]["x"].as_str().expect("x").to_owned();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ours.kid.clone());
        let confused = jsonwebtoken::encode(
            &header,
            &claims("https://nimbus.test", now),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("sign");
        assert!(ours.key_set().verify(&confused, now).is_err());
        // A changed payload under the original signature.
        let mut tampered = claims("https://nimbus.test", now);
        tampered.sub = "2".into();
        let tampered_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).expect("json"));
        let pieces: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{tampered_payload}.{}", pieces[0], pieces[2]);
        assert!(ours.key_set().verify(&forged, now).is_err());
        // Garbage.
        assert!(ours.key_set().verify("not.a.jwt", now).is_err());
        assert!(ours.key_set().verify("", now).is_err());
    }

    #[test]
    fn jwks_round_trips_and_bad_keys_are_refused() {
        let now = 1_800_000_000;
        let ours = keys("https://nimbus.test");
        let fetched = KeySet::from_jwks("https://nimbus.test", ours.jwks()).expect("jwks");
        let token = ours
            .sign(&claims("https://nimbus.test", now))
            .expect("sign");
        fetched
            .verify(&token, now)
            .expect("verifies from the JWKS alone");
        let short = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "AAAA"}]});
        assert!(KeySet::from_jwks("https://nimbus.test", &short).is_err());
        assert!(KeySet::from_jwks("https://nimbus.test", &serde_json::json!({})).is_err());
    }
}
