//! For tests: an object store that hands every call to an inner store, except those a test's
//! [`Faults`] takes over, to fail them, count them or slow them down. It also serves the
//! indexed multipart interface ([`MultipartStore`]) when the inner store does, as cloud stores
//! and memory do.
//!
//! A test implements [`Faults`] with only the calls it cares about (each hook is given the
//! inner store, and by default passes the call on), keeps an `Arc` of it to set and read its
//! state, and hands a [`FaultStore`] to [`Store::with_backend`] or
//! [`Store::with_multipart_backend`].
//!
//! [`Store::with_backend`]: crate::archive::store::Store::with_backend
//! [`Store::with_multipart_backend`]: crate::archive::store::Store::with_multipart_backend

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The error a fault returns.
pub fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "fault_store",
        source: "injected failure".into(),
    }
}

/// The calls a test may take over; each passes the call on to `inner` unless overridden.
#[async_trait::async_trait]
pub trait Faults: fmt::Debug + Send + Sync + 'static {
    async fn get_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        inner.get_opts(location, options).await
    }

    async fn put_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        inner.put_opts(location, payload, opts).await
    }

    /// Uploads through object_store's own multipart interface (what a local directory uses).
    async fn put_multipart_opts(
        &self,
        inner: &dyn ObjectStore,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        inner.put_multipart_opts(location, opts).await
    }

    /// The indexed multipart interface ([`MultipartStore`]), from here on.
    async fn create_multipart(
        &self,
        inner: &dyn MultipartStore,
        path: &Path,
    ) -> object_store::Result<MultipartId> {
        inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        inner: &dyn MultipartStore,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        inner: &dyn MultipartStore,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(
        &self,
        inner: &dyn MultipartStore,
        path: &Path,
        id: &MultipartId,
    ) -> object_store::Result<()> {
        inner.abort_multipart(path, id).await
    }
}

/// `inner` with `faults` in front of it.
#[derive(Debug)]
pub struct FaultStore<F, S = InMemory> {
    pub inner: S,
    pub faults: Arc<F>,
}

impl<F: Faults, S: ObjectStore> FaultStore<F, S> {
    pub fn new(inner: S, faults: Arc<F>) -> Self {
        FaultStore { inner, faults }
    }
}

impl<F, S: fmt::Display> fmt::Display for FaultStore<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl<F: Faults, S: ObjectStore> ObjectStore for FaultStore<F, S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults
            .put_opts(&self.inner, location, payload, opts)
            .await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults
            .put_multipart_opts(&self.inner, location, opts)
            .await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.faults.get_opts(&self.inner, location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait::async_trait]
impl<F: Faults, S: MultipartStore> MultipartStore for FaultStore<F, S> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.faults.create_multipart(&self.inner, path).await
    }
    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.faults
            .put_part(&self.inner, path, id, part_idx, data)
            .await
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.faults
            .complete_multipart(&self.inner, path, id, parts)
            .await
    }
    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.faults.abort_multipart(&self.inner, path, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails every GET and counts them; everything else passes.
    #[derive(Debug, Default)]
    struct FailGets(AtomicUsize);

    #[async_trait::async_trait]
    impl Faults for FailGets {
        async fn get_opts(
            &self,
            _: &dyn ObjectStore,
            _: &Path,
            _: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(injected())
        }
    }

    #[tokio::test]
    async fn only_the_overridden_calls_are_taken_over() {
        let faults = Arc::new(FailGets::default());
        let store = FaultStore::new(InMemory::new(), faults.clone());
        let p = Path::from("a/b");
        store.put(&p, "x".into()).await.unwrap();
        let e = store.get(&p).await.unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert_eq!(faults.0.load(Ordering::SeqCst), 1);
        // What went in went to the inner store.
        let body = store.inner.get(&p).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"x");
        // The indexed multipart interface passes on too.
        let id = MultipartStore::create_multipart(&store, &p).await.unwrap();
        let part = MultipartStore::put_part(&store, &p, &id, 0, "yz".into())
            .await
            .unwrap();
        store.complete_multipart(&p, &id, vec![part]).await.unwrap();
        let body = store.inner.get(&p).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"yz");
    }
}
