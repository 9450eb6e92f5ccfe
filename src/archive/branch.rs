//! Branch records: writes a failover lost.
//!
//! When the master the archive follows fails over and the archive holds bytes past the
//! promoted replica's offset at its promotion (writes acknowledged by the old master that
//! never reached the replica), those bytes are on a branch the new master does not have. They
//! stay in their generation, restorable for moments before the failover; the archive goes on
//! in a new generation from the new master, so they are never replayed for a moment after it.
//! The archiver writes one record per such failover, `<archive>/branches/<gen:010>-<at:020>.json`,
//! beside the lease (a name that is not an archive object name: listings skip it), and `pitr
//! ls` reports them (`docs/format.md`, "Branches").

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::store::{Store, StoreError};

/// The records' folder under the archive prefix.
pub const BRANCHES_DIR: &str = "branches";

/// One failover that lost writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The generation that holds the lost bytes.
    pub generation: u64,
    /// The offset where the new master's history leaves the archived one: every archived
    /// byte at or past it (up to `archived_end`) was lost by the failover.
    pub at: u64,
    /// The end of the archived stream of the old master.
    pub archived_end: u64,
    /// The archived replication id, and the new master's.
    pub replid: String,
    pub new_replid: String,
    /// The new master (`host:port`).
    pub new_master: String,
    /// When the archiver found it (ms since the epoch): moments before this restore with the
    /// lost writes (the old master had them then), later ones from the new generation.
    pub found_ms: u64,
    /// The generation that continues from the new master.
    pub continued_in: u64,
}

impl Branch {
    /// The bytes the failover lost.
    pub fn lost_bytes(&self) -> u64 {
        self.archived_end.saturating_sub(self.at)
    }

    fn rel(&self) -> String {
        format!("{BRANCHES_DIR}/{:010}-{:020}.json", self.generation, self.at)
    }
}

fn err(store: &Store, op: &'static str, object: &str, source: object_store::Error) -> StoreError {
    StoreError::Backend {
        op,
        object: format!("{}/{object}", store.url().trim_end_matches('/')),
        source,
    }
}

fn path(store: &Store, rel: &str) -> Path {
    store.rel_path(rel)
}

/// Writes a record; one already there for the same point is left as it is.
pub async fn put(store: &Store, branch: &Branch) -> Result<(), StoreError> {
    let rel = branch.rel();
    let body = serde_json::to_vec_pretty(branch).unwrap_or_default();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .backend()
        .put_opts(&path(store, &rel), PutPayload::from(Bytes::from(body)), opts)
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(err(store, "put", &rel, e)),
    }
}

/// Every record, oldest generation and offset first. A record that does not parse is an
/// error naming it.
pub async fn list(store: &Store) -> Result<Vec<Branch>, StoreError> {
    let dir = path(store, BRANCHES_DIR);
    let metas: Vec<_> = match store.backend().list(Some(&dir)).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(err(store, "list", BRANCHES_DIR, e)),
    };
    let mut out = Vec::new();
    for m in metas {
        let bytes = store
            .backend()
            .get(&m.location)
            .await
            .map_err(|e| err(store, "get", m.location.as_ref(), e))?
            .bytes()
            .await
            .map_err(|e| err(store, "get", m.location.as_ref(), e))?;
        let b: Branch = serde_json::from_slice(&bytes).map_err(|e| StoreError::Backend {
            op: "read",
            object: m.location.to_string(),
            source: object_store::Error::Generic {
                store: "branch",
                source: format!("not a branch record: {e}").into(),
            },
        })?;
        out.push(b);
    }
    out.sort_by_key(|b| (b.generation, b.at));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn records_round_trip_and_are_not_archive_objects() {
        let store = Store::with_backend(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://",
            &"a".parse().unwrap(),
        );
        assert!(list(&store).await.unwrap().is_empty());
        let b = Branch {
            generation: 1,
            at: 1000,
            archived_end: 1234,
            replid: "a".repeat(40),
            new_replid: "b".repeat(40),
            new_master: "127.0.0.1:6380".into(),
            found_ms: 1_700_000_000_000,
            continued_in: 2,
        };
        put(&store, &b).await.unwrap();
        put(&store, &b).await.unwrap();
        assert_eq!(list(&store).await.unwrap(), vec![b.clone()]);
        assert_eq!(b.lost_bytes(), 234);
        let listing = store.list().await.unwrap();
        assert!(listing.objects.is_empty() && listing.foreign.is_empty(), "{listing:?}");
    }
}
