//! redis-pitr: point-in-time recovery for Redis and Valkey.
//!
//! `pitr archive` attaches to a master as a replica (PSYNC) and keeps its whole history in
//! object storage: the RDB of a full sync and every replicated write, in compressed,
//! checksummed, immutable objects. `pitr ls` and `pitr verify` read the archive back.
//!
//! # Layout
//!
//! One module per pipeline stage (see `docs/architecture.md`):
//!
//! - [`link`]: the replica link. Owns the socket: handshake, PSYNC, full-sync framing, ACKs.
//! - [`stream`]: framing of the replication stream into whole commands (pure).
//! - [`segment`]: the segmenter. Cuts the stream into segments, stamps, seals, uploads,
//!   publishes the durable offset.
//! - [`format`]: the object format: header, zstd body, trailer, chain (pure).
//! - [`frames`]: snapshot bodies as runs of zstd frames, decompressed in parallel.
//! - [`names`]: typed positions and object names that round-trip (pure).
//! - [`store`]: the object store under the archive's prefix (`object_store`).
//! - [`catalog`]: generations, windows, holes and gaps from a listing alone (pure).
//! - [`rdb`]: the streaming RDB parser (pure).
//! - [`archive`]: the `pitr archive` role, tying link, segmenter and store together.
//! - [`verify`]: reads every object back and checks the whole archive.
pub mod archive;
pub mod catalog;
pub mod cut;
pub mod format;
pub mod frames;
pub mod link;
pub mod names;
pub mod plan;
pub mod rdb;
pub mod restore;
pub mod segment;
pub mod store;
pub mod stream;
pub mod verify;
