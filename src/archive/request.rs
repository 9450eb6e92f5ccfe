//! A request for a snapshot now: `pitr snapshot` cannot take the archive's lease (the running
//! archiver holds it), so it leaves the object `<archive name>/snapshot-request` beside the
//! lease, and the archiver, which polls for it, takes the snapshot and deletes it. Like the
//! lease, its name is not an archive object name: listings skip it (`docs/format.md`,
//! "Snapshot request").

use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::store::{Store, StoreError};

/// The request object's name under the archive prefix.
pub const REQUEST_OBJECT: &str = "snapshot-request";

/// The longest a store call on the request may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The request's body (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// When it was made (the requester's clock): a snapshot taken at or after it answers it.
    pub requested_ms: u64,
    /// Where the requester runs, for people (the archiver's log).
    pub host: String,
    pub pid: u32,
    /// The master the requester named (`host:port`, never credentials), if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl SnapshotRequest {
    /// A request from this process, made at `requested_ms`.
    pub fn new(requested_ms: u64, source: Option<String>) -> SnapshotRequest {
        SnapshotRequest {
            requested_ms,
            host: crate::archive::lease::host_name(),
            pid: std::process::id(),
            source,
        }
    }

    /// Whether a snapshot taken at `time_ms` answers it.
    pub fn answered_by(&self, time_ms: u64) -> bool {
        time_ms >= self.requested_ms
    }
}

/// What was found where the request lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    None,
    Request(SnapshotRequest),
    /// An object that is not a request this version reads: why.
    Unreadable(String),
}

fn store_err(store: &Store, op: &'static str, source: object_store::Error) -> StoreError {
    StoreError::Backend {
        op,
        object: format!(
            "{}/{}",
            store.url().trim_end_matches('/'),
            store.request_path()
        ),
        source,
    }
}

async fn timed<T>(
    store: &Store,
    op: &'static str,
    f: impl std::future::Future<Output = object_store::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| store_err(store, op, e)),
        Err(_) => Err(store_err(
            store,
            op,
            object_store::Error::Generic {
                store: "request",
                source: format!("no answer within {} s", OP_TIMEOUT.as_secs()).into(),
            },
        )),
    }
}

/// Writes (or replaces) the request.
pub async fn put(store: &Store, request: &SnapshotRequest) -> Result<(), StoreError> {
    let body = serde_json::to_vec(request).unwrap_or_default();
    let path = store.request_path();
    timed(
        store,
        "put",
        store
            .backend()
            .put(&path, PutPayload::from(Bytes::from(body))),
    )
    .await
    .map(|_| ())
}

/// Reads the request, if there is one.
pub async fn get(store: &Store) -> Result<Found, StoreError> {
    let path = store.request_path();
    let read = async {
        let r = store.backend().get(&path).await?;
        r.bytes().await
    };
    match timed(store, "get", read).await {
        Ok(bytes) => Ok(match serde_json::from_slice::<SnapshotRequest>(&bytes) {
            Ok(r) => Found::Request(r),
            Err(e) => Found::Unreadable(e.to_string()),
        }),
        Err(e) if e.is_not_found() => Ok(Found::None),
        Err(e) => Err(e),
    }
}

/// Removes the request; one that is already gone is not an error.
pub async fn delete(store: &Store) -> Result<(), StoreError> {
    let path = store.request_path();
    match timed(store, "delete", store.backend().delete(&path)).await {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// Removes the request if it is still `answered` (and not one made since, by another
/// requester); the read and the delete are two calls, so a request written between them is
/// removed too, and its requester writes it again when it finds it gone unanswered.
pub async fn delete_if_same(store: &Store, answered: &SnapshotRequest) -> Result<(), StoreError> {
    match get(store).await? {
        Found::Request(r) if r != *answered => Ok(()),
        Found::None => Ok(()),
        _ => delete(store).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn memory() -> Store {
        Store::with_backend(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://",
            &"a".parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_request_round_trips_and_is_not_an_archive_object() {
        let store = memory();
        assert_eq!(get(&store).await.unwrap(), Found::None);
        let req = SnapshotRequest::new(1_700_000_000_000, Some("127.0.0.1:6379".into()));
        put(&store, &req).await.unwrap();
        assert_eq!(get(&store).await.unwrap(), Found::Request(req.clone()));
        let listing = store.list().await.unwrap();
        assert!(listing.objects.is_empty() && listing.foreign.is_empty());
        assert!(REQUEST_OBJECT
            .parse::<crate::archive::names::ObjectName>()
            .is_err());
        // A newer request is not removed with the one answered.
        let newer = SnapshotRequest::new(req.requested_ms + 1, None);
        put(&store, &newer).await.unwrap();
        delete_if_same(&store, &req).await.unwrap();
        assert_eq!(get(&store).await.unwrap(), Found::Request(newer.clone()));
        delete_if_same(&store, &newer).await.unwrap();
        assert_eq!(get(&store).await.unwrap(), Found::None);
        delete(&store).await.unwrap();
        assert!(req.answered_by(req.requested_ms));
        assert!(!req.answered_by(req.requested_ms - 1));
    }

    #[tokio::test]
    async fn a_garbled_request_is_unreadable_not_an_error() {
        let store = memory();
        store
            .backend()
            .put(&store.request_path(), PutPayload::from_static(b"{"))
            .await
            .unwrap();
        assert!(matches!(get(&store).await.unwrap(), Found::Unreadable(_)));
    }
}
