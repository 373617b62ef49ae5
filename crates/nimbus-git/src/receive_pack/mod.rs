//! receive-pack: accepting pushes. Commands are read, the pack is received
//! and checked, and the caller applies the ref updates to the metadata
//! store before the report is written.

pub mod details;
mod index_pack;
pub mod ingest;
pub mod report;
pub mod request;
