//! The shared vocabulary of Nimbus: repository names, ref names, permission
//! levels, and the traits that make object storage and metadata pluggable.
//!
//! This crate knows nothing of HTTP, SQL or S3. Backends implement the traits
//! in [`storage`], [`metadata`], [`identity`] and [`webhooks`]; the protocol and web layers only see the
//! traits.

pub mod access;
pub mod events;
pub mod identity;
pub mod metadata;
pub mod name;
pub mod refs;
pub mod repo;
pub mod storage;
pub mod webhooks;

pub use access::{Access, Principal, Scope, ScopeError, Scopes, UserId};
pub use gix_hash::ObjectId;
pub use name::{RepoName, RepoNameError};
pub use refs::{Ref, RefName, RefNameError, RefTarget, RefUpdate};
pub use repo::{NewRepository, RepoId, RepoUpdate, Repository, Visibility};

/// Now, in Unix seconds (0 before 1970, saturating far in the future).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
