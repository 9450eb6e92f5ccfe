//! Reading many small objects at the store's throughput rather than its latency. An object
//! store answers each GET after a round trip (milliseconds in the same region), so one GET at a
//! time reads a thousand segments in as many round trips. [`OrderedFetch`] keeps up to
//! [`FetchConfig::parallel`] GETs in flight, decodes each object on a blocking thread as soon as
//! it arrives, and hands the results over strictly in the order of its list, so that the reader
//! (a restore's replay, verify's chain check) stays sequential.
//!
//! Memory is bounded by bytes as well as by count: each object ahead of the reader counts its
//! stored size (from the listing) and its raw size (from its name) against
//! [`FetchConfig::max_bytes`]; an object larger than the whole budget is fetched alone. Both
//! limits are taken in list order by one task, and released when the reader takes the object,
//! so a later object never holds the room an earlier one waits for.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle};

use crate::archive::names::ObjectName;
use crate::archive::store::{Store, StoreError};

/// GETs in flight by default.
pub const DEFAULT_PARALLEL: usize = 8;
/// Bytes (stored and raw) of objects fetched ahead of the reader, by default.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The largest `--parallel` accepted.
pub const MAX_PARALLEL: usize = 256;

/// How many objects, and how many bytes of them, may be fetched ahead of the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchConfig {
    /// GETs in flight at most; 1 reads one object at a time (the reader works on the one
    /// before meanwhile).
    pub parallel: usize,
    /// Stored plus raw bytes of the objects fetched, being decoded or waiting for the reader;
    /// an object larger than this is fetched alone.
    pub max_bytes: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            parallel: DEFAULT_PARALLEL,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One object to read: its name, its stored size (from the listing) and its raw size (the
/// offset range its name covers).
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub name: ObjectName,
    pub stored: u64,
    pub raw: u64,
}

/// An object read and decoded: its name, the stored bytes read, and what the decoder made of
/// them.
#[derive(Debug)]
pub struct Fetched<T> {
    pub name: ObjectName,
    pub stored: u64,
    pub value: T,
}

/// The room an object takes until the reader takes it.
struct Held {
    _slot: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

type Job<T> = AbortOnDrop<Result<(Fetched<T>, Held), StoreError>>;

/// Objects fetched ahead of the reader, handed over in list order by [`next`](Self::next).
/// Dropping it stops every fetch still in flight.
pub struct OrderedFetch<T> {
    rx: mpsc::Receiver<Job<T>>,
    _task: AbortOnDrop<()>,
}

impl<T: Send + 'static> OrderedFetch<T> {
    /// Starts reading `objects` from `store`; `decode` runs on a blocking thread for each one.
    /// With a `gate`, only the first object is fetched until the gate fires (a restore reads
    /// its snapshot meanwhile, and holds no more than that one segment beside it); a gate
    /// dropped unfired stops the fetch.
    pub fn start<F>(
        store: &Store,
        objects: Vec<Wanted>,
        cfg: FetchConfig,
        gate: Option<oneshot::Receiver<()>>,
        decode: F,
    ) -> OrderedFetch<T>
    where
        F: Fn(&ObjectName, Bytes) -> T + Send + Sync + 'static,
    {
        let parallel = cfg.parallel.clamp(1, MAX_PARALLEL);
        // Semaphores count in u32 permits: a budget past 4 GiB is no bound anyway.
        let budget = cfg.max_bytes.clamp(1, u64::from(u32::MAX)) as u32;
        let slots = Arc::new(Semaphore::new(parallel));
        let room = Arc::new(Semaphore::new(budget as usize));
        let decode = Arc::new(decode);
        let (tx, rx) = mpsc::channel(parallel);
        let store = store.clone();
        let task = tokio::spawn(async move {
            let mut gate = gate;
            for w in objects {
                // Taken in list order, by this task only: an object waits only for the ones
                // before it.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let cost = w.stored.saturating_add(w.raw).clamp(1, u64::from(budget)) as u32;
                let Ok(bytes) = room.clone().acquire_many_owned(cost).await else {
                    return;
                };
                let held = Held {
                    _slot: slot,
                    _bytes: bytes,
                };
                let (store, decode) = (store.clone(), decode.clone());
                let job = tokio::spawn(async move {
                    let data = store.get(&w.name).await?;
                    let stored = data.len() as u64;
                    let name = w.name;
                    let value =
                        joined(tokio::task::spawn_blocking(move || decode(&name, data)).await);
                    Ok((
                        Fetched {
                            name: w.name,
                            stored,
                            value,
                        },
                        held,
                    ))
                });
                if tx.send(AbortOnDrop(job)).await.is_err() {
                    return;
                }
                if let Some(g) = gate.take() {
                    if g.await.is_err() {
                        return;
                    }
                }
            }
        });
        OrderedFetch {
            rx,
            _task: AbortOnDrop(task),
        }
    }

    /// The next object in list order, once it is read and decoded; `None` after the last. A
    /// store error is the error of that object: the objects after it are still fetched only
    /// if the reader asks for them.
    pub async fn next(&mut self) -> Option<Result<Fetched<T>, StoreError>> {
        let mut job = self.rx.recv().await?;
        // The room it held is free for the objects after it as soon as the reader has it.
        Some(joined((&mut job.0).await).map(|(fetched, _held)| fetched))
    }
}

/// The value of a task; a panic in the task goes on here.
fn joined<T>(r: Result<T, JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A task that is stopped when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A store wrapper for tests that counts GETs in flight (from the call until the body is
/// returned or dropped) and remembers the most seen at once, and the order the GETs started in.
#[cfg(test)]
pub(crate) mod counting {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use futures::stream::{BoxStream, Stream};
    use futures::StreamExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore};

    use crate::archive::fault_store::{injected, FaultStore, Faults};

    #[derive(Debug, Default)]
    pub struct Counts {
        pub now: AtomicUsize,
        pub max: AtomicUsize,
        /// Paths of the GETs, in the order they started.
        pub started: Mutex<Vec<String>>,
        /// GETs of paths that end in this fail (after their wait), as a store outage would.
        pub fail: Mutex<Option<String>>,
    }

    /// A store under the archive name `a` whose GETs each take 50 ms, counting the GETs of
    /// paths that end in `suffix` (`None`: all).
    pub fn slow_store(suffix: Option<&'static str>) -> (crate::archive::store::Store, Arc<Counts>) {
        let throttled = ThrottledStore::new(
            InMemory::new(),
            ThrottleConfig {
                wait_get_per_call: std::time::Duration::from_millis(50),
                ..Default::default()
            },
        );
        let counts = Arc::new(Counts::default());
        let counting = Counting {
            counts: counts.clone(),
            suffix,
        };
        let backend = Arc::new(FaultStore::new(throttled, Arc::new(counting)));
        let name = "a".parse().expect("a valid archive name");
        let store = crate::archive::store::Store::with_backend(backend, "memory://", &name);
        (store, counts)
    }

    impl Counts {
        pub fn max(&self) -> usize {
            self.max.load(Ordering::SeqCst)
        }

        pub fn reset(&self) {
            self.max.store(0, Ordering::SeqCst);
            self.started.lock().unwrap().clear();
        }
    }

    /// Decrements the count when the GET's body is done with.
    struct InFlight(Arc<Counts>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A GET's body, in flight until it is dropped.
    struct Guarded {
        inner: BoxStream<'static, object_store::Result<Bytes>>,
        _in_flight: InFlight,
    }

    impl Stream for Guarded {
        type Item = object_store::Result<Bytes>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inner.poll_next_unpin(cx)
        }
    }

    /// Counts the GETs in flight (until their body is dropped) and fails those of
    /// [`Counts::fail`].
    #[derive(Debug)]
    pub struct Counting {
        pub counts: Arc<Counts>,
        /// Only GETs of paths ending so are counted (`None`: all).
        pub suffix: Option<&'static str>,
    }

    #[async_trait::async_trait]
    impl Faults for Counting {
        async fn get_opts(
            &self,
            inner: &dyn ObjectStore,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            if !self.suffix.is_none_or(|s| location.as_ref().ends_with(s)) {
                return inner.get_opts(location, options).await;
            }
            self.counts
                .started
                .lock()
                .unwrap()
                .push(location.to_string());
            let n = self.counts.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.counts.max.fetch_max(n, Ordering::SeqCst);
            let guard = InFlight(self.counts.clone());
            let mut r = inner.get_opts(location, options).await?;
            let fail = self.counts.fail.lock().unwrap().clone();
            if fail.is_some_and(|f| location.as_ref().ends_with(&f)) {
                return Err(injected());
            }
            // In flight until the body is read.
            r.payload = match r.payload {
                GetResultPayload::Stream(inner) => GetResultPayload::Stream(
                    Guarded {
                        inner,
                        _in_flight: guard,
                    }
                    .boxed(),
                ),
                file => file,
            };
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use object_store::ObjectStoreExt;

    use super::counting::{self, Counts};
    use super::*;
    use crate::archive::names::{test_replid, GenerationId};

    /// A store whose GETs each take 50 ms, holding `n` objects of `size` bytes; the counts of
    /// its GETs, and the wanted list of the objects (raw size `raw` each).
    async fn slow_store(n: u64, size: usize, raw: u64) -> (Store, Arc<Counts>, Vec<Wanted>) {
        let (store, counts) = counting::slow_store(None);
        let mut wanted = Vec::new();
        for i in 0..n {
            let name = ObjectName::segment(
                GenerationId(1),
                (i * raw, (i + 1) * raw),
                (1000 + i, 1000 + i),
                test_replid('a'),
            );
            let mut body = vec![0u8; size];
            body[..8].copy_from_slice(&i.to_le_bytes());
            store.put_new(&name, body.into()).await.unwrap();
            wanted.push(Wanted {
                name,
                stored: size as u64,
                raw,
            });
        }
        (store, counts, wanted)
    }

    /// The numbers the objects carry, in the order they were handed over.
    async fn read_all(fetch: &mut OrderedFetch<u64>) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(r) = fetch.next().await {
            got.push(r.unwrap().value);
        }
        got
    }

    fn first_number(_: &ObjectName, b: Bytes) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap())
    }

    /// 24 objects at 8 in flight: 8 GETs overlap, and the objects come in list order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gets_overlap_up_to_parallel_and_order_is_kept() {
        let (store, counts, wanted) = slow_store(24, 64, 100).await;
        for parallel in [1, 4, 8] {
            counts.reset();
            let cfg = FetchConfig {
                parallel,
                ..Default::default()
            };
            let mut fetch = OrderedFetch::start(&store, wanted.clone(), cfg, None, first_number);
            assert_eq!(read_all(&mut fetch).await, (0..24).collect::<Vec<_>>());
            assert_eq!(counts.max(), parallel, "parallel {parallel}");
            assert_eq!(counts.now.load(Ordering::SeqCst), 0);
        }
    }

    /// Objects of 1 MiB stored and 1 MiB raw, with a budget of 5 MiB: two at a time, though
    /// eight are allowed by count; an object larger than the budget goes alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_byte_budget_bounds_big_objects() {
        let (store, counts, wanted) = slow_store(8, 1 << 20, 1 << 20).await;
        let cfg = FetchConfig {
            parallel: 8,
            max_bytes: 5 << 20,
        };
        let mut fetch = OrderedFetch::start(&store, wanted.clone(), cfg, None, first_number);
        assert_eq!(read_all(&mut fetch).await, (0..8).collect::<Vec<_>>());
        assert_eq!(counts.max(), 2);
        counts.reset();
        let cfg = FetchConfig {
            parallel: 8,
            max_bytes: 1 << 20,
        };
        let mut fetch = OrderedFetch::start(&store, wanted, cfg, None, first_number);
        assert_eq!(read_all(&mut fetch).await, (0..8).collect::<Vec<_>>());
        assert_eq!(counts.max(), 1);
    }

    /// With a gate, only the first object is read until it fires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gate_holds_all_but_the_first() {
        let (store, counts, wanted) = slow_store(6, 64, 100).await;
        let (open, gate) = oneshot::channel();
        let mut fetch = OrderedFetch::start(
            &store,
            wanted,
            FetchConfig::default(),
            Some(gate),
            first_number,
        );
        assert_eq!(fetch.next().await.unwrap().unwrap().value, 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(counts.started.lock().unwrap().len(), 1);
        open.send(()).unwrap();
        assert_eq!(read_all(&mut fetch).await, (1..6).collect::<Vec<_>>());
        assert_eq!(counts.max(), 5);
    }

    /// A missing object in the middle is that object's error, after every object before it;
    /// dropping the fetch stops the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_object_is_its_own_error_in_order() {
        let (store, _counts, wanted) = slow_store(12, 64, 100).await;
        store
            .backend()
            .delete(&store.path(&wanted[5].name))
            .await
            .unwrap();
        let mut fetch = OrderedFetch::start(
            &store,
            wanted.clone(),
            FetchConfig::default(),
            None,
            first_number,
        );
        for i in 0..5 {
            assert_eq!(fetch.next().await.unwrap().unwrap().value, i);
        }
        let err = fetch.next().await.unwrap().unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(
            err.to_string().contains(&wanted[5].name.to_string()),
            "{err}"
        );
    }
}
