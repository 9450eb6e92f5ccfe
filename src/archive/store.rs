//! The store stage: where archived objects live. Wraps an `Arc<dyn ObjectStore>` (S3, GCS,
//! Azure, a local directory, or memory for unit tests) under the archive's `<name>/` prefix:
//! opening a store from a URL, listing and parsing object names, reading objects, and writing
//! them exactly once.
//!
//! Objects are immutable. The writer never puts twice to one name (names carry offsets that
//! only grow), and every put is create-only where the backend supports it; a create that finds
//! the object already there (a retried put whose first attempt had landed) is accepted only if
//! the stored bytes are the same. Snapshots are streamed with a multipart upload, which makes
//! no object visible until it is complete.
//!
//! A snapshot cannot be asked for twice without a new full sync of the master, so a failed part
//! is sent again rather than the snapshot abandoned. Each part keeps its bytes until the store
//! acknowledges it, and at most [`PARTS_IN_FLIGHT`] parts are in flight, so memory stays near
//! `PART_SIZE * (PARTS_IN_FLIGHT + 1)` with retries or without. Sending a part again needs its
//! own part index, which object_store's `MultipartUpload` does not give (each call takes the
//! next index, and a failed one makes completion fail): cloud stores and memory are written
//! through [`MultipartStore`] instead, with explicit indices; a part is retried with backoff
//! for a bounded patience, then the upload is aborted with the store's error. A local
//! directory has no `MultipartStore`: its parts go through object_store's upload to a staging
//! file `<object>#<n>` and are sent once, because a local write that failed (a full disk, a
//! permission) rarely succeeds a moment later. An aborted or failed upload leaves no object and
//! no staging file.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetResultPayload, MultipartId, MultipartUpload, ObjectStore, ObjectStoreExt, ObjectStoreScheme,
    PutMode, PutMultipartOptions, PutOptions, PutPayload,
};
use tokio::task::JoinSet;
use xxhash_rust::xxh3::Xxh3;

use crate::archive::format::{self, Kind, SnapshotHeader};
use crate::archive::frames::FrameEncoder;
use crate::archive::names::{ArchiveName, GenerationId, ObjectKind, ObjectName};

/// Ranged GETs a large object is read in (see [`Store::get_stream`]), and how many are in
/// flight at once (each held whole until it is consumed).
pub const RANGE_SIZE: u64 = 8 << 20;
pub const RANGES_IN_FLIGHT: usize = 4;

/// Part size of snapshot multipart uploads.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one snapshot in flight at once (each held in memory until acknowledged).
pub const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {reason}")]
    Config { url: String, reason: String },
    #[error("{op} {object}: {source}")]
    Backend {
        op: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {object} already exists with other contents: is another archiver writing to this archive?")]
    Conflict { object: String },
    #[error("object {object} is corrupt {source}")]
    Corrupt {
        object: String,
        #[source]
        source: format::FormatError,
    },
    /// The base snapshot of the generation being written is gone (the store was emptied).
    #[error("the snapshot of generation {generation} is gone from the store: the generation has no base; starting a new one")]
    BaseLost { generation: String },
    /// A part of a snapshot upload that the store kept failing: sent `attempts` times, the
    /// last failure is the source. The upload is abandoned.
    #[error("put part {part} of {object} ({attempts} attempts): {source}")]
    Part {
        object: String,
        /// Numbered from 1, as S3 numbers parts.
        part: usize,
        attempts: u32,
        #[source]
        source: object_store::Error,
    },
    /// A local store directory that does not exist: only `pitr archive` creates one.
    #[error("no archive at {path}: the directory does not exist")]
    NoArchive { path: String },
}

impl StoreError {
    /// Whether the object is simply missing.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            } | StoreError::NoArchive { .. }
        )
    }
}

/// One archived object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: ObjectName,
    /// Stored (compressed) size in bytes.
    pub size: u64,
}

/// A listing of one archive: the objects it recognises, sorted in offset order, and the names
/// under the prefix that are not archive objects.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub objects: Vec<Listed>,
    pub foreign: Vec<String>,
}

/// One level of the archive's tree, from [`Store::list_dir`].
#[derive(Clone, Debug, Default)]
pub struct Dir {
    /// Sub-prefixes (their last component), sorted.
    pub prefixes: Vec<String>,
    /// Archive objects right under the prefix, in offset order.
    pub objects: Vec<Listed>,
    /// Other names right under the prefix.
    pub foreign: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The same objects through explicit part indices, for snapshot uploads whose failed parts
    /// can be sent again: cloud stores and memory (a local directory has none).
    parts: Option<PartStore>,
    prefix: Path,
    url: String,
    /// The directory of a local store (file paths and `file://`).
    local_dir: Option<std::path::PathBuf>,
    /// Where what is done with this store is counted (by default the process's set).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Store {
    /// Opens a store from `--store`: a path or `file:///…`, `memory://`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`. Cloud credentials and endpoints come from
    /// the standard environment variables of each provider (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    ///
    /// A local directory is never created here: readers of a path that does not exist get
    /// [`StoreError::NoArchive`] from [`list`](Store::list), and the archiver creates it with
    /// [`create_root`](Store::create_root).
    pub fn open(url: &str, name: &ArchiveName) -> Result<Store, StoreError> {
        let backend = open_backend(url)?;
        let mut store = Store::with_backend(backend.objects, url, name);
        store.parts = backend.parts;
        store.local_dir = backend.local_dir;
        Ok(store)
    }

    /// A store over an existing backend (tests compose `object_store` wrappers this way).
    /// Snapshot uploads go through its `put_multipart_opts`, as to a local directory: a failed
    /// part is not sent again.
    pub fn with_backend(inner: Arc<dyn ObjectStore>, url: &str, name: &ArchiveName) -> Store {
        Store {
            inner,
            parts: None,
            prefix: Path::from(name.as_str()),
            url: url.to_string(),
            local_dir: None,
            metrics: crate::metrics::global_handle(),
        }
    }

    /// The same store, counted in `metrics` (a cluster shard's set) rather than where it was.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Store {
        self.metrics = metrics;
        self
    }

    /// Where what is done with this store is counted: its archive's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// A handle on [`metrics`](Store::metrics), for tasks that outlive a borrow of the store.
    pub fn metrics_handle(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// A store over an existing backend and its multipart interface, both addressing the same
    /// objects (one `AmazonS3`, or a wrapper implementing both traits): snapshot uploads send
    /// a failed part again, as on a cloud store.
    pub fn with_multipart_backend(
        inner: Arc<dyn ObjectStore>,
        parts: Arc<dyn MultipartStore>,
        url: &str,
        name: &ArchiveName,
    ) -> Store {
        let mut store = Store::with_backend(inner, url, name);
        store.parts = Some(PartStore {
            store: parts,
            root: Path::default(),
        });
        store
    }

    /// Creates the directory of a local store (what only the archiver does); nothing to do
    /// for other stores.
    pub async fn create_root(&self) -> Result<(), StoreError> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(());
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StoreError::Config {
                url: self.url.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })
    }

    /// The error for a local store whose directory is gone (or never existed).
    async fn check_root(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        match tokio::fs::metadata(dir).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NoArchive {
                path: dir.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether an object exists (one HEAD request).
    pub async fn exists(&self, name: &ObjectName) -> Result<bool, StoreError> {
        match self.inner.head(&self.path(name)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend_err("head", &name.to_string(), e)),
        }
    }

    /// The snapshots of one generation, from a listing of that generation alone.
    pub async fn generation_snapshots(
        &self,
        generation: GenerationId,
    ) -> Result<Vec<ObjectName>, StoreError> {
        if let Err(e) = self.check_root().await {
            return match e {
                StoreError::NoArchive { .. } => Ok(Vec::new()),
                e => Err(e),
            };
        }
        // Version 2 keeps a generation's snapshots apart; version 1 beside its segments.
        let mut found = self
            .snapshots_under(
                &format!("{}/{generation}/snapshots", self.prefix),
                generation,
            )
            .await?;
        if found.is_empty() {
            found = self
                .snapshots_under(&format!("{}/{generation}", self.prefix), generation)
                .await?;
        }
        found.sort_by_key(|n| (n.sort_key(), n.first_ms));
        Ok(found)
    }

    /// The snapshots of `generation` listed under `prefix`.
    async fn snapshots_under(
        &self,
        prefix: &str,
        generation: GenerationId,
    ) -> Result<Vec<ObjectName>, StoreError> {
        let prefix = Path::from(prefix);
        let strip = format!("{}/", self.prefix);
        let mut found = Vec::new();
        let mut list = self.inner.list(Some(&prefix));
        while let Some(m) = list.next().await {
            let m = match m {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.backend_err("list", prefix.as_ref(), e)),
            };
            let loc = m.location.as_ref();
            if let Ok(name) = loc
                .strip_prefix(&strip)
                .unwrap_or(loc)
                .parse::<ObjectName>()
            {
                if name.kind == ObjectKind::Snapshot && name.generation == generation {
                    found.push(name);
                }
            }
        }
        Ok(found)
    }

    /// Removes what killed snapshot uploads left in a local store: staging files named
    /// `<object>#<n>`, which no listing shows and nothing else removes. Returns how many files
    /// and bytes went. Only the archiver calls this, when it starts (an archive has one
    /// archiver).
    pub async fn remove_staging_files(&self) -> Result<(u64, u64), StoreError> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok((0, 0));
        };
        let root = dir.join(self.prefix.as_ref());
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || remove_staging_under(&root, &root, None))
            .await
            .map_err(|e| StoreError::Config {
                url: url.clone(),
                reason: format!("removing staging files: {e}"),
            })?
            .map_err(|e| StoreError::Config {
                url,
                reason: format!("removing staging files: {e}"),
            })
    }

    /// Removes the staging files of one object of a local store (an aborted upload).
    async fn remove_staging_of(&self, name: &ObjectName) {
        let Some(dir) = self.local_dir.clone() else {
            return;
        };
        let root = dir.join(self.prefix.as_ref());
        let object_dir = match root.join(name.to_string()).parent() {
            Some(d) => d.to_path_buf(),
            None => return,
        };
        let name = *name;
        let r = tokio::task::spawn_blocking(move || {
            remove_staging_under(&root, &object_dir, Some(name))
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(object = %name, error = %e, "removing the staging file of an aborted snapshot upload failed");
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub fn path(&self, name: &ObjectName) -> Path {
        Path::from(format!("{}/{}", self.prefix, name))
    }

    /// The archive's lease object (`archive::lease`).
    /// A path under the archive prefix (`rel` relative to it).
    pub fn rel_path(&self, rel: &str) -> Path {
        Path::from(format!("{}/{rel}", self.prefix))
    }

    pub fn lease_path(&self) -> Path {
        Path::from(format!(
            "{}/{}",
            self.prefix,
            crate::archive::lease::LEASE_OBJECT
        ))
    }

    /// The request for a snapshot now (`archive::request`).
    pub fn request_path(&self) -> Path {
        Path::from(format!(
            "{}/{}",
            self.prefix,
            crate::archive::request::REQUEST_OBJECT
        ))
    }

    fn backend_err(
        &self,
        op: &'static str,
        object: &str,
        source: object_store::Error,
    ) -> StoreError {
        self.metrics.store_error(&source);
        StoreError::Backend {
            op,
            object: format!("{}/{}", self.url.trim_end_matches('/'), object),
            source,
        }
    }

    /// Lists the archive. Never relies on the backend's order: sorts by offset.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        self.check_root().await?;
        let metas: Vec<_> = self
            .inner
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend_err("list", self.prefix.as_ref(), e))?;
        let (objects, foreign) = self.sort_out(metas);
        Ok(Listing { objects, foreign })
    }

    /// Listed objects in offset order, and the other names (sorted), leaving out the lease
    /// and a snapshot request: part of the archive, though not archived objects.
    fn sort_out(&self, metas: Vec<object_store::ObjectMeta>) -> (Vec<Listed>, Vec<String>) {
        let (mut objects, mut foreign) = (Vec::new(), Vec::new());
        let strip = format!("{}/", self.prefix);
        for m in metas {
            let loc = m.location.as_ref();
            let rel = loc.strip_prefix(&strip).unwrap_or(loc);
            if rel == crate::archive::lease::LEASE_OBJECT
                || rel == crate::archive::request::REQUEST_OBJECT
                || rel == crate::archive::stopped::STOPPED_OBJECT
                || rel
                    .strip_prefix(crate::archive::branch::BRANCHES_DIR)
                    .is_some_and(|r| r.starts_with('/'))
            {
                continue;
            }
            match rel.parse::<ObjectName>() {
                Ok(name) => objects.push(Listed { name, size: m.size }),
                Err(_) => foreign.push(loc.to_string()),
            }
        }
        objects.sort_by_key(|o: &Listed| o.name.sort_key());
        foreign.sort();
        (objects, foreign)
    }

    /// Lists one level of the archive's tree (a LIST with delimiter): under `rel` (relative to
    /// the archive, `""` for its root), the names of the sub-prefixes (last component only,
    /// sorted) and the objects right there. Objects whose names do not parse are foreign.
    pub async fn list_dir(&self, rel: &str) -> Result<Dir, StoreError> {
        self.check_root().await?;
        let prefix = if rel.is_empty() {
            self.prefix.clone()
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        };
        let result = match self.inner.list_with_delimiter(Some(&prefix)).await {
            Ok(r) => r,
            // A local directory that is not there lists nothing.
            Err(object_store::Error::NotFound { .. }) => return Ok(Dir::default()),
            Err(e) => return Err(self.backend_err("list", prefix.as_ref(), e)),
        };
        let mut dir = Dir::default();
        for p in result.common_prefixes {
            if let Some(last) = p.filename() {
                dir.prefixes.push(last.to_string());
            }
        }
        (dir.objects, dir.foreign) = self.sort_out(result.objects);
        dir.prefixes.sort();
        Ok(dir)
    }

    /// Reads a whole object.
    pub async fn get(&self, name: &ObjectName) -> Result<Bytes, StoreError> {
        let object = name.to_string();
        let path = self.path(name);
        let r = self
            .inner
            .get(&path)
            .await
            .map_err(|e| self.backend_err("get", &object, e))?;
        r.bytes()
            .await
            .map_err(|e| self.backend_err("get", &object, e))
    }

    /// Reads a byte range of an object.
    pub async fn get_range(
        &self,
        name: &ObjectName,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.inner
            .get_range(&self.path(name), range)
            .await
            .map_err(|e| self.backend_err("get", &name.to_string(), e))
    }

    /// Opens a streaming read of an object: its size and a stream of byte chunks, in order.
    ///
    /// From an object store, an object larger than [`RANGE_SIZE`] is read as ranged GETs of
    /// that size, [`RANGES_IN_FLIGHT`] at a time (after a HEAD for its size): one stream from
    /// a store runs at one connection's throughput, which for a snapshot is well below what
    /// the restore consumes. A local file is read in large pieces.
    pub async fn get_stream(
        &self,
        name: &ObjectName,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
        ),
        StoreError,
    > {
        if self.local_dir.is_none() {
            let path = self.path(name);
            let size = self
                .inner
                .head(&path)
                .await
                .map_err(|e| self.backend_err("head", &name.to_string(), e))?
                .size;
            if size > RANGE_SIZE {
                let inner = self.inner.clone();
                let ranges = (0..size)
                    .step_by(RANGE_SIZE as usize)
                    .map(move |start| start..(start + RANGE_SIZE).min(size));
                let pieces = futures::stream::iter(ranges)
                    .map(move |range| {
                        let (inner, path) = (inner.clone(), path.clone());
                        async move { inner.get_range(&path, range).await }
                    })
                    .buffered(RANGES_IN_FLIGHT);
                return Ok((size, pieces.boxed()));
            }
        }
        let r = self
            .inner
            .get(&self.path(name))
            .await
            .map_err(|e| self.backend_err("get", &name.to_string(), e))?;
        let size = r.meta.size;
        match r.payload {
            // A local file: read in large pieces. `into_stream` reads 8 KiB per blocking task,
            // thousands of thread hand-overs for one snapshot.
            GetResultPayload::File(file, path) => Ok((size, file_stream(file, path, r.range))),
            GetResultPayload::Stream(s) => Ok((size, s)),
        }
    }

    /// Writes a new object, once. A create that finds the same bytes already there (the first
    /// attempt of a retried put had landed) succeeds; other bytes are a conflict.
    pub async fn put_new(&self, name: &ObjectName, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(name);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&path, PutPayload::from(data.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(name).await?;
                if existing == data {
                    Ok(())
                } else {
                    Err(StoreError::Conflict {
                        object: name.to_string(),
                    })
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => self
                .inner
                .put(&path, PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(|e| self.backend_err("put", &name.to_string(), e)),
            Err(e) => Err(self.backend_err("put", &name.to_string(), e)),
        }
    }

    /// Writes a new object given in pieces (a compacted segment's head, frames and trailer),
    /// without joining them. Create-once as [`put_new`](Store::put_new), except that an
    /// object already there is a conflict: the caller decides whether it is the same (it is
    /// read back anyway).
    pub async fn put_new_parts(
        &self,
        name: &ObjectName,
        parts: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), StoreError> {
        let path = self.path(name);
        let payload: PutPayload = parts.into_iter().collect();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.inner.put_opts(&path, payload.clone(), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::Conflict {
                object: name.to_string(),
            }),
            Err(object_store::Error::NotImplemented { .. }) => self
                .inner
                .put(&path, payload)
                .await
                .map(|_| ())
                .map_err(|e| self.backend_err("put", &name.to_string(), e)),
            Err(e) => Err(self.backend_err("put", &name.to_string(), e)),
        }
    }

    /// Deletes an object (compaction, once what replaces it is checked). An object already
    /// gone counts as deleted.
    pub async fn delete(&self, name: &ObjectName) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend_err("delete", &name.to_string(), e)),
        }
    }

    /// Starts a multipart upload of `name`, after checking that no object of that name
    /// exists ([`StoreError::Conflict`]): through the store's own multipart API when it has
    /// one, else object_store's. Its parts are sent again for up to `part_patience`.
    async fn start_parts(
        &self,
        name: &ObjectName,
        part_patience: Duration,
    ) -> Result<Parts, StoreError> {
        let path = self.path(name);
        let object = name.to_string();
        match self.inner.head(&path).await {
            Ok(_) => return Err(StoreError::Conflict { object }),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.backend_err("head", &object, e)),
        }
        let target = match &self.parts {
            Some(parts) => {
                let path = parts.full_path(&path);
                let id = parts
                    .store
                    .create_multipart(&path)
                    .await
                    .map_err(|e| self.backend_err("put", &object, e))?;
                Target::Indexed {
                    store: parts.store.clone(),
                    path,
                    id,
                }
            }
            None => Target::Upload(
                self.inner
                    .put_multipart_opts(&path, PutMultipartOptions::default())
                    .await
                    .map_err(|e| self.backend_err("put", &object, e))?,
            ),
        };
        Ok(Parts {
            object: format!("{}/{}", self.url.trim_end_matches('/'), object),
            target,
            patience: part_patience,
            metrics: self.metrics.clone(),
            running: JoinSet::new(),
            sent: Vec::new(),
        })
    }

    /// Starts a snapshot upload. Fails if an object of that name already exists.
    ///
    /// On a store with explicit part indices (S3, GCS, Azure, memory), a part the store fails
    /// is sent again with backoff until `part_patience` has passed since its first failure; a
    /// local directory sends each part once (see the module documentation).
    pub async fn snapshot_upload(
        &self,
        name: &ObjectName,
        header: &SnapshotHeader,
        part_patience: Duration,
    ) -> Result<SnapshotUpload, StoreError> {
        // Before the upload starts, so that a failure here leaves no upload behind.
        let encoder = FrameEncoder::new(format::ZSTD_LEVEL).map_err(|e| StoreError::Config {
            url: self.url.clone(),
            reason: format!("zstd: {e}"),
        })?;
        let parts = self.start_parts(name, part_patience).await?;
        let pre = format::preamble(Kind::Snapshot, header.version(), &header.encode());
        let mut object_hash = Xxh3::new();
        object_hash.update(&pre);
        let mut out = Vec::with_capacity(OUT_CAPACITY);
        out.extend_from_slice(&pre);
        Ok(SnapshotUpload {
            store: self.clone(),
            name: *name,
            parts,
            encoder,
            out,
            raw_hash: Xxh3::new(),
            object_hash,
            raw_len: 0,
            stored: pre.len() as u64,
        })
    }
}

impl Store {
    /// Starts an upload of an object's bytes exactly as they are given: a copy of an object
    /// read from another store (`pitr ship`), streamed in parts as a snapshot is, and visible
    /// only once [`finish`](RawUpload::finish) completes it. Fails with
    /// [`StoreError::Conflict`] if an object of that name already exists.
    pub async fn raw_upload(
        &self,
        name: &ObjectName,
        part_patience: Duration,
    ) -> Result<RawUpload, StoreError> {
        Ok(RawUpload {
            store: self.clone(),
            name: *name,
            parts: self.start_parts(name, part_patience).await?,
            out: Vec::with_capacity(OUT_CAPACITY),
            written: 0,
        })
    }
}

/// An object's bytes being copied into the store as they are ([`Store::raw_upload`]).
pub struct RawUpload {
    store: Store,
    name: ObjectName,
    parts: Parts,
    out: Vec<u8>,
    written: u64,
}

impl RawUpload {
    /// Queues `data`; waits while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.out.extend_from_slice(data);
        self.written += data.len() as u64;
        while self.out.len() >= PART_SIZE {
            self.parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            let rest = self.out.split_off(PART_SIZE);
            let part = std::mem::replace(&mut self.out, rest);
            self.parts.send(Bytes::from(part));
        }
        Ok(())
    }

    /// Sends the last part and completes the upload: the object appears, whole. Returns the
    /// bytes written. On an error the upload is aborted.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        let r = async {
            if !self.out.is_empty() || self.parts.sent.is_empty() {
                self.parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                let part = std::mem::take(&mut self.out);
                self.parts.send(Bytes::from(part));
            }
            self.parts.complete().await
        }
        .await;
        match r {
            Ok(()) => Ok(self.written),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Abandons the upload: nothing becomes visible.
    pub async fn abort(mut self) {
        self.parts.abort().await;
        self.store.remove_staging_of(&self.name).await;
    }
}

/// Capacity of the buffer of compressed bytes not yet cut into a part: a part and the output
/// of one more piece, mostly.
const OUT_CAPACITY: usize = PART_SIZE + (1 << 20);

/// A snapshot being streamed into the store: raw RDB bytes in, compressed parts out. Nothing is
/// visible to a reader until [`finish`](SnapshotUpload::finish) completes the upload.
pub struct SnapshotUpload {
    store: Store,
    name: ObjectName,
    parts: Parts,
    /// Frames of [`crate::archive::frames::FRAME_RAW`] raw bytes, so that readers can decompress
    /// several at once.
    encoder: FrameEncoder,
    /// Compressed bytes not yet cut into a part (already fed to `object_hash`).
    out: Vec<u8>,
    raw_hash: Xxh3,
    object_hash: Xxh3,
    raw_len: u64,
    stored: u64,
}

/// What a finished snapshot upload wrote.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotDone {
    pub raw_len: u64,
    pub stored: u64,
    pub checksum: u64,
}

impl SnapshotUpload {
    /// Compresses and queues `data`; waits while too many parts are in flight (backpressure).
    /// A write cut short (its future dropped) leaves the upload fit only for
    /// [`abort`](SnapshotUpload::abort).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.raw_hash.update(data);
        self.raw_len += data.len() as u64;
        let before = self.out.len();
        let (encoder, out) = (&mut self.encoder, &mut self.out);
        tokio::task::block_in_place(|| encoder.write(data, out)).map_err(|e| {
            StoreError::Config {
                url: self.store.url.clone(),
                reason: format!("zstd: {e}"),
            }
        })?;
        self.compressed(before);
        while self.out.len() >= PART_SIZE {
            self.parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            let part = self.cut(PART_SIZE);
            self.parts.send(part);
        }
        Ok(())
    }

    /// Counts and hashes the compressed bytes appended to `out` after `before`.
    fn compressed(&mut self, before: usize) {
        let new = &self.out[before..];
        self.object_hash.update(new);
        self.stored += new.len() as u64;
    }

    /// The first `n` bytes of `out`, as a part (without a copy; the rest moves to a new
    /// buffer).
    fn cut(&mut self, n: usize) -> Bytes {
        let mut rest = Vec::with_capacity(OUT_CAPACITY.max(self.out.len() - n));
        rest.extend_from_slice(&self.out[n..]);
        self.out.truncate(n);
        Bytes::from(std::mem::replace(&mut self.out, rest))
    }

    /// Raw bytes written so far.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Completes the upload: the snapshot becomes visible, whole. On an error the upload is
    /// aborted: nothing becomes visible, and a local store keeps no staging file.
    pub async fn finish(mut self) -> Result<SnapshotDone, StoreError> {
        match self.complete().await {
            Ok(checksum) => Ok(SnapshotDone {
                raw_len: self.raw_len,
                stored: self.stored,
                checksum,
            }),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Ends the body, appends the trailer, sends the last parts and completes the upload.
    /// Returns the object's checksum.
    async fn complete(&mut self) -> Result<u64, StoreError> {
        let before = self.out.len();
        let (encoder, out) = (&mut self.encoder, &mut self.out);
        encoder.finish(out).map_err(|e| StoreError::Config {
            url: self.store.url.clone(),
            reason: format!("zstd: {e}"),
        })?;
        self.compressed(before);
        let (t, checksum) =
            format::trailer(self.raw_len, self.raw_hash.digest(), &mut self.object_hash);
        self.out.extend_from_slice(&t);
        self.stored += t.len() as u64;
        // Every part but the last is PART_SIZE bytes (some stores require equal parts); the
        // last holds at least the trailer.
        while !self.out.is_empty() {
            self.parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            let part = self.cut(self.out.len().min(PART_SIZE));
            self.parts.send(part);
        }
        self.parts.complete().await?;
        Ok(checksum)
    }

    /// Abandons the upload; nothing becomes visible, and a local store keeps no staging file.
    pub async fn abort(mut self) {
        self.parts.abort().await;
        self.store.remove_staging_of(&self.name).await;
    }
}

/// Where the parts of a snapshot go.
enum Target {
    /// A store with explicit part indices: a part can be sent again under its own index.
    Indexed {
        store: Arc<dyn MultipartStore>,
        path: Path,
        id: MultipartId,
    },
    /// object_store's own upload (a local directory's staging file): each part is sent once,
    /// each call taking the next index.
    Upload(Box<dyn MultipartUpload>),
}

/// The parts of one snapshot upload: those in flight, each holding its bytes until the store
/// acknowledges it, and the ids of those acknowledged.
struct Parts {
    /// The object, as errors and logs name it (the store's URL and the object name).
    object: String,
    target: Target,
    /// How long a part may keep failing before the upload gives up (an indexed target only).
    patience: Duration,
    /// Where a failed part is counted.
    metrics: Arc<crate::metrics::Metrics>,
    running: JoinSet<Result<(usize, Option<PartId>), StoreError>>,
    /// One entry per part sent: its id once acknowledged (an indexed target only).
    sent: Vec<Option<PartId>>,
}

impl Parts {
    /// Sends part number `sent.len()` in the background.
    fn send(&mut self, data: Bytes) {
        let idx = self.sent.len();
        self.sent.push(None);
        match &mut self.target {
            Target::Indexed { store, path, id } => {
                let retry = PartRetry {
                    store: store.clone(),
                    path: path.clone(),
                    id: id.clone(),
                    object: self.object.clone(),
                    patience: self.patience,
                    metrics: self.metrics.clone(),
                };
                self.running.spawn(retry.put(idx, data));
            }
            Target::Upload(upload) => {
                let part = upload.put_part(PutPayload::from(data));
                let object = self.object.clone();
                self.running.spawn(async move {
                    part.await
                        .map(|()| (idx, None))
                        .map_err(|source| StoreError::Backend {
                            op: "put",
                            object,
                            source,
                        })
                });
            }
        }
    }

    /// Waits until fewer than `max` parts are in flight. Cancel-safe: a part whose result was
    /// taken is recorded before the wait can be cut short again.
    async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while !self.running.is_empty() && self.running.len() >= max {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Takes the result of one part in flight.
    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.running.join_next().await {
            None => Ok(()),
            Some(Ok(Ok((idx, part)))) => {
                if let Some(slot) = self.sent.get_mut(idx) {
                    *slot = part;
                }
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(StoreError::Backend {
                op: "put",
                object: self.object.clone(),
                source: object_store::Error::JoinError { source: e },
            }),
        }
    }

    /// Waits for every part, then completes the upload: the object appears, whole.
    async fn complete(&mut self) -> Result<(), StoreError> {
        while !self.running.is_empty() {
            self.join_one().await?;
        }
        let backend = |source| StoreError::Backend {
            op: "complete",
            object: self.object.clone(),
            source,
        };
        match &mut self.target {
            Target::Indexed { store, path, id } => {
                let parts: Option<Vec<PartId>> = self.sent.iter().cloned().collect();
                let Some(parts) = parts else {
                    return Err(backend(object_store::Error::Generic {
                        store: "snapshot upload",
                        source: "a part was never acknowledged".into(),
                    }));
                };
                store
                    .complete_multipart(path, id, parts)
                    .await
                    .map(|_| ())
                    .map_err(backend)
            }
            Target::Upload(upload) => upload.complete().await.map(|_| ()).map_err(backend),
        }
    }

    /// Stops the parts in flight and aborts the upload.
    async fn abort(&mut self) {
        self.running.shutdown().await;
        let r = match &mut self.target {
            Target::Indexed { store, path, id } => store.abort_multipart(path, id).await,
            Target::Upload(upload) => upload.abort().await,
        };
        if let Err(e) = r {
            tracing::warn!(object = %self.object, error = %e, "aborting a snapshot upload failed; the backend may keep its parts until its own cleanup");
        }
    }
}

/// Sends one part of an indexed upload, again after a failure.
struct PartRetry {
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    object: String,
    patience: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The longest wait between two attempts at one part.
const MAX_PART_RETRY_DELAY: Duration = Duration::from_secs(5);

impl PartRetry {
    /// Sends part `idx` until the store acknowledges it. A failure is tried again with backoff
    /// (each attempt a cheap clone of `data`) until `patience` has passed since the first
    /// failure; a failure that waiting cannot fix (the upload or the credentials are gone) is
    /// returned at once. Sending a part again under its index replaces what an earlier attempt
    /// may have stored.
    async fn put(self, idx: usize, data: Bytes) -> Result<(usize, Option<PartId>), StoreError> {
        // As the archiver's retries of the master and the store: 100 ms doubling to 5 s, with
        // jitter so that the parts in flight do not retry in step.
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(MAX_PART_RETRY_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut failing_since = None;
        let mut attempts = 0u32;
        // Numbered from 1 in messages, as S3 numbers parts.
        let part = idx + 1;
        loop {
            attempts += 1;
            let payload = PutPayload::from(data.clone());
            let e = match self
                .store
                .put_part(&self.path, &self.id, idx, payload)
                .await
            {
                Ok(id) => {
                    if attempts > 1 {
                        tracing::info!(object = %self.object, part, attempts, "snapshot part stored after retries");
                    }
                    return Ok((idx, Some(id)));
                }
                Err(e) => e,
            };
            self.metrics.store_error(&e);
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            let delay = backoff.next().unwrap_or(MAX_PART_RETRY_DELAY);
            if !is_transient(&e) || since.elapsed() + delay > self.patience {
                return Err(StoreError::Part {
                    object: self.object,
                    part,
                    attempts,
                    source: e,
                });
            }
            tracing::warn!(
                object = %self.object, part, attempt = attempts,
                retry_in_ms = delay.as_millis() as u64, error = %e,
                "store error uploading a part of the snapshot; sending that part again"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether a failed request may succeed when sent again: not when the upload is gone or the
/// store refuses the credentials.
fn is_transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

/// Retries inside one request are short: the archiver's own loop retries forever and logs
/// each failure, so an outage is visible in the logs within seconds.
fn request_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
    }
}

/// The multipart interface of a store, addressing the objects that [`Store`]'s `inner` does:
/// `root` is the prefix of the store URL, which `inner` adds itself (a [`PrefixStore`]; there
/// is no such wrapper for a [`MultipartStore`]).
#[derive(Clone)]
struct PartStore {
    store: Arc<dyn MultipartStore>,
    root: Path,
}

impl PartStore {
    fn full_path(&self, path: &Path) -> Path {
        self.root.parts().chain(path.parts()).collect()
    }
}

impl std::fmt::Debug for PartStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// What [`open_backend`] opens.
struct Backend {
    objects: Arc<dyn ObjectStore>,
    /// Cloud stores and memory.
    parts: Option<PartStore>,
    /// A local store's directory.
    local_dir: Option<std::path::PathBuf>,
}

/// One client of a cloud store (or memory), as both interfaces.
fn both<S: ObjectStore + MultipartStore>(s: S) -> (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) {
    let s = Arc::new(s);
    (s.clone(), s)
}

/// The backend for `url`, and the directory when it is a local store.
///
/// A plain path is a local directory. A URL goes through object_store's own parsing
/// ([`ObjectStoreScheme`], and each builder's `with_url`): bucket or container, account and
/// prefix come from it, and the environment variables of the provider (`AWS_*`, `GOOGLE_*`,
/// `AZURE_*`, read as `from_env` reads them) are passed as options, as `parse_url_opts` does.
/// The builders are called here rather than through `parse_url_opts` only because it cannot
/// set the request retries ([`request_retries`]).
fn open_backend(url: &str) -> Result<Backend, StoreError> {
    let shown = redact_store_url(url);
    let cfg = |reason: String| StoreError::Config {
        url: shown.clone(),
        reason,
    };
    let local = |dir: &str| {
        open_local(dir, &cfg).map(|(objects, dir)| Backend {
            objects,
            parts: None,
            local_dir: Some(dir),
        })
    };
    if !url.contains("://") && url != "memory:" {
        return local(url);
    }
    let parsed = url::Url::parse(url).map_err(|e| cfg(format!("not a valid URL: {e}")))?;
    let (scheme, prefix) = match ObjectStoreScheme::parse(&parsed) {
        Ok(p) => p,
        Err(_) => {
            return Err(match parsed.scheme() {
                "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss"
                    if parsed.host_str().is_none_or(str::is_empty) =>
                {
                    cfg("no bucket or container in the URL".into())
                }
                other => cfg(format!(
                "unknown scheme {other:?} (use a path, file://, s3://, gs://, az:// or memory://)"
            )),
            })
        }
    };
    let built = |r: object_store::Result<(Arc<dyn ObjectStore>, Arc<dyn MultipartStore>)>| {
        r.map_err(|e| cfg(e.to_string()))
    };
    let (store, parts) = match scheme {
        ObjectStoreScheme::Memory => {
            let (objects, parts) = both(InMemory::new());
            return Ok(Backend {
                objects,
                parts: Some(PartStore {
                    store: parts,
                    root: Path::default(),
                }),
                local_dir: None,
            });
        }
        ObjectStoreScheme::Local => {
            let path = parsed
                .to_file_path()
                .map_err(|()| cfg("not a local path (use file:///absolute/path)".into()))?;
            return local(&path.to_string_lossy());
        }
        ObjectStoreScheme::AmazonS3 => built(
            with_options(object_store::aws::AmazonS3Builder::new().with_url(url), env_options("AWS_", &[]), |b, k, v| {
                b.with_config(k, v)
            })
                .with_retry(request_retries())
                .build()
                .map(both),
        )?,
        ObjectStoreScheme::GoogleCloudStorage => built(
            with_options(object_store::gcp::GoogleCloudStorageBuilder::new().with_url(url), env_options("GOOGLE_", &[("SERVICE_ACCOUNT", "google_service_account")]), |b, k, v| {
                b.with_config(k, v)
            })
                .with_retry(request_retries())
                .build()
                .map(both),
        )?,
        ObjectStoreScheme::MicrosoftAzure => built(
            with_options(object_store::azure::MicrosoftAzureBuilder::new().with_url(url), env_options("AZURE_", &[("IDENTITY_ENDPOINT", "azure_msi_endpoint")]), |b, k, v| {
                b.with_config(k, v)
            })
                .with_retry(request_retries())
                .build()
                .map(both),
        )?,
        other => {
            return Err(cfg(format!(
                "{other:?} stores are not supported (use a path, file://, s3://, gs://, az:// or memory://)"
            )))
        }
    };
    let objects: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix.clone()))
    };
    Ok(Backend {
        objects,
        parts: Some(PartStore {
            store: parts,
            root: prefix,
        }),
        local_dir: None,
    })
}

/// The options a provider's builder reads from the environment in its `from_env`: every
/// variable starting with `prefix`, by its lower-case name, and the few it reads under other
/// names (`extra`: variable, option).
/// `builder` with every option whose name parses as one of its configuration keys (`K`); the
/// others are left to the builders of other providers.
fn with_options<B, K: std::str::FromStr>(
    builder: B,
    options: impl Iterator<Item = (String, String)>,
    set: impl Fn(B, K, String) -> B,
) -> B {
    options.fold(builder, |b, (k, v)| match k.parse() {
        Ok(k) => set(b, k, v),
        Err(_) => b,
    })
}

fn env_options(
    prefix: &'static str,
    extra: &'static [(&'static str, &'static str)],
) -> impl Iterator<Item = (String, String)> {
    let own = std::env::vars_os().filter_map(move |(k, v)| {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
        k.starts_with(prefix).then(|| (k.to_ascii_lowercase(), v))
    });
    let other = extra
        .iter()
        .filter_map(|(var, key)| Some((key.to_string(), std::env::var(var).ok()?)));
    own.chain(other)
}

/// A local directory store at `dir` (a path, relative or absolute).
fn open_local(
    dir: &str,
    cfg: &dyn Fn(String) -> StoreError,
) -> Result<(Arc<dyn ObjectStore>, std::path::PathBuf), StoreError> {
    if dir.is_empty() {
        return Err(cfg("empty path".into()));
    }
    let path = std::path::absolute(dir).map_err(|e| cfg(format!("{dir}: {e}")))?;
    let fs: Arc<dyn ObjectStore> = if path.is_dir() {
        Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| cfg(e.to_string()))?
                .with_automatic_cleanup(true)
                .with_fsync(true),
        )
    } else if path.exists() {
        return Err(cfg(format!("{} is not a directory", path.display())));
    } else {
        // Not created here (readers must not create it): rooted at `/` under the
        // directory's path, so that the archiver's first write creates it. No cleanup
        // of empty directories, which could climb above the store.
        let prefix =
            Path::from_absolute_path(&path).map_err(|e| cfg(format!("{}: {e}", path.display())))?;
        Arc::new(PrefixStore::new(
            object_store::local::LocalFileSystem::new().with_fsync(true),
            prefix,
        ))
    };
    Ok((fs, path))
}

/// A store URL for messages: without a password or query string (where a provider's URL may
/// carry a key or a signature). A user name stays: an Azure `abfs://` URL names its container
/// there.
pub fn redact_store_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if url.contains("://") => {
            let hidden = u.password().is_some() || u.query().is_some();
            let _ = u.set_password(None);
            u.set_query(None);
            if hidden {
                format!("{u} (credentials hidden)")
            } else {
                url.to_string()
            }
        }
        _ => match url.split_once('@') {
            Some((scheme_user, rest)) => match scheme_user.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://…@{rest}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
    }
}

/// Removes staging files (`<object name>#<digits>`) under `dir`, an archive's directory or one
/// of its generations', recursively; only those of `only` when given. Files and bytes removed.
fn remove_staging_under(
    root: &std::path::Path,
    dir: &std::path::Path,
    only: Option<ObjectName>,
) -> std::io::Result<(u64, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if only.is_none() {
                let (f, b) = remove_staging_under(root, &entry.path(), None)?;
                files += f;
                bytes += b;
            }
            continue;
        }
        let file_name = entry.file_name();
        let Some((base, n)) = file_name.to_str().and_then(|f| f.split_once('#')) else {
            continue;
        };
        if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        // Only staging files of this archive's own objects (named by their path below the
        // archive's directory).
        let Some(rel) = dir.strip_prefix(root).ok().and_then(|d| d.to_str()) else {
            continue;
        };
        let Ok(name) = format!("{rel}/{base}").parse::<ObjectName>() else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(file = %entry.path().display(), bytes = meta.len(), "removed the staging file of an unfinished snapshot upload");
                files += 1;
                bytes += meta.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((files, bytes))
}

/// Pieces in which a local file's stream is read: one blocking task each.
const FILE_PIECE: usize = 4 << 20;

/// A stream over `range` of a local file, read on blocking threads in [`FILE_PIECE`]s.
fn file_stream(
    file: std::fs::File,
    path: std::path::PathBuf,
    range: std::ops::Range<u64>,
) -> futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>> {
    use std::io::{Read, Seek, SeekFrom};
    let state = (Some(file), path, range.start, range.end);
    futures::stream::try_unfold(state, |(file, path, at, end)| async move {
        let Some(mut file) = file else {
            return Ok(None);
        };
        if at >= end {
            return Ok(None);
        }
        tokio::task::spawn_blocking(move || {
            let n = (end - at).min(FILE_PIECE as u64);
            let mut buf = Vec::with_capacity(n as usize);
            let read = file
                .seek(SeekFrom::Start(at))
                .and_then(|_| (&mut file).take(n).read_to_end(&mut buf));
            match read {
                Ok(0) => Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("{}: ends at {at}, before {end}", path.display()).into(),
                }),
                Ok(got) => Ok(Some((
                    Bytes::from(buf),
                    (Some(file), path, at + got as u64, end),
                ))),
                Err(e) => Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("{}: {e}", path.display()).into(),
                }),
            }
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?
    })
    .boxed()
}

/// Listed objects for tests: a segment of generation `g` over offsets `start..end`, written
/// between `t0` and `t1` ms, and a snapshot at `off`, `t`; replid `r` * 40.
#[cfg(test)]
pub(crate) mod test_listing {
    use super::Listed;
    use crate::archive::names::{test_replid, GenerationId, ObjectName};

    pub fn seg(g: u64, start: u64, end: u64, t0: u64, t1: u64, r: char) -> Listed {
        Listed {
            name: ObjectName::segment(GenerationId(g), (start, end), (t0, t1), test_replid(r)),
            size: 10,
        }
    }

    pub fn snap(g: u64, off: u64, t: u64, r: char) -> Listed {
        Listed {
            name: ObjectName::snapshot(GenerationId(g), off, t, test_replid(r)),
            size: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::names::test_replid;

    fn name(start: u64, end: u64) -> ObjectName {
        ObjectName::segment(GenerationId(1), (start, end), (1, 2), test_replid('a'))
    }

    #[tokio::test]
    async fn put_new_lists_sorted_and_refuses_other_bytes() {
        let store = Store::open("memory://", &"a".parse().unwrap()).unwrap();
        store
            .put_new(&name(10, 20), Bytes::from_static(b"x"))
            .await
            .unwrap();
        store
            .put_new(&name(0, 10), Bytes::from_static(b"y"))
            .await
            .unwrap();
        // Same bytes again: accepted (a retried put).
        store
            .put_new(&name(0, 10), Bytes::from_static(b"y"))
            .await
            .unwrap();
        let e = store
            .put_new(&name(0, 10), Bytes::from_static(b"z"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        store
            .backend()
            .put(&Path::from("a/notes.txt"), PutPayload::from_static(b"n"))
            .await
            .unwrap();
        // The lease is neither an object nor foreign.
        store
            .backend()
            .put(&store.lease_path(), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
        // Nor is a snapshot request.
        store
            .backend()
            .put(&store.request_path(), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
        let l = store.list().await.unwrap();
        let starts: Vec<u64> = l.objects.iter().map(|o| o.name.start).collect();
        assert_eq!(starts, vec![0, 10]);
        assert_eq!(l.foreign, vec!["a/notes.txt".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_local_object_streams_whole_in_large_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, &"a".parse().unwrap()).unwrap();
        let data: Vec<u8> = (0..2 * FILE_PIECE + 4321)
            .map(|i| (i % 251) as u8)
            .collect();
        store
            .put_new(&name(0, 10), Bytes::from(data.clone()))
            .await
            .unwrap();
        let (size, stream) = store.get_stream(&name(0, 10)).await.unwrap();
        assert_eq!(size, data.len() as u64);
        let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), data);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_large_object_from_a_store_streams_in_order_as_ranged_gets() {
        let store = Store::open("memory://", &"a".parse().unwrap()).unwrap();
        for len in [RANGE_SIZE as usize - 1, 5 * RANGE_SIZE as usize + 4321] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let n = name(len as u64, len as u64 + 10);
            store.put_new(&n, Bytes::from(data.clone())).await.unwrap();
            let (size, stream) = store.get_stream(&n).await.unwrap();
            assert_eq!(size, len as u64);
            let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
            assert!(pieces.iter().all(|p| p.len() as u64 <= RANGE_SIZE));
            assert_eq!(pieces.concat(), data);
        }
        // A missing object is the store's NotFound, as before.
        let e = store.get_stream(&name(1, 2)).await.err().unwrap();
        assert!(e.is_not_found(), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readers_of_a_missing_directory_do_not_create_it() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nothing-here");
        let n: ArchiveName = "a".parse().unwrap();
        let store = Store::open(&dir.to_string_lossy(), &n).unwrap();
        let e = store.list().await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("no archive at"), "{e}");
        assert!(e.to_string().contains("nothing-here"), "{e}");
        assert!(store
            .generation_snapshots(GenerationId(1))
            .await
            .unwrap()
            .is_empty());
        assert!(!store.exists(&name(0, 10)).await.unwrap());
        assert!(!dir.exists(), "a reader created {}", dir.display());
        // The archiver creates it; then it is an empty archive.
        store.create_root().await.unwrap();
        assert!(dir.is_dir());
        assert!(store.list().await.unwrap().objects.is_empty());
        // Removed under a running archiver: its next write creates it again, through a store
        // opened while it did not exist.
        std::fs::remove_dir_all(&dir).unwrap();
        store
            .put_new(&name(0, 10), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(store.list().await.unwrap().objects.len(), 1);
        // A file where the directory should be is a usage error.
        let file = parent.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file.to_string_lossy(), &n).unwrap_err();
        assert!(matches!(e, StoreError::Config { .. }), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn staging_files_of_unfinished_snapshot_uploads_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_string_lossy().into_owned();
        let store = Store::open(&url, &"a".parse().unwrap()).unwrap();
        let snap = ObjectName::snapshot(GenerationId(1), 0, 5, test_replid('a'));
        let h = SnapshotHeader {
            generation: GenerationId(1),
            offset: 0,
            time_ms: 5,
            replid: test_replid('a'),
            taken: None,
        };
        let staging = |n: u32| dir.path().join("a").join(format!("{}#{n}", snap));
        // An aborted upload leaves nothing.
        let mut up = store
            .snapshot_upload(&snap, &h, Duration::ZERO)
            .await
            .unwrap();
        up.write(&[7u8; 1000]).await.unwrap();
        assert!(staging(1).exists(), "no staging file where expected");
        up.abort().await;
        assert!(!staging(1).exists());
        // What a killed upload leaves (the process died: no abort, no drop) is removed at the
        // archiver's next start; other files are left alone.
        let other = dir.path().join("a").join("0000000001").join("notes#1");
        std::fs::create_dir_all(staging(1).parent().unwrap()).unwrap();
        std::fs::write(staging(1), vec![1u8; 5000]).unwrap();
        std::fs::write(staging(2), vec![1u8; 3000]).unwrap();
        std::fs::write(&other, b"x").unwrap();
        store
            .put_new(&name(0, 10), Bytes::from_static(b"y"))
            .await
            .unwrap();
        assert_eq!(store.remove_staging_files().await.unwrap(), (2, 8000));
        assert!(!staging(1).exists() && !staging(2).exists());
        assert!(other.exists());
        assert_eq!(store.list().await.unwrap().objects.len(), 1);
        assert_eq!(store.remove_staging_files().await.unwrap(), (0, 0));
    }

    #[test]
    fn bad_urls_are_named() {
        let n: ArchiveName = "a".parse().unwrap();
        let e = Store::open("ftp://x/y", &n).unwrap_err().to_string();
        assert!(e.contains("ftp"), "{e}");
        let e = Store::open("s3:///prefix", &n).unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
        // Errors never show a password or a query string.
        let e = Store::open("ftp://user:s3cret@x/y?sig=s3cret", &n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ftp") && !e.contains("s3cret"), "{e}");
        let e = Store::open("http://user:s3cret@x/y", &n)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn store_urls_are_redacted_for_messages() {
        assert_eq!(redact_store_url("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(redact_store_url("./dir"), "./dir");
        let shown = redact_store_url("s3://key:s3cret@bucket/p?sig=s3cret");
        assert!(shown.starts_with("s3://key@bucket/p"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cloud_urls_and_local_forms_open() {
        let n: ArchiveName = "a".parse().unwrap();
        // Building a cloud store reaches no server; the prefix comes from the URL.
        for (url, root) in [
            ("s3://bucket", ""),
            ("s3://bucket/some/prefix/", "some/prefix/"),
            ("gs://bucket/p", "p/"),
            ("abfs://container@account.dfs.core.windows.net/p", "p/"),
        ] {
            let store = Store::open(url, &n).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(store.url(), url);
            assert!(store.local_dir.is_none());
            // Snapshot parts address the objects the store does, under the URL's prefix.
            let parts = store
                .parts
                .as_ref()
                .expect("a cloud store has indexed parts");
            let full = parts.full_path(&store.path(&name(0, 10)));
            assert_eq!(
                full.to_string(),
                format!("{root}a/{}", name(0, 10)),
                "{url}"
            );
        }
        for url in ["memory://", "memory:"] {
            let store = Store::open(url, &n).unwrap();
            assert!(store.list().await.unwrap().objects.is_empty());
        }
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("archive");
        for url in [
            abs.display().to_string(),
            format!("file://{}", abs.display()),
        ] {
            let store = Store::open(&url, &n).unwrap();
            assert_eq!(store.local_dir.as_deref(), Some(abs.as_path()), "{url}");
            assert!(store.parts.is_none(), "{url}");
        }
        let store = Store::open("./some-archive-dir", &n).unwrap();
        assert_eq!(
            store.local_dir,
            Some(std::env::current_dir().unwrap().join("some-archive-dir"))
        );
        assert!(Store::open("", &n).is_err());
    }
}
