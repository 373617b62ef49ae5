//! The git protocol engine of Nimbus.
//!
//! Everything here speaks git over byte streams (`std::io::Read` /
//! `std::io::Write`) and knows nothing of HTTP: the web layer hands it a
//! request body and a response sink. Objects come from a repository's packs
//! through gix; refs come from and go to the metadata store through the
//! caller.

pub mod advertise;
pub mod archive;
pub mod blame;
pub mod browse;
pub mod bundle;
pub mod bundle_uri;
pub mod edit;
pub mod fetch_client;
pub mod last_commit;
pub mod maintenance;
pub mod objects;
pub mod pktline;
pub mod receive_pack;
pub mod service;
pub mod upload_pack;
