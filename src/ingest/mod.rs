//! The archiving half: everything `pitr archive` runs. The replica link owns the socket to the
//! master ([`link`]); the segmenter cuts the stream into segments and makes them durable
//! ([`segment`]); the archiver ties them to the store, resumes, reconnects and ACKs only what is
//! durable ([`archiver`]); beside it, scheduled and requested snapshots are taken on links of
//! their own ([`scheduled`]). Never imports `replay`.

pub mod archiver;
pub mod follow;
pub mod link;
pub mod scheduled;
pub mod segment;

pub use archiver::{ArchiveConfig, ArchiveError, Archiver};
