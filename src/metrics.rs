//! Metrics and health endpoints: one process-wide registry of the `pitr_*` metrics (the
//! `prometheus-client` crate encodes them), updated where the values are already known
//! (atomics, no extra store requests), and a small HTTP server (hyper) serving `/metrics`,
//! `/healthz` and `/readyz`.
//!
//! A [`Store`](crate::archive::store::Store) carries the [`Metrics`] its archive is counted
//! in, so that the store, the lease, the segmenter, the compaction and the shipper count what
//! they do through the store they use. That is the process's [`global`] set unless the store
//! was given another: a `cluster://` source archives each shard with a set of its own
//! ([`shard`]), whose every series has a `shard="<shard-id>"` label. `/metrics` serves the
//! global set, or, once [`use_shard_labels`] was called, the sets of the running shards
//! (each family once, its samples from every shard), with the process-wide series
//! (`pitr_build_info`) once. A command that serves them starts [`serve`] with its own
//! readiness check ([`Metrics::archive_ready`] for `pitr archive`, [`shards_ready`] for a
//! cluster). Updating a metric with no server running costs an atomic operation.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::archive::catalog::Catalog;

/// The default address of `--metrics-addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9187";

/// How long the durable offset may stand still, behind what was received, before `/readyz`
/// says the archiver is not ready.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// Arrival times of bytes not yet durable are kept at this resolution (entries closer than
/// this are merged), which bounds the tracker's memory by time rather than by commands.
const ARRIVAL_RESOLUTION_MS: u64 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// What an upload wrote (the `kind` label of the upload metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    Segment,
    Snapshot,
    Compacted,
    Lease,
}

impl Upload {
    pub fn as_str(self) -> &'static str {
        match self {
            Upload::Segment => "segment",
            Upload::Snapshot => "snapshot",
            Upload::Compacted => "compacted",
            Upload::Lease => "lease",
        }
    }
}

/// Why the link to the master was lost and attached again (the `cause` label of
/// `pitr_link_reconnects_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No data within the read timeout.
    Timeout,
    /// The master (or the network) closed the connection.
    Closed,
    /// The connection or a command was refused (connection refused, `-LOADING`, an error
    /// reply, authentication).
    Refused,
    /// The master sent something that is not the protocol (or not a command).
    Protocol,
    /// The master could not continue the stream: a full resync started a new generation.
    FullResync,
    /// The store failed (the session ended to wait for it).
    Store,
    /// The master moved (Sentinel's `+switch-master`, a cluster's new topology).
    Failover,
    Other,
}

impl Cause {
    pub const ALL: [Cause; 8] = [
        Cause::Timeout,
        Cause::Closed,
        Cause::Refused,
        Cause::Protocol,
        Cause::FullResync,
        Cause::Store,
        Cause::Failover,
        Cause::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Closed => "closed",
            Cause::Refused => "refused",
            Cause::Protocol => "protocol",
            Cause::FullResync => "full_resync",
            Cause::Store => "store",
            Cause::Failover => "failover",
            Cause::Other => "other",
        }
    }
}

/// Every `kind` of `pitr_store_errors_total`.
pub const STORE_ERROR_KINDS: [&str; 8] = [
    "not_found",
    "already_exists",
    "precondition",
    "timeout",
    "unauthenticated",
    "permission_denied",
    "not_supported",
    "other",
];

/// The `kind` label of `pitr_store_errors_total` for an object_store error.
pub fn store_error_kind(e: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => "not_found",
        E::AlreadyExists { .. } => "already_exists",
        E::Precondition { .. } | E::NotModified { .. } => "precondition",
        E::Unauthenticated { .. } => "unauthenticated",
        E::PermissionDenied { .. } => "permission_denied",
        E::NotSupported { .. } | E::NotImplemented { .. } => "not_supported",
        e if is_timeout(e) => "timeout",
        _ => "other",
    }
}

/// Whether a timeout is somewhere in the error's chain.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("timed out") || text.contains("timeout") {
            return true;
        }
        cur = e.source();
    }
    false
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What sets the gauges read at scrape time.
type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Bytes received and not yet durable, with when they arrived: the recovery point.
#[derive(Default)]
struct Pending {
    generation: u64,
    /// `(end offset, arrival ms)` of received bytes, oldest first; entries up to the durable
    /// offset are dropped.
    arrivals: VecDeque<(u64, u64)>,
    received: u64,
    durable: u64,
    /// When the durable offset last moved (or was caught up).
    durable_moved: Option<Instant>,
}

impl Pending {
    fn drop_durable(&mut self) {
        while self
            .arrivals
            .front()
            .is_some_and(|&(end, _)| end <= self.durable)
        {
            self.arrivals.pop_front();
        }
    }
}

/// Every `pitr_*` metric, and what `/readyz` needs.
pub struct Metrics {
    registry: Registry,
    /// The shard whose archive these count (`None`: the process's own set).
    shard: Option<String>,
    pub link_up: Gauge,
    pub link_reconnects: Family<CauseLabel, Counter>,
    pub received_offset: Gauge,
    pub durable_offset: Gauge,
    pub recovery_point_bytes: Gauge,
    pub recovery_point_seconds: FloatGauge,
    pub uploaded_objects: Family<KindLabel, Counter>,
    pub uploaded_bytes: Family<KindLabel, Counter>,
    pub upload_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub store_errors: Family<KindLabel, Counter>,
    pub buffered_bytes: Gauge,
    pub newest_snapshot_age: FloatGauge,
    pub compaction_backlog: Gauge,
    pub window_start: FloatGauge,
    pub window_end: FloatGauge,
    pub retention_seconds: FloatGauge,
    pub lease_held: Gauge,
    pub ship_lag_seconds: FloatGauge,
    pub ship_lag_objects: Gauge,
    pub ship_lag_bytes: Gauge,
    pub ship_copied_objects: Counter,
    pub ship_copied_bytes: Counter,
    pub ship_errors: Counter,
    /// Whether the last round of a shipper succeeded (`None`: no round yet).
    ship_last_round: Mutex<Option<Result<(), String>>>,
    /// Newest snapshot time (ms), 0 when none is known.
    newest_snapshot_ms: AtomicU64,
    /// Newest restorable moment (ms) known from durable segments and snapshots.
    window_end_ms: AtomicU64,
    pending: Mutex<Pending>,
    /// Why the link is not attached, when it is not.
    link_state: Mutex<String>,
    /// Values read at scrape time from whoever holds them (a command's budget, its lease).
    sampler: Mutex<Option<Sampler>>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

static GLOBAL: LazyLock<Arc<Metrics>> = LazyLock::new(|| Arc::new(Metrics::new()));

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// The process's metrics, as a handle a store carries.
pub fn global_handle() -> Arc<Metrics> {
    GLOBAL.clone()
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// The process-wide series: `pitr_build_info`.
fn register_process(registry: &mut Registry) {
    let build_info: Family<VersionLabel, Gauge> = Family::default();
    build_info
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "pitr_build_info",
        "Always 1; the version of pitr in its label",
        build_info,
    );
}

impl Metrics {
    fn new() -> Metrics {
        Metrics::build(None)
    }

    /// The set of `shard` (every series labelled `shard="<shard>"`, no process-wide series),
    /// or with `None` the process's own set.
    fn build(shard: Option<&str>) -> Metrics {
        let mut registry = match shard {
            Some(id) => Registry::with_labels(std::iter::once((
                Cow::Borrowed("shard"),
                Cow::Owned(id.to_string()),
            ))),
            None => Registry::default(),
        };
        let m = Metrics {
            shard: shard.map(str::to_string),
            link_up: Gauge::default(),
            link_reconnects: Family::default(),
            received_offset: Gauge::default(),
            durable_offset: Gauge::default(),
            recovery_point_bytes: Gauge::default(),
            recovery_point_seconds: FloatGauge::default(),
            uploaded_objects: Family::default(),
            uploaded_bytes: Family::default(),
            upload_duration: Family::new_with_constructor(duration_histogram),
            store_errors: Family::default(),
            buffered_bytes: Gauge::default(),
            newest_snapshot_age: FloatGauge::default(),
            compaction_backlog: Gauge::default(),
            window_start: FloatGauge::default(),
            window_end: FloatGauge::default(),
            retention_seconds: FloatGauge::default(),
            lease_held: Gauge::default(),
            ship_lag_seconds: FloatGauge::default(),
            ship_lag_objects: Gauge::default(),
            ship_lag_bytes: Gauge::default(),
            ship_copied_objects: Counter::default(),
            ship_copied_bytes: Counter::default(),
            ship_errors: Counter::default(),
            ship_last_round: Mutex::new(None),
            newest_snapshot_ms: AtomicU64::new(0),
            window_end_ms: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            link_state: Mutex::new("not started".into()),
            sampler: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "pitr_link_up",
            "1 while attached to the master (streaming), 0 otherwise",
            m.link_up.clone(),
        );
        registry.register(
            "pitr_link_reconnects",
            "Sessions with the master that ended and were started again, by cause",
            m.link_reconnects.clone(),
        );
        registry.register(
            "pitr_received_offset",
            "Replication offset just past the last byte received from the master",
            m.received_offset.clone(),
        );
        registry.register(
            "pitr_durable_offset",
            "Replication offset up to which the stream is in the store (what is acknowledged)",
            m.durable_offset.clone(),
        );
        registry.register(
            "pitr_recovery_point_bytes",
            "Bytes received but not yet durable (received offset minus durable offset)",
            m.recovery_point_bytes.clone(),
        );
        registry.register(
            "pitr_recovery_point_seconds",
            "Age in seconds of the oldest byte received but not yet durable, 0 when caught up",
            m.recovery_point_seconds.clone(),
        );
        registry.register(
            "pitr_uploaded_objects",
            "Objects written to the store, by kind",
            m.uploaded_objects.clone(),
        );
        registry.register(
            "pitr_uploaded_bytes",
            "Bytes written to the store (as stored), by kind",
            m.uploaded_bytes.clone(),
        );
        registry.register(
            "pitr_upload_duration_seconds",
            "Time to write one object to the store, by kind (snapshots: the whole streamed upload)",
            m.upload_duration.clone(),
        );
        registry.register(
            "pitr_store_errors",
            "Errors the object store returned, by kind",
            m.store_errors.clone(),
        );
        registry.register(
            "pitr_buffered_bytes",
            "Stream bytes held in memory, not yet durable (counted against --max-buffer)",
            m.buffered_bytes.clone(),
        );
        registry.register(
            "pitr_newest_snapshot_age_seconds",
            "Seconds since the newest snapshot in the archive was taken (0 when there is none)",
            m.newest_snapshot_age.clone(),
        );
        registry.register(
            "pitr_compaction_backlog_objects",
            "Level 0 segments left uncompacted after the last compaction pass",
            m.compaction_backlog.clone(),
        );
        registry.register(
            "pitr_window_start_timestamp_seconds",
            "Oldest restorable moment of the archive, Unix seconds (0 when unknown)",
            m.window_start.clone(),
        );
        registry.register(
            "pitr_window_end_timestamp_seconds",
            "Newest restorable moment of the archive, Unix seconds (0 when unknown)",
            m.window_end.clone(),
        );
        registry.register(
            "pitr_retention_seconds",
            "The configured --retain in seconds, 0 when everything is kept",
            m.retention_seconds.clone(),
        );
        registry.register(
            "pitr_lease_held",
            "1 while this process holds a valid lease on the archive, 0 otherwise",
            m.lease_held.clone(),
        );
        registry.register(
            "pitr_ship_lag_seconds",
            "pitr ship and --also-to: newest arrival time in the source minus the destination's, after the last round",
            m.ship_lag_seconds.clone(),
        );
        registry.register(
            "pitr_ship_lag_objects",
            "pitr ship and --also-to: objects the destination still lacks after the last round",
            m.ship_lag_objects.clone(),
        );
        registry.register(
            "pitr_ship_lag_bytes",
            "pitr ship and --also-to: stored bytes the destination still lacks after the last round",
            m.ship_lag_bytes.clone(),
        );
        registry.register(
            "pitr_ship_copied_objects",
            "pitr ship and --also-to: objects copied to the destination and checked there",
            m.ship_copied_objects.clone(),
        );
        registry.register(
            "pitr_ship_copied_bytes",
            "pitr ship and --also-to: stored bytes copied to the destination and checked there",
            m.ship_copied_bytes.clone(),
        );
        registry.register(
            "pitr_ship_errors",
            "pitr ship and --also-to: objects that failed their check on the destination, and failed rounds",
            m.ship_errors.clone(),
        );
        if shard.is_none() {
            register_process(&mut registry);
        }
        // Every label value of the fixed sets shows from the start, at 0.
        for c in Cause::ALL {
            let _ = m
                .link_reconnects
                .get_or_create(&CauseLabel { cause: c.as_str() });
        }
        for k in [
            Upload::Segment,
            Upload::Snapshot,
            Upload::Compacted,
            Upload::Lease,
        ] {
            let label = KindLabel { kind: k.as_str() };
            let _ = m.uploaded_objects.get_or_create(&label);
            let _ = m.uploaded_bytes.get_or_create(&label);
            let _ = m.upload_duration.get_or_create(&label);
        }
        for kind in STORE_ERROR_KINDS {
            let _ = m.store_errors.get_or_create(&KindLabel { kind });
        }
        Metrics { registry, ..m }
    }

    /// The text exposition (OpenMetrics), after reading the sampled values.
    pub fn encode(&self) -> String {
        self.sample();
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The shard these count, if they are a shard's.
    pub fn shard_id(&self) -> Option<&str> {
        self.shard.as_deref()
    }

    /// Refreshes the values computed at scrape time.
    fn sample(&self) {
        let now = now_ms();
        if let Some(f) = self.sampler.lock().unwrap().as_ref() {
            f(self);
        }
        let snap = self.newest_snapshot_ms.load(Ordering::Relaxed);
        self.newest_snapshot_age.set(if snap == 0 {
            0.0
        } else {
            now.saturating_sub(snap) as f64 / 1000.0
        });
        let end = self.window_end_ms.load(Ordering::Relaxed);
        self.window_end.set(end as f64 / 1000.0);
        let p = self.pending.lock().unwrap();
        let age = match p.arrivals.front() {
            Some(&(_, ms)) if p.received > p.durable => now.saturating_sub(ms) as f64 / 1000.0,
            _ => 0.0,
        };
        self.recovery_point_seconds.set(age);
    }

    /// Sets what is read at scrape time (`f` sets gauges from the values it holds), in place
    /// of what was set before.
    pub fn set_sampler(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        *self.sampler.lock().unwrap() = Some(Box::new(f));
    }

    /// Counts an object written to the store.
    pub fn uploaded(&self, kind: Upload, bytes: u64, took: Duration) {
        let label = KindLabel {
            kind: kind.as_str(),
        };
        self.uploaded_objects.get_or_create(&label).inc();
        self.uploaded_bytes.get_or_create(&label).inc_by(bytes);
        self.upload_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Counts an error the store returned.
    pub fn store_error(&self, e: &object_store::Error) {
        self.store_error_of_kind(store_error_kind(e));
    }

    /// Counts a store error of `kind` (a request that got no answer in time: `timeout`).
    pub fn store_error_of_kind(&self, kind: &'static str) {
        self.store_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a session with the master that ended and is started again.
    pub fn reconnect(&self, cause: Cause) {
        self.link_reconnects
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc();
    }

    /// The link is attached and streaming.
    pub fn link_attached(&self) {
        self.link_up.set(1);
        self.link_state.lock().unwrap().clear();
    }

    /// The link is not attached (or not streaming yet): `why`, for `/readyz`.
    pub fn link_down(&self, why: impl Into<String>) {
        self.link_up.set(0);
        *self.link_state.lock().unwrap() = why.into();
    }

    /// A stream starts (or continues) in `generation` at `offset`, received and durable up to
    /// there: nothing waits.
    pub fn stream_at(&self, generation: u64, offset: u64) {
        let mut p = self.pending.lock().unwrap();
        if p.generation != generation || p.received < offset {
            *p = Pending {
                generation,
                received: offset,
                durable: offset,
                durable_moved: Some(Instant::now()),
                ..Pending::default()
            };
        }
        self.publish_pending(&p);
    }

    /// Bytes of `generation` up to `end` arrived at `ms`.
    pub fn received(&self, generation: u64, end: u64, ms: u64) {
        let mut p = self.pending.lock().unwrap();
        if p.generation != generation {
            return;
        }
        if p.received <= p.durable {
            // Caught up until now: the durable offset cannot be said to stall before this.
            p.durable_moved = Some(Instant::now());
        }
        p.received = p.received.max(end);
        match p.arrivals.back_mut() {
            Some(last) if ms < last.1 + ARRIVAL_RESOLUTION_MS => last.0 = end,
            _ => p.arrivals.push_back((end, ms)),
        }
        self.publish_pending(&p);
    }

    /// The stream of `generation` is durable up to `offset`.
    pub fn durable(&self, generation: u64, offset: u64) {
        let mut p = self.pending.lock().unwrap();
        if p.generation != generation {
            return;
        }
        if offset > p.durable {
            p.durable = offset;
            p.durable_moved = Some(Instant::now());
            p.drop_durable();
        }
        self.publish_pending(&p);
    }

    fn publish_pending(&self, p: &Pending) {
        self.received_offset.set(p.received as i64);
        self.durable_offset.set(p.durable as i64);
        self.recovery_point_bytes
            .set(p.received.saturating_sub(p.durable) as i64);
    }

    /// A durable object of the archive holds moments up to `ms`.
    pub fn restorable_until(&self, ms: u64) {
        self.window_end_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A snapshot taken at `ms` is in the archive.
    pub fn snapshot_at(&self, ms: u64) {
        self.newest_snapshot_ms.fetch_max(ms, Ordering::Relaxed);
        self.restorable_until(ms);
    }

    /// What a listing of the archive says: its newest snapshot and moment, and, when the
    /// listing is `whole` (every generation), where its window starts.
    pub fn observe_catalog(&self, catalog: &Catalog, whole: bool) {
        let start = catalog
            .generations
            .iter()
            .filter_map(|g| g.snapshots.first().map(|s| s.time_ms))
            .min();
        if let Some(start) = start.filter(|_| whole) {
            self.window_start.set(start as f64 / 1000.0);
        }
        for g in &catalog.generations {
            if !g.snapshots.is_empty() {
                self.restorable_until(g.last_time_ms);
            }
            if let Some(s) = g.snapshots.iter().map(|s| s.time_ms).max() {
                self.snapshot_at(s);
            }
        }
    }

    /// `pitr archive`'s readiness: attached to the master, and the durable offset caught up
    /// with what was received or moving (within [`STALL_AFTER`]). `Err`: why not, one line.
    pub fn archive_ready(&self) -> Result<(), String> {
        if self.link_up.get() != 1 {
            let why = self.link_state.lock().unwrap().clone();
            return Err(format!("not attached to the master: {why}"));
        }
        let p = self.pending.lock().unwrap();
        if p.received <= p.durable {
            return Ok(());
        }
        match p.durable_moved {
            Some(t) if t.elapsed() > STALL_AFTER => Err(format!(
                "the durable offset {} has not moved for {} s ({} bytes received are not durable)",
                p.durable,
                t.elapsed().as_secs(),
                p.received - p.durable
            )),
            _ => Ok(()),
        }
    }
}

impl Metrics {
    /// A shipper's round ended: its copies, its lag, its errors.
    pub fn ship_round(&self, copied: u64, bytes: u64, errors: u64, lag: (u64, u64, f64)) {
        self.ship_copied_objects.inc_by(copied);
        self.ship_copied_bytes.inc_by(bytes);
        self.ship_errors.inc_by(errors);
        self.ship_lag_objects.set(lag.0 as i64);
        self.ship_lag_bytes.set(lag.1 as i64);
        self.ship_lag_seconds.set(lag.2);
        *self.ship_last_round.lock().unwrap() = Some(Ok(()));
    }

    /// A shipper's round failed (a store error; the next round tries again).
    pub fn ship_round_failed(&self, why: impl Into<String>) {
        self.ship_errors.inc();
        *self.ship_last_round.lock().unwrap() = Some(Err(why.into()));
    }

    /// `pitr ship --follow`'s readiness: its last round succeeded.
    pub fn ship_ready(&self) -> Result<(), String> {
        match &*self.ship_last_round.lock().unwrap() {
            None => Err("no round finished yet".into()),
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(format!("the last round failed: {why}")),
        }
    }
}

/// Whether `/metrics` serves the shards' sets ([`shard`]) rather than the global one.
static SHARD_LABELS: AtomicBool = AtomicBool::new(false);

/// A shard's set, and how many holders of it are alive.
type ShardEntry = (Arc<Metrics>, usize);

/// The sets of a cluster's shards, by shard id.
static SHARDS: LazyLock<Mutex<BTreeMap<String, ShardEntry>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// From now on `/metrics` serves the series of the running shards ([`shard`]), each labelled
/// with its shard, and not the unlabelled series of the global set (which a cluster's
/// archivers do not update); `pitr_build_info` stays, once.
pub fn use_shard_labels() {
    SHARD_LABELS.store(true, Ordering::Relaxed);
}

/// The metrics of a shard's archive while a holder of it lives ([`ShardMetrics`]).
pub struct ShardMetrics {
    id: String,
    metrics: Arc<Metrics>,
}

impl ShardMetrics {
    /// The handle a store of the shard carries.
    pub fn handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

impl std::ops::Deref for ShardMetrics {
    type Target = Metrics;
    fn deref(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for ShardMetrics {
    fn drop(&mut self) {
        let mut shards = SHARDS.lock().unwrap();
        if let Some((_, holders)) = shards.get_mut(&self.id) {
            *holders = holders.saturating_sub(1);
        }
    }
}

/// The metrics of shard `id` (and [`use_shard_labels`]). Its series are served while a
/// holder lives: once the shard's archiver stopped and dropped its holder (the shard left
/// the cluster), they drop out of `/metrics`; if the shard comes back, it gets the same set
/// again, so that its counters never go back.
pub fn shard(id: &str) -> ShardMetrics {
    use_shard_labels();
    let mut shards = SHARDS.lock().unwrap();
    let entry = shards
        .entry(id.to_string())
        .or_insert_with(|| (Arc::new(Metrics::build(Some(id))), 0));
    entry.1 += 1;
    ShardMetrics {
        id: id.to_string(),
        metrics: entry.0.clone(),
    }
}

/// The shards whose series are served now, by id.
fn running_shards() -> Vec<(String, Arc<Metrics>)> {
    SHARDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, (_, holders))| *holders > 0)
        .map(|(id, (m, _))| (id.clone(), m.clone()))
        .collect()
}

/// What `/metrics` serves: the global set, or (after [`use_shard_labels`]) the running
/// shards' sets and the process-wide series.
pub fn exposition() -> String {
    if !SHARD_LABELS.load(Ordering::Relaxed) {
        return global().encode();
    }
    let shards: Vec<Arc<Metrics>> = running_shards().into_iter().map(|(_, m)| m).collect();
    encode_shards(&shards)
}

/// The sets of `shards` and the process-wide series as one exposition: each family once
/// (its `HELP` and `TYPE`), with the samples of every shard.
fn encode_shards(shards: &[Arc<Metrics>]) -> String {
    let mut texts: Vec<String> = shards.iter().map(|m| m.encode()).collect();
    let mut process = Registry::default();
    register_process(&mut process);
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &process);
    texts.push(text);
    merge_families(&texts)
}

/// Merges OpenMetrics texts: the families in the order first met, each with its descriptor
/// lines once and the samples of every text, and one `# EOF`.
fn merge_families(texts: &[String]) -> String {
    // (name, descriptor lines, sample lines)
    let mut families: Vec<(String, Vec<&str>, Vec<&str>)> = Vec::new();
    for text in texts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                let i = match families.iter().position(|f| f.0 == name) {
                    Some(i) => i,
                    None => {
                        families.push((name.to_string(), Vec::new(), Vec::new()));
                        families.len() - 1
                    }
                };
                current = Some(i);
                if families[i].1.is_empty() {
                    families[i].1.push(line);
                }
                continue;
            }
            let Some(i) = current else { continue };
            if line.starts_with('#') {
                // TYPE and UNIT, once.
                if families[i].2.is_empty() && !families[i].1.contains(&line) {
                    families[i].1.push(line);
                }
            } else {
                families[i].2.push(line);
            }
        }
    }
    let mut out = String::new();
    for (_, descriptor, samples) in &families {
        for line in descriptor.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A cluster archive's readiness: every running shard's archiver is ready
/// ([`Metrics::archive_ready`]); `Err` names those that are not, and why.
pub fn shards_ready() -> Result<(), String> {
    let shards = running_shards();
    if shards.is_empty() {
        return Err("no shard is being archived yet".into());
    }
    let not: Vec<String> = shards
        .iter()
        .filter_map(|(id, m)| {
            m.archive_ready()
                .err()
                .map(|why| format!("shard {id}: {why}"))
        })
        .collect();
    if not.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} shards not ready: {}",
        not.len(),
        shards.len(),
        not.join("; ")
    ))
}

/// An error starting the metrics server.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct ServeError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// What `/readyz` asks: `Err` with a one-line reason when not ready.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Listens on `addr` (`host:port`) and serves `/metrics` ([`exposition`]),
/// `/healthz` (200 while the process runs) and `/readyz` (`ready`: 200, or 503 with the
/// reason) until `stop` is cancelled. Returns the address it listens on.
pub async fn serve(
    addr: &str,
    ready: Readiness,
    stop: tokio_util::sync::CancellationToken,
) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError {
        addr: addr.to_string(),
        source,
    })?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let ready = ready.clone();
            let service = hyper::service::service_fn(move |req| {
                let ready = ready.clone();
                async move { Ok::<_, Infallible>(respond(&req, &ready)) }
            });
            let stop = stop.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(local)
}

fn respond<B>(req: &Request<B>, ready: &Readiness) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(exposition())))
            .expect("a valid response"),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.replace('\n', " ")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_as_documented() {
        let text = global().encode();
        for name in [
            "pitr_link_up",
            "pitr_link_reconnects_total{cause=\"full_resync\"}",
            "pitr_received_offset",
            "pitr_durable_offset",
            "pitr_recovery_point_bytes",
            "pitr_recovery_point_seconds",
            "pitr_uploaded_objects_total{kind=\"segment\"}",
            "pitr_uploaded_bytes_total{kind=\"lease\"}",
            "pitr_store_errors_total{kind=\"timeout\"}",
            "pitr_upload_duration_seconds_count{kind=\"compacted\"}",
            "pitr_buffered_bytes",
            "pitr_newest_snapshot_age_seconds",
            "pitr_compaction_backlog_objects",
            "pitr_window_start_timestamp_seconds",
            "pitr_window_end_timestamp_seconds",
            "pitr_retention_seconds",
            "pitr_lease_held",
            "pitr_build_info{version=\"",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("# HELP pitr_recovery_point_seconds "));
    }

    #[test]
    fn the_recovery_point_follows_received_and_durable_bytes() {
        let m = Metrics::new();
        m.stream_at(3, 100);
        let t = now_ms();
        m.received(3, 150, t - 5_000);
        m.received(3, 180, t - 1_000);
        m.sample();
        assert_eq!(m.recovery_point_bytes.get(), 80);
        let age = m.recovery_point_seconds.get();
        assert!((4.5..60.0).contains(&age), "{age}");
        m.durable(3, 150);
        m.sample();
        assert_eq!(m.recovery_point_bytes.get(), 30);
        let age = m.recovery_point_seconds.get();
        assert!((0.5..4.5).contains(&age), "{age}");
        // Another generation's durable point is not this stream's.
        m.durable(2, 1_000);
        assert_eq!(m.durable_offset.get(), 150);
        m.durable(3, 180);
        m.sample();
        assert_eq!(m.recovery_point_bytes.get(), 0);
        assert_eq!(m.recovery_point_seconds.get(), 0.0);
        m.link_attached();
        assert_eq!(m.archive_ready(), Ok(()));
        m.link_down("connecting");
        assert!(m.archive_ready().unwrap_err().contains("connecting"));
    }

    #[test]
    fn shards_are_served_with_their_label_each_family_once() {
        let a = shard("unit-shard-a");
        let b = shard("unit-shard-b");
        a.link_attached();
        a.stream_at(1, 500);
        b.stream_at(1, 70);
        b.reconnect(Cause::Timeout);
        let text = encode_shards(&[a.handle(), b.handle()]);
        for family in [
            "pitr_link_up",
            "pitr_link_reconnects",
            "pitr_upload_duration_seconds",
            "pitr_build_info",
        ] {
            let help = format!("# HELP {family} ");
            assert_eq!(text.matches(&help).count(), 1, "{family}:\n{text}");
            let ty = format!("# TYPE {family} ");
            assert_eq!(text.matches(&ty).count(), 1, "{family}:\n{text}");
        }
        for line in [
            "pitr_link_up{shard=\"unit-shard-a\"} 1",
            "pitr_link_up{shard=\"unit-shard-b\"} 0",
            "pitr_received_offset{shard=\"unit-shard-a\"} 500",
            "pitr_received_offset{shard=\"unit-shard-b\"} 70",
            "pitr_link_reconnects_total{shard=\"unit-shard-b\",cause=\"timeout\"} 1",
            "pitr_link_reconnects_total{shard=\"unit-shard-a\",cause=\"timeout\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        // The samples of a family follow its descriptor, before the next family's.
        let up = text.find("# HELP pitr_link_up ").unwrap();
        let next = text.find("# HELP pitr_link_reconnects ").unwrap();
        let b_up = text.find("pitr_link_up{shard=\"unit-shard-b\"}").unwrap();
        assert!(up < b_up && b_up < next, "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("pitr_build_info"))
                .count(),
            1
        );
        assert!(!text.lines().any(|l| l.starts_with("pitr_link_up ")));
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);

        // Ready when every running shard is; the others are named.
        b.link_down("connecting");
        let why = shards_ready().unwrap_err();
        assert!(
            why.contains("shard unit-shard-b: not attached to the master: connecting"),
            "{why}"
        );
        assert!(!why.contains("unit-shard-a"), "{why}");
        // A shard whose holder is gone is not served, and no longer asked.
        drop(b);
        assert!(!running_shards().iter().any(|(id, _)| id == "unit-shard-b"));
        assert!(!shards_ready()
            .err()
            .unwrap_or_default()
            .contains("unit-shard-b"));
        // It comes back with its counters.
        let b = shard("unit-shard-b");
        let text = encode_shards(&[b.handle()]);
        assert!(
            text.lines()
                .any(|l| l
                    == "pitr_link_reconnects_total{shard=\"unit-shard-b\",cause=\"timeout\"} 1")
        );
        drop(a);
    }

    #[test]
    fn store_errors_are_sorted_by_kind() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert_eq!(store_error_kind(&nf), "not_found");
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let g = object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        };
        assert_eq!(store_error_kind(&g), "timeout");
        let g = object_store::Error::Generic {
            store: "S3",
            source: "boom".into(),
        };
        assert_eq!(store_error_kind(&g), "other");
    }
}
