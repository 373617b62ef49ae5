//! The shared vocabulary of Nimbus: repository names, ref names, permission
//! levels, and the traits that make object storage and metadata pluggable.
//!
//! This crate knows nothing of HTTP, SQL or S3. Backends implement the traits
//! in [`storage`], [`metadata`] and [`identity`]; the protocol and web layers only see the
//! traits.

pub mod access;
pub mod events;
pub mod identity;
pub mod metadata;
pub mod name;
pub mod refs;
pub mod repo;
pub mod storage;

pub use access::{Access, Principal, Scope, ScopeError, Scopes, UserId};
pub use gix_hash::ObjectId;
pub use name::{RepoName, RepoNameError};
pub use refs::{Ref, RefName, RefNameError, RefTarget, RefUpdate};
pub use repo::{NewRepository, RepoId, RepoUpdate, Repository, Visibility};
