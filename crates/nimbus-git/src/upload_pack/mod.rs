//! upload-pack: serving clones and fetches, protocol v0/v1 and v2.

pub mod request;
