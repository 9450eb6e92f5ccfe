//! The point a cleanly stopped archiver vouches for: `<archive>/stopped`.
//!
//! While an archiver runs, its lease carries a vouched point ("at `ms` the master had nothing
//! past `offset`"), which extends the restorable window past the last write of an idle master
//! (see [`crate::archive::catalog::Catalog::extend_to_vouched`]). The lease is deleted when the
//! archiver stops; so that the window of a stopped archive does not shrink back to its last
//! write, a clean stop leaves its last vouched point in this object, beside the lease (a name
//! that is not an archive object's: listings skip it). It matters most for a cluster, where a
//! quiet shard's last write may be long before the moment every other shard is restored to.
//! A later archiver that continues the generation makes it stale, and a stale point extends
//! nothing (it no longer sits at the generation's end).

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};

use crate::archive::lease::{LeaseInfo, Vouched};
use crate::archive::names::GenerationId;
use crate::archive::store::{Store, StoreError};

/// The object's name under the archive prefix.
pub const STOPPED_OBJECT: &str = "stopped";

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    generation: u64,
    offset: u64,
    ms: u64,
}

/// Leaves `v` as the stopped archive's vouched point (replacing an older one).
pub async fn put(store: &Store, v: Vouched) -> Result<(), StoreError> {
    let body = serde_json::to_vec(&Body {
        generation: v.generation,
        offset: v.offset,
        ms: v.ms,
    })
    .unwrap_or_default();
    let path = store.rel_path(STOPPED_OBJECT);
    store
        .backend()
        .put(&path, PutPayload::from(Bytes::from(body)))
        .await
        .map(|_| ())
        .map_err(|source| StoreError::Backend {
            op: "put",
            object: format!("{}/{STOPPED_OBJECT}", store.url().trim_end_matches('/')),
            source,
        })
}

/// The newest vouched point: the live lease's, or the one a clean stop left. Unreadable or
/// absent: `None` (the window then ends at the last archived write).
pub async fn vouched_point(
    store: &Store,
    lease: Option<&LeaseInfo>,
) -> Option<(GenerationId, u64, u64)> {
    let live = lease.and_then(|l| l.vouched_point());
    let path = store.rel_path(STOPPED_OBJECT);
    let stopped = match store.backend().get(&path).await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Body>(&b).ok())
            .map(|b| (GenerationId(b.generation), b.offset, b.ms)),
        Err(_) => None,
    };
    match (live, stopped) {
        (Some(a), Some(b)) => Some(if b.2 > a.2 { b } else { a }),
        (a, b) => a.or(b),
    }
}
