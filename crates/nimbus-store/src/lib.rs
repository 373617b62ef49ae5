//! Storage backends of Nimbus: objects in a local directory, metadata in
//! SQLite or PostgreSQL, and the local pack cache that turns stored packs
//! into an object directory git libraries can open.
//!
//! Each backend implements one trait of [`nimbus_types`]; nothing outside this
//! crate needs to know which backend it was given.

mod identity;
mod local;
mod pack_cache;
mod postgres;
mod refs_cache;
mod s3;
mod shared;
mod sql;
mod sqlite;
mod webhooks;

pub use local::LocalObjectStore;
pub use pack_cache::{PackCache, PackCacheError, PackCacheStats, PackLease};
pub use postgres::{PgError, PgMetadata};
pub use s3::{S3Config, S3ConfigError, S3Error, S3ObjectStore};
pub use sql::StoredValueError;
pub use sqlite::{SqliteError, SqliteMetadata};
