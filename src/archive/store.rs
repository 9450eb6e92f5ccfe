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

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, WriteMultipart,
};
use xxhash_rust::xxh3::Xxh3;

use crate::archive::format::{self, Kind, SnapshotHeader};
use crate::archive::frames::FrameEncoder;
use crate::archive::names::{ArchiveName, ObjectName};

/// Part size of snapshot multipart uploads.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one snapshot in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

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
}

impl StoreError {
    /// Whether the object is simply missing.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }
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

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl Store {
    /// Opens a store from `--store`: a path or `file:///…`, `memory://`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`. Cloud credentials and endpoints come from
    /// the standard environment variables of each provider (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(url: &str, name: &ArchiveName) -> Result<Store, StoreError> {
        let inner = open_backend(url)?;
        Ok(Store::with_backend(inner, url, name))
    }

    /// A store over an existing backend (tests compose `object_store` wrappers this way).
    pub fn with_backend(inner: Arc<dyn ObjectStore>, url: &str, name: &ArchiveName) -> Store {
        Store {
            inner,
            prefix: Path::from(name.as_str()),
            url: url.to_string(),
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

    fn backend_err(
        &self,
        op: &'static str,
        object: &str,
        source: object_store::Error,
    ) -> StoreError {
        StoreError::Backend {
            op,
            object: format!("{}/{}", self.url.trim_end_matches('/'), object),
            source,
        }
    }

    /// Lists the archive. Never relies on the backend's order: sorts by offset.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let metas: Vec<_> = self
            .inner
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend_err("list", self.prefix.as_ref(), e))?;
        let mut listing = Listing::default();
        let strip = format!("{}/", self.prefix);
        for m in metas {
            let loc = m.location.as_ref();
            let rel = loc.strip_prefix(&strip).unwrap_or(loc);
            match rel.parse::<ObjectName>() {
                Ok(name) => listing.objects.push(Listed { name, size: m.size }),
                Err(_) => listing.foreign.push(loc.to_string()),
            }
        }
        listing.objects.sort_by_key(|o| o.name.sort_key());
        listing.foreign.sort();
        Ok(listing)
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

    /// Opens a streaming read of an object: its size and a stream of byte chunks.
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

    /// Starts a snapshot upload. Fails if an object of that name already exists.
    pub async fn snapshot_upload(
        &self,
        name: &ObjectName,
        header: &SnapshotHeader,
    ) -> Result<SnapshotUpload, StoreError> {
        let path = self.path(name);
        match self.inner.head(&path).await {
            Ok(_) => {
                return Err(StoreError::Conflict {
                    object: name.to_string(),
                })
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.backend_err("head", &name.to_string(), e)),
        }
        let upload = self
            .inner
            .put_multipart_opts(&path, PutMultipartOptions::default())
            .await
            .map_err(|e| self.backend_err("put", &name.to_string(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let pre = format::preamble(Kind::Snapshot, &header.encode());
        let mut object_hash = Xxh3::new();
        object_hash.update(&pre);
        writer.write(&pre);
        let encoder = FrameEncoder::new(format::ZSTD_LEVEL).map_err(|e| StoreError::Config {
            url: self.url.clone(),
            reason: format!("zstd: {e}"),
        })?;
        Ok(SnapshotUpload {
            store: self.clone(),
            object: name.to_string(),
            writer,
            encoder,
            out: Vec::with_capacity(PART_SIZE + (1 << 20)),
            raw_hash: Xxh3::new(),
            object_hash,
            raw_len: 0,
            stored: pre.len() as u64,
        })
    }
}

/// A snapshot being streamed into the store: raw RDB bytes in, compressed parts out. Nothing is
/// visible to a reader until [`finish`](SnapshotUpload::finish) completes the upload.
pub struct SnapshotUpload {
    store: Store,
    object: String,
    writer: WriteMultipart,
    /// Frames of [`crate::archive::frames::FRAME_RAW`] raw bytes, so that readers can decompress
    /// several at once.
    encoder: FrameEncoder,
    /// Compressed bytes not yet handed to the upload.
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
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.raw_hash.update(data);
        self.raw_len += data.len() as u64;
        let (encoder, out) = (&mut self.encoder, &mut self.out);
        tokio::task::block_in_place(|| encoder.write(data, out)).map_err(|e| {
            StoreError::Config {
                url: self.store.url.clone(),
                reason: format!("zstd: {e}"),
            }
        })?;
        if self.out.len() >= PART_SIZE {
            let out = std::mem::replace(&mut self.out, Vec::with_capacity(PART_SIZE + (1 << 20)));
            self.emit(out).await?;
        }
        Ok(())
    }

    async fn emit(&mut self, out: Vec<u8>) -> Result<(), StoreError> {
        self.object_hash.update(&out);
        self.stored += out.len() as u64;
        self.writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| self.store.backend_err("put", &self.object, e))?;
        // Hands the buffer over without a copy.
        self.writer.put(Bytes::from(out));
        Ok(())
    }

    /// Raw bytes written so far.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Completes the upload: the snapshot becomes visible, whole.
    pub async fn finish(mut self) -> Result<SnapshotDone, StoreError> {
        let (encoder, out) = (&mut self.encoder, &mut self.out);
        encoder.finish(out).map_err(|e| StoreError::Config {
            url: self.store.url.clone(),
            reason: format!("zstd: {e}"),
        })?;
        let rest = std::mem::take(&mut self.out);
        self.emit(rest).await?;
        let (t, checksum) =
            format::trailer(self.raw_len, self.raw_hash.digest(), &mut self.object_hash);
        self.writer.write(&t);
        self.stored += t.len() as u64;
        let object = self.object.clone();
        let store = self.store.clone();
        self.writer
            .finish()
            .await
            .map_err(|e| store.backend_err("put", &object, e))?;
        Ok(SnapshotDone {
            raw_len: self.raw_len,
            stored: self.stored,
            checksum,
        })
    }

    /// Abandons the upload; nothing becomes visible.
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(object = %self.object, error = %e, "aborting a snapshot upload failed; the backend may keep its parts until its own cleanup");
        }
    }
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

fn open_backend(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let cfg = |reason: String| StoreError::Config {
        url: url.to_string(),
        reason,
    };
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("file", url),
    };
    let split_bucket = |rest: &str| -> Result<(String, String), StoreError> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(cfg("no bucket or container in the URL".into()));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    };
    let with_prefix = |store: Arc<dyn ObjectStore>, prefix: String| -> Arc<dyn ObjectStore> {
        if prefix.is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        }
    };
    match scheme {
        "file" => {
            let dir = if url.starts_with("file://") {
                rest.to_string()
            } else {
                url.to_string()
            };
            if dir.is_empty() {
                return Err(cfg("empty path".into()));
            }
            std::fs::create_dir_all(&dir).map_err(|e| cfg(format!("cannot create {dir}: {e}")))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| cfg(e.to_string()))?
                .with_automatic_cleanup(true)
                .with_fsync(true);
            Ok(Arc::new(fs))
        }
        "s3" | "s3a" => {
            let (bucket, prefix) = split_bucket(rest)?;
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_retry(request_retries())
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| cfg(e.to_string()))?;
            Ok(with_prefix(Arc::new(s3), prefix))
        }
        "gs" => {
            let (bucket, prefix) = split_bucket(rest)?;
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_retry(request_retries())
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| cfg(e.to_string()))?;
            Ok(with_prefix(Arc::new(gcs), prefix))
        }
        "az" | "azure" | "abfs" => {
            let (container, prefix) = split_bucket(rest)?;
            let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_retry(request_retries())
                .with_container_name(container)
                .build()
                .map_err(|e| cfg(e.to_string()))?;
            Ok(with_prefix(Arc::new(az), prefix))
        }
        other => Err(cfg(format!(
            "unknown scheme {other:?} (use a path, file://, s3://, gs://, az:// or memory://)"
        ))),
    }
}

/// Listed objects for tests: a segment of generation `g` over offsets `start..end`, written
/// between `t0` and `t1` ms, and a snapshot at `off`, `t`; replid `r` * 40.
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
    use crate::archive::names::{test_replid, GenerationId};

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

    #[test]
    fn bad_urls_are_named() {
        let n: ArchiveName = "a".parse().unwrap();
        let e = Store::open("ftp://x/y", &n).unwrap_err().to_string();
        assert!(e.contains("ftp"), "{e}");
        let e = Store::open("s3:///prefix", &n).unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
    }
}
