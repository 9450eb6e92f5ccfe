//! redis-pitr: point-in-time recovery for Redis and Valkey.
//!
//! `pitr archive` attaches to a master as a replica (PSYNC) and keeps its whole history in
//! object storage: the RDB of a full sync and every replicated write, in compressed,
//! checksummed, immutable objects. `pitr ls` and `pitr verify` read the archive back; `pitr
//! restore` rebuilds the master's state at any archived moment.
//!
//! # Layout
//!
//! One directory per part of the pipeline (see `docs/architecture.md`):
//!
//! - [`resp`]: the RESP scanner that finds whole commands in the replication stream, and the
//!   table of what the replicated commands are (pure).
//! - [`rdb`]: the streaming RDB parser (pure).
//! - [`net`]: reaching a server: connection settings and dialing, shared by both halves.
//! - [`ingest`]: the archiving half: replica link, segmenter, the archiver role, scheduled
//!   snapshots on links of their own.
//! - [`archive`]: the archive as both halves see it: names, object format, snapshot frames,
//!   store, reading many objects at once in order, catalog, the lease that admits one
//!   writer at a time, and the request for a snapshot now.
//! - [`maintain`]: work on an archive at rest: verify, compaction by level, retention.
//! - [`metrics`]: the `pitr_*` metrics and the HTTP server of `/metrics`, `/healthz`, `/readyz`.
//! - [`replay`]: the restoring half: plan, cut, filter, key conversion, live and file
//!   destinations.
//! - [`serve`]: the archive as a replication master for real replicas (`pitr serve`).
//!
//! `ingest` and `replay` never import each other; the parsers import no tokio.
pub mod archive;
pub mod cluster;
pub mod ingest;
pub mod maintain;
pub mod metrics;
pub mod net;
pub mod rdb;
pub mod replay;
pub mod resp;
pub mod serve;
pub mod ship;

/// `n` random bytes in hex: from the operating system (`/dev/urandom`), or, where that cannot
/// be read, from SipHash keyed by the standard library's per-process randomness and the time.
/// For one-time passwords, replication ids and lease holder ids.
pub(crate) fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; n];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_usize(i);
            h.write_u128(nanos);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
