//! upload-pack: serving clones and fetches, protocol v0/v1 and v2.

pub mod cache;
pub mod pack;
pub mod plan;
pub mod reach;
pub mod request;
pub mod serve;

pub use cache::ClonePackCache;
pub use reach::ReachIndex;
pub use serve::{RepoView, Summary, serve_v0, serve_v2, serve_v2_ls_refs};
