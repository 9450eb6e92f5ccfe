//! One writer per archive. A process that writes to an archive (or, later, deletes from it)
//! first takes its lease: a small JSON object at `<archive name>/lease` naming the holder (a
//! random id per process, the host, the pid and the command) and when the lease expires. The
//! holder renews it every [`LeaseConfig::renew_every`]; a process that finds a live lease held
//! by another refuses to start ([`LeaseError::Held`]), one that finds an expired lease takes it
//! over. `--takeover` takes a live lease at once, for a holder known to be gone; if that holder
//! still runs, its next renewal finds another holder and it stops ([`LeaseError::Lost`]).
//!
//! Writes are conditional where the store supports it: the lease is created with
//! `PutMode::Create` and renewed or taken over with `PutMode::Update` against the version last
//! read. A local directory refuses `Update` (`NotImplemented`) and some S3-compatible stores
//! accept a second `Create` and overwrite; so every write is also read back, and the holder
//! id found must be ours. What that leaves racy is written down in `docs/format.md` ("Lease").
//!
//! The holder stops writing once its last successful renewal is older than the time to live
//! minus a safety margin ([`Lease::is_valid`], shared with the uploaders through a
//! [`LeaseGuard`]), so that it has stopped before any other process may see the lease as
//! expired. Every store call has a timeout; errors name the lease object and the store URL
//! (without credentials).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::archive::store::{redact_store_url, Store};

/// The lease object's name under the archive's prefix. It never parses as an archive object
/// name (those start with a generation directory).
pub const LEASE_OBJECT: &str = "lease";
/// Time to live of a lease unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The shortest time to live accepted.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The version of the lease's JSON body.
pub const LEASE_VERSION: u32 = 1;

/// The command that holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseCommand {
    Archive,
    Compact,
    Prune,
    /// `pitr ship`, writing a copy of another archive into this one.
    Ship,
}

impl LeaseCommand {
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseCommand::Archive => "archive",
            LeaseCommand::Compact => "compact",
            LeaseCommand::Prune => "prune",
            LeaseCommand::Ship => "ship",
        }
    }
}

impl std::fmt::Display for LeaseCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a lease is taken and kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease lives after its last renewal.
    pub ttl: Duration,
    /// Take a live lease held by another process (one known to be gone).
    pub takeover: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: DEFAULT_TTL,
            takeover: false,
        }
    }
}

impl LeaseConfig {
    /// How often the holder renews: a sixth of the time to live (5 s of 30 s).
    pub fn renew_every(&self) -> Duration {
        self.ttl / 6
    }

    /// How long before the lease's expiry the holder stops writing: a sixth of the time to
    /// live (5 s of 30 s). It covers a clock of another host that runs ahead by less, and the
    /// delay between the holder's last check and its write reaching the store.
    pub fn margin(&self) -> Duration {
        self.ttl / 6
    }

    /// The longest wait for one store call of the lease: a sixth of the time to live, from 1 s
    /// to 10 s.
    pub fn op_timeout(&self) -> Duration {
        (self.ttl / 6).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// What the archiver vouches for at a renewal: at `ms`, the master had nothing beyond `offset`
/// of `generation`, and everything before it was durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vouched {
    pub generation: u64,
    pub offset: u64,
    pub ms: u64,
}

/// The lease object's body (JSON; `docs/format.md`, "Lease").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub version: u32,
    /// A random id of the holding process.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// `archive`, `compact` or `prune`.
    pub command: String,
    pub acquired_ms: u64,
    pub renewed_ms: u64,
    /// `renewed_ms` plus the holder's time to live.
    pub expires_ms: u64,
    /// The archiver's last vouched point (see [`Vouched`]); absent until it has one.
    #[serde(default)]
    pub vouched_generation: Option<u64>,
    #[serde(default)]
    pub vouched_offset: Option<u64>,
    #[serde(default)]
    pub vouched_ms: Option<u64>,
}

impl LeaseInfo {
    /// The vouched point, when the archiver has one: generation, offset, time.
    pub fn vouched_point(&self) -> Option<(crate::archive::names::GenerationId, u64, u64)> {
        match (
            self.vouched_generation,
            self.vouched_offset,
            self.vouched_ms,
        ) {
            (Some(g), Some(o), Some(ms)) => Some((crate::archive::names::GenerationId(g), o, ms)),
            _ => None,
        }
    }

    /// Whether the lease is live at `now_ms` (by this host's clock).
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds a live lease.
    #[error("the archive is held: lease {object} names `pitr {command}` with pid {pid} on host {host} (holder {holder}), live until {expires}; only one writer may run: stop it, or if it is gone, pass --takeover")]
    Held {
        object: String,
        holder: String,
        host: String,
        pid: u32,
        command: String,
        /// RFC 3339.
        expires: String,
    },
    /// Another process took the lease over: this one must stop writing.
    #[error("the lease {object} was taken over by `pitr {command}` with pid {pid} on host {host} (holder {holder}): stopping, this process may not write to the archive any more")]
    Lost {
        object: String,
        holder: String,
        host: String,
        pid: u32,
        command: String,
    },
    /// Renewals failed until the lease was about to expire.
    #[error("the lease {object} could not be renewed for {since_ms} ms (time to live {ttl_ms} ms): stopping before it expires, so that another writer may start; last error: {last_error}")]
    Expired {
        object: String,
        since_ms: u64,
        ttl_ms: u64,
        last_error: String,
    },
    /// A write refused because the lease is no longer valid.
    #[error("not writing {writing}: the lease {object} is no longer held")]
    NotHeld { object: String, writing: String },
    /// Another process wrote the lease each time this one tried.
    #[error("the lease {object} kept changing while it was being taken: another writer is starting at the same moment")]
    Contended { object: String },
    /// The lease object is not a lease this version can read.
    #[error("the lease {object} cannot be read: {reason}; pass --takeover to replace it")]
    Unreadable { object: String, reason: String },
    #[error("{op} {object}: {source}")]
    Store {
        op: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{op} {object}: no answer within {} ms", after.as_millis())]
    Timeout {
        op: &'static str,
        object: String,
        after: Duration,
    },
}

impl LeaseError {
    /// Whether trying again may help (the store failed or was slow).
    pub fn is_transient(&self) -> bool {
        matches!(self, LeaseError::Store { .. } | LeaseError::Timeout { .. })
    }

    fn held(object: &str, info: &LeaseInfo) -> LeaseError {
        LeaseError::Held {
            object: object.to_string(),
            holder: info.holder.clone(),
            host: info.host.clone(),
            pid: info.pid,
            command: info.command.clone(),
            expires: fmt_ms(info.expires_ms),
        }
    }

    fn lost(object: &str, info: Option<&LeaseInfo>) -> LeaseError {
        let unknown = || "unknown".to_string();
        LeaseError::Lost {
            object: object.to_string(),
            holder: info.map_or_else(unknown, |i| i.holder.clone()),
            host: info.map_or_else(unknown, |i| i.host.clone()),
            pid: info.map_or(0, |i| i.pid),
            command: info.map_or_else(unknown, |i| i.command.clone()),
        }
    }
}

/// Milliseconds since the epoch as RFC 3339.
fn fmt_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms} ms"), |t| t.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether the holder may still write, shared with whatever writes for it.
///
/// A lease that lapsed because the store did not answer is only paused: its holder keeps
/// trying to renew it, and writers wait ([`wait_valid`](LeaseGuard::wait_valid)) until it is
/// renewed, as they wait for the store itself. A lease taken over or given up is gone for good.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    until: Arc<Mutex<Instant>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
    object: Arc<str>,
}

impl LeaseGuard {
    /// Whether the lease is still valid: its last successful renewal is younger than the time
    /// to live minus the margin.
    pub fn is_valid(&self) -> bool {
        !self.is_gone() && Instant::now() < self.until()
    }

    /// Whether the lease is gone for good (taken over, or given up).
    pub fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn end(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(Instant::now());
    }

    /// Waits while the lease is lapsed but may be renewed; `Err` for a write of `writing` once
    /// it is gone for good.
    pub async fn wait_valid(&self, writing: &str) -> Result<(), LeaseError> {
        let mut waited = false;
        loop {
            if self.is_valid() {
                if waited {
                    tracing::info!(lease = %self.object, "the lease is renewed: writing again");
                }
                return Ok(());
            }
            self.check(&writing)
                .or_else(|e| if self.is_gone() { Err(e) } else { Ok(()) })?;
            if !waited {
                tracing::warn!(lease = %self.object, writing = %writing,
                    "the lease lapsed (the store did not answer its renewals): waiting until it is renewed");
                waited = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn until(&self) -> Instant {
        match self.until.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    fn set(&self, until: Instant) {
        match self.until.lock() {
            Ok(mut g) => *g = until,
            Err(p) => *p.into_inner() = until,
        }
    }

    /// `Ok` while valid; otherwise the error for a refused write of `writing`.
    pub fn check(&self, writing: &dyn std::fmt::Display) -> Result<(), LeaseError> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(LeaseError::NotHeld {
                object: self.object.to_string(),
                writing: writing.to_string(),
            })
        }
    }
}

/// The lease object as read: its body (or why it cannot be read) and its version.
struct Fetched {
    body: Result<LeaseInfo, String>,
    version: UpdateVersion,
}

enum Written {
    Done,
    /// Another process wrote the lease since it was read (or created it first).
    Conflict,
}

/// Where the lease lives, and how long a store call may take.
struct Place {
    backend: Arc<dyn ObjectStore>,
    path: Path,
    /// For messages: the lease's path and the store URL without credentials.
    object: String,
    timeout: Duration,
    /// Cleared once the store refused a conditional update.
    conditional: bool,
    /// The store's metrics.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Place {
    fn new(store: &Store, timeout: Duration) -> Place {
        let path = store.lease_path();
        Place {
            backend: store.backend().clone(),
            object: format!("{path} in {}", redact_store_url(store.url())),
            path,
            timeout,
            conditional: true,
            metrics: store.metrics_handle(),
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, LeaseError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| {
            self.metrics.store_error_of_kind("timeout");
            LeaseError::Timeout {
                op,
                object: self.object.clone(),
                after: self.timeout,
            }
        })
    }

    fn store_err(&self, op: &'static str, source: object_store::Error) -> LeaseError {
        self.metrics.store_error(&source);
        LeaseError::Store {
            op,
            object: self.object.clone(),
            source,
        }
    }

    /// Reads the lease; `None` when there is none.
    async fn fetch(&self) -> Result<Option<Fetched>, LeaseError> {
        let body = async {
            let r = self.backend.get(&self.path).await?;
            let version = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            Ok((r.bytes().await?, version))
        };
        match self.timed("get", body).await? {
            Ok((bytes, version)) => Ok(Some(Fetched {
                body: parse(&bytes),
                version,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("get", e)),
        }
    }

    /// Writes `info` with `mode`; an unconditional write where the store refuses conditions.
    async fn put(&mut self, info: &LeaseInfo, mode: PutMode) -> Result<Written, LeaseError> {
        let body = serde_json::to_vec_pretty(info).map_err(|e| LeaseError::Unreadable {
            object: self.object.clone(),
            reason: format!("encoding: {e}"),
        })?;
        let mode = match mode {
            PutMode::Update(_) if !self.conditional => PutMode::Overwrite,
            m => m,
        };
        let opts = PutOptions {
            mode: mode.clone(),
            ..Default::default()
        };
        let payload = PutPayload::from(body.clone());
        let started = Instant::now();
        let uploaded = |took: Duration| {
            self.metrics
                .uploaded(crate::metrics::Upload::Lease, body.len() as u64, took)
        };
        match self
            .timed("put", self.backend.put_opts(&self.path, payload, opts))
            .await?
        {
            Ok(_) => {
                uploaded(started.elapsed());
                Ok(Written::Done)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Written::Conflict),
            Err(object_store::Error::NotImplemented { .. }) if mode != PutMode::Overwrite => {
                // A local directory has no conditional update: read-after-write only.
                if matches!(mode, PutMode::Update(_)) {
                    self.conditional = false;
                }
                let payload = PutPayload::from(body.clone());
                let started = Instant::now();
                match self
                    .timed("put", self.backend.put(&self.path, payload))
                    .await?
                {
                    Ok(_) => {
                        uploaded(started.elapsed());
                        Ok(Written::Done)
                    }
                    Err(e) => Err(self.store_err("put", e)),
                }
            }
            Err(e) => Err(self.store_err("put", e)),
        }
    }

    /// Writes `info` and reads it back. `Ok(Ok(version))`: the lease is ours, at `version`;
    /// `Ok(Err(found))`: another write won (what it wrote, if readable).
    async fn write_checked(
        &mut self,
        info: &LeaseInfo,
        mode: PutMode,
    ) -> Result<Result<UpdateVersion, Option<LeaseInfo>>, LeaseError> {
        let conflict = matches!(self.put(info, mode).await?, Written::Conflict);
        match self.fetch().await? {
            Some(Fetched {
                body: Ok(found),
                version,
            }) => {
                if !conflict && found.holder == info.holder {
                    Ok(Ok(version))
                } else {
                    Ok(Err(Some(found)))
                }
            }
            Some(Fetched { body: Err(_), .. }) | None => Ok(Err(None)),
        }
    }
}

fn parse(bytes: &[u8]) -> Result<LeaseInfo, String> {
    let info: LeaseInfo = serde_json::from_slice(bytes).map_err(|e| format!("not a lease: {e}"))?;
    if info.version != LEASE_VERSION {
        return Err(format!(
            "lease version {} (this version reads {LEASE_VERSION})",
            info.version
        ));
    }
    Ok(info)
}

/// A random id for this process's lease.
fn new_holder_id() -> String {
    crate::random_hex(16)
}

/// This host's name, as far as it can be told without a system call.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// A lease this process holds.
pub struct Lease {
    place: Place,
    cfg: LeaseConfig,
    info: LeaseInfo,
    /// The lease object's version as last read back, for the next conditional update.
    version: UpdateVersion,
    guard: LeaseGuard,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("object", &self.place.object)
            .field("info", &self.info)
            .finish()
    }
}

/// Attempts at taking a lease that others keep writing.
const ACQUIRE_ATTEMPTS: usize = 3;

impl Lease {
    /// Takes the archive's lease for `command`: when there is none, when it has expired (logged
    /// naming the previous holder), or with `cfg.takeover`. A live lease of another process is
    /// [`LeaseError::Held`], naming it.
    pub async fn acquire(
        store: &Store,
        command: LeaseCommand,
        cfg: LeaseConfig,
    ) -> Result<Lease, LeaseError> {
        let mut place = Place::new(store, cfg.op_timeout());
        let holder = new_holder_id();
        let host = host_name();
        for _ in 0..ACQUIRE_ATTEMPTS {
            let current = place.fetch().await?;
            let now = now_ms();
            let mode = match current {
                None => PutMode::Create,
                Some(f) => {
                    match &f.body {
                        Ok(old) if old.is_live(now) && !cfg.takeover => {
                            return Err(LeaseError::held(&place.object, old))
                        }
                        Ok(old) if old.is_live(now) => tracing::warn!(
                            lease = %place.object, holder = %old.holder, host = %old.host,
                            pid = old.pid, command = %old.command,
                            expires_in_ms = old.expires_ms - now,
                            "taking over a live lease (--takeover): if that process still runs, it stops at its next renewal"
                        ),
                        Ok(old) => tracing::warn!(
                            lease = %place.object, holder = %old.holder, host = %old.host,
                            pid = old.pid, command = %old.command,
                            expired_ms_ago = now - old.expires_ms,
                            "taking over an expired lease: its holder stopped without releasing it"
                        ),
                        Err(reason) if !cfg.takeover => {
                            return Err(LeaseError::Unreadable {
                                object: place.object.clone(),
                                reason: reason.clone(),
                            })
                        }
                        Err(reason) => tracing::warn!(
                            lease = %place.object, %reason,
                            "replacing an unreadable lease (--takeover)"
                        ),
                    }
                    PutMode::Update(f.version)
                }
            };
            let info = LeaseInfo {
                version: LEASE_VERSION,
                holder: holder.clone(),
                host: host.clone(),
                pid: std::process::id(),
                command: command.as_str().to_string(),
                acquired_ms: now,
                renewed_ms: now,
                expires_ms: now + cfg.ttl.as_millis() as u64,
                vouched_generation: None,
                vouched_offset: None,
                vouched_ms: None,
            };
            let started = Instant::now();
            match place.write_checked(&info, mode).await? {
                Ok(version) => {
                    let guard = LeaseGuard {
                        until: Arc::new(Mutex::new(started + cfg.ttl - cfg.margin())),
                        gone: Arc::default(),
                        object: place.object.as_str().into(),
                    };
                    tracing::info!(lease = %place.object, %holder, ttl_ms = cfg.ttl.as_millis() as u64,
                        conditional = place.conditional, "lease acquired");
                    return Ok(Lease {
                        place,
                        cfg,
                        info,
                        version,
                        guard,
                    });
                }
                // Another process wrote meanwhile: look again (it is live, so refused, unless
                // taking over).
                Err(found) => {
                    if let Some(found) = found {
                        if !cfg.takeover {
                            return Err(LeaseError::held(&place.object, &found));
                        }
                    }
                }
            }
        }
        Err(LeaseError::Contended {
            object: place.object,
        })
    }

    /// The lease as it is in the store, for readers (`ls`); `None` when there is none.
    pub async fn read(store: &Store) -> Result<Option<LeaseInfo>, LeaseError> {
        let place = Place::new(store, LeaseConfig::default().op_timeout());
        match place.fetch().await? {
            None => Ok(None),
            Some(Fetched { body: Ok(info), .. }) => Ok(Some(info)),
            Some(Fetched {
                body: Err(reason), ..
            }) => Err(LeaseError::Unreadable {
                object: place.object,
                reason,
            }),
        }
    }

    /// What this process last wrote.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// The lease object and store, for messages.
    pub fn object(&self) -> &str {
        &self.place.object
    }

    pub fn config(&self) -> LeaseConfig {
        self.cfg
    }

    /// Whether this process may still write: its last successful renewal is younger than the
    /// time to live minus the margin.
    pub fn is_valid(&self) -> bool {
        self.guard.is_valid()
    }

    /// A handle that tells writers whether the lease is still valid.
    pub fn guard(&self) -> LeaseGuard {
        self.guard.clone()
    }

    /// The lease is gone for good: taken over, or given up.
    fn invalidate(&self) {
        self.guard.end();
    }

    /// Renews the lease, with `vouched` when given (otherwise the previous vouched values
    /// stay). Another holder found is [`LeaseError::Lost`], and the lease is invalid from then
    /// on; store errors and timeouts leave it valid until it lapses.
    pub async fn renew(&mut self, vouched: Option<Vouched>) -> Result<(), LeaseError> {
        let mode = match self.place.fetch().await? {
            None if !self.guard.is_valid() => {
                // Lapsed, then removed: another writer may have held it and released it
                // meanwhile, so this one may not simply go on.
                self.invalidate();
                return Err(LeaseError::lost(&self.place.object, None));
            }
            None => {
                // Removed (the store emptied?) while held: nobody else holds it; create it
                // again.
                tracing::warn!(lease = %self.place.object, "the lease is gone from the store; writing it again");
                PutMode::Create
            }
            Some(Fetched {
                body: Ok(found), ..
            }) if found.holder != self.info.holder => {
                self.invalidate();
                return Err(LeaseError::lost(&self.place.object, Some(&found)));
            }
            Some(Fetched { body: Err(_), .. }) => {
                self.invalidate();
                return Err(LeaseError::lost(&self.place.object, None));
            }
            Some(Fetched { version, .. }) => PutMode::Update(version),
        };
        let now = now_ms();
        let mut info = self.info.clone();
        info.renewed_ms = now;
        info.expires_ms = now + self.cfg.ttl.as_millis() as u64;
        if let Some(v) = vouched {
            info.vouched_generation = Some(v.generation);
            info.vouched_offset = Some(v.offset);
            info.vouched_ms = Some(v.ms);
        }
        let started = Instant::now();
        match self.place.write_checked(&info, mode).await? {
            Ok(version) => {
                self.version = version;
                self.info = info;
                self.guard.set(started + self.cfg.ttl - self.cfg.margin());
                Ok(())
            }
            Err(found) => {
                self.invalidate();
                Err(LeaseError::lost(&self.place.object, found.as_ref()))
            }
        }
    }

    /// Keeps the lease: renews it every [`LeaseConfig::renew_every`] with the latest value of
    /// `vouched`, retrying failed renewals sooner. Returns the lease when `stop` is cancelled
    /// (to be released), or the error that ends it: taken over, or not renewed before it would
    /// lapse ([`LeaseError::Expired`], returned as soon as it lapses).
    pub async fn keep(
        mut self,
        vouched: watch::Receiver<Option<Vouched>>,
        stop: CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let every = self.cfg.renew_every();
        let retry = (every / 5).max(Duration::from_millis(50));
        let mut next = Instant::now() + every;
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(self),
                _ = tokio::time::sleep_until(next) => {}
            }
            let lapses = self.guard.until();
            // Once lapsed, a renewal is simply tried again: there is nothing left to race.
            let paused = Instant::now() >= lapses;
            let lapse = async {
                if paused {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep_until(lapses).await
                }
            };
            let v = *vouched.borrow();
            let r = tokio::select! {
                _ = stop.cancelled() => return Ok(self),
                _ = lapse => None,
                r = self.renew(v) => Some(r),
            };
            match r {
                Some(Ok(())) => {
                    if last_error.take().is_some() {
                        tracing::info!(lease = %self.place.object, "lease renewed again");
                    }
                    next = Instant::now() + every;
                }
                Some(Err(e)) if e.is_transient() && self.is_valid() => {
                    tracing::warn!(lease = %self.place.object, error = %e,
                        retry_in_ms = retry.as_millis() as u64,
                        "renewing the lease failed; retrying");
                    last_error = Some(e.to_string());
                    next = Instant::now() + retry;
                }
                Some(Err(e)) if !e.is_transient() => return Err(e),
                // A failed renewal past the lapse, or the lapse while a renewal waited: writes
                // pause (the guard is no longer valid) and renewals go on, as for a new
                // holder: the lease is ours again only if nobody took it meanwhile.
                other => {
                    if let Some(Err(e)) = other {
                        last_error = Some(e.to_string());
                    }
                    let e = LeaseError::Expired {
                        object: self.place.object.clone(),
                        since_ms: Instant::now()
                            .saturating_duration_since(lapses)
                            .saturating_add(self.cfg.ttl - self.cfg.margin())
                            .as_millis() as u64,
                        ttl_ms: self.cfg.ttl.as_millis() as u64,
                        last_error: last_error
                            .clone()
                            .unwrap_or_else(|| "the store did not answer in time".into()),
                    };
                    if !paused {
                        tracing::error!(error = %e,
                            "the lease lapsed: writes wait until it is renewed (renewals go on)");
                    }
                    next = Instant::now() + every.min(retry * 4);
                }
            }
        }
    }

    /// Takes the lease for `command`, runs `work` with its guard while it is renewed in the
    /// background, and gives it back: what a one-shot writer (`pitr compact`, `pitr prune`)
    /// does. Returns `work`'s result; when the lease was lost meanwhile, `work`'s error if it
    /// failed, otherwise the lease's.
    pub async fn hold_while<T, E, F, Fut>(
        store: &Store,
        command: LeaseCommand,
        cfg: LeaseConfig,
        work: F,
    ) -> Result<T, E>
    where
        E: From<LeaseError>,
        F: FnOnce(LeaseGuard) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let lease = Lease::acquire(store, command, cfg).await?;
        let guard = lease.guard();
        let (_vouch, vouched) = watch::channel(None);
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(lease.keep(vouched, stop.clone()));
        let result = work(guard).await;
        stop.cancel();
        match keeper.await {
            Ok(Ok(lease)) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!(error = %e, "could not release the lease: it expires on its own");
                }
            }
            Ok(Err(e)) => {
                let _ = result?;
                return Err(e.into());
            }
            Err(e) => tracing::warn!(error = %e, "the lease renewal failed"),
        }
        result
    }

    /// Gives the lease up: deletes it if it is still ours. Writers see it invalid at once.
    pub async fn release(self) -> Result<(), LeaseError> {
        self.invalidate();
        match self.place.fetch().await? {
            Some(Fetched {
                body: Ok(found), ..
            }) if found.holder == self.info.holder => {}
            _ => return Ok(()),
        }
        match self
            .place
            .timed("delete", self.place.backend.delete(&self.place.path))
            .await?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                tracing::info!(lease = %self.place.object, "lease released");
                Ok(())
            }
            Err(e) => Err(self.place.store_err("delete", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Store {
        Store::open("memory://", &"a".parse().unwrap()).unwrap()
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig::default()
    }

    fn takeover() -> LeaseConfig {
        LeaseConfig {
            takeover: true,
            ..cfg()
        }
    }

    /// Writes a lease body as another process would have.
    async fn put_info(store: &Store, info: &LeaseInfo) {
        store
            .backend()
            .put(
                &store.lease_path(),
                serde_json::to_vec(info).unwrap().into(),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn acquires_an_absent_lease_and_refuses_a_second_naming_the_holder() {
        let store = memory();
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        assert!(lease.is_valid());
        let info = Lease::read(&store).await.unwrap().expect("a lease");
        assert_eq!(&info, lease.info());
        assert_eq!(info.command, "archive");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.holder.len(), 32);
        assert_eq!(info.expires_ms - info.renewed_ms, 30_000);
        let e = Lease::acquire(&store, LeaseCommand::Compact, cfg())
            .await
            .unwrap_err();
        match &e {
            LeaseError::Held {
                holder,
                pid,
                host,
                command,
                ..
            } => {
                assert_eq!(holder, &info.holder);
                assert_eq!(*pid, info.pid);
                assert_eq!(host, &info.host);
                assert_eq!(command, "archive");
            }
            other => panic!("expected Held, got {other}"),
        }
        let text = e.to_string();
        assert!(text.contains(&format!("pid {}", info.pid)), "{text}");
        assert!(text.contains("a/lease in memory://"), "{text}");
        assert!(text.contains("--takeover"), "{text}");
        // Released: gone, and the next one takes it.
        lease.release().await.unwrap();
        assert_eq!(Lease::read(&store).await.unwrap(), None);
        Lease::acquire(&store, LeaseCommand::Compact, cfg())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_and_the_old_holder_fails_its_renewal() {
        let store = memory();
        let mut old = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        // Its holder stopped renewing long ago.
        let mut stale = old.info().clone();
        stale.renewed_ms -= 100_000;
        stale.expires_ms -= 100_000;
        put_info(&store, &stale).await;
        let new = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        assert_ne!(new.info().holder, old.info().holder);
        let e = old.renew(None).await.unwrap_err();
        match &e {
            LeaseError::Lost { holder, .. } => assert_eq!(holder, &new.info().holder),
            other => panic!("expected Lost, got {other}"),
        }
        assert!(!old.is_valid());
        // The old holder's release leaves the new lease alone.
        old.release().await.unwrap();
        assert_eq!(
            Lease::read(&store).await.unwrap().unwrap().holder,
            new.info().holder
        );
    }

    #[tokio::test]
    async fn takeover_takes_a_live_lease_and_the_old_holder_stops() {
        let store = memory();
        let mut old = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let mut new = Lease::acquire(&store, LeaseCommand::Archive, takeover())
            .await
            .unwrap();
        assert!(matches!(
            old.renew(None).await.unwrap_err(),
            LeaseError::Lost { .. }
        ));
        assert!(!old.is_valid());
        assert!(!old.guard().is_valid());
        let v = Vouched {
            generation: 1,
            offset: 99,
            ms: 1234,
        };
        new.renew(Some(v)).await.unwrap();
        let info = Lease::read(&store).await.unwrap().unwrap();
        assert_eq!(
            (
                info.vouched_generation,
                info.vouched_offset,
                info.vouched_ms
            ),
            (Some(1), Some(99), Some(1234))
        );
        // A renewal without a vouched point keeps the previous one.
        new.renew(None).await.unwrap();
        let info = Lease::read(&store).await.unwrap().unwrap();
        assert_eq!(info.vouched_offset, Some(99));
        assert!(new.is_valid());
    }

    #[tokio::test]
    async fn an_unreadable_lease_is_refused_unless_taken_over() {
        let store = memory();
        store
            .backend()
            .put(&store.lease_path(), b"{not json".to_vec().into())
            .await
            .unwrap();
        let e = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap_err();
        assert!(matches!(e, LeaseError::Unreadable { .. }), "{e}");
        assert!(Lease::read(&store).await.is_err());
        Lease::acquire(&store, LeaseCommand::Archive, takeover())
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_invalid_after_missed_renewals() {
        let store = memory();
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let guard = lease.guard();
        // Valid for the time to live minus the margin after the last renewal: 25 s of 30 s.
        tokio::time::advance(Duration::from_secs(24)).await;
        assert!(lease.is_valid() && guard.is_valid());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!lease.is_valid());
        assert!(!guard.is_valid());
        let e = guard.check(&"segment x").unwrap_err();
        assert!(e.to_string().contains("not writing segment x"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn keep_renews_and_returns_the_lease_when_stopped() {
        let store = memory();
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let guard = lease.guard();
        let first = lease.info().renewed_ms;
        let (vtx, vrx) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(lease.keep(vrx, stop.clone()));
        vtx.send_replace(Some(Vouched {
            generation: 2,
            offset: 7,
            ms: 8,
        }));
        // Far past the first validity: renewals keep it.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert!(guard.is_valid());
        let info = Lease::read(&store).await.unwrap().unwrap();
        assert_eq!(info.vouched_offset, Some(7));
        assert!(info.renewed_ms >= first);
        stop.cancel();
        let lease = task.await.unwrap().unwrap();
        lease.release().await.unwrap();
        assert!(!guard.is_valid());
        assert_eq!(Lease::read(&store).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_ends_with_lost_when_taken_over() {
        let store = memory();
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let guard = lease.guard();
        let (_vtx, vrx) = watch::channel(None);
        let task = tokio::spawn(lease.keep(vrx, CancellationToken::new()));
        let new = Lease::acquire(&store, LeaseCommand::Archive, takeover())
            .await
            .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("keep ends")
            .unwrap()
            .unwrap_err();
        match e {
            LeaseError::Lost { holder, .. } => assert_eq!(holder, new.info().holder),
            other => panic!("expected Lost, got {other}"),
        }
        assert!(!guard.is_valid());
    }

    /// A store that stops answering: renewals time out, and the lease lapses once the last
    /// renewal is older than the time to live minus the margin, not later; writers then wait
    /// (it is not gone), and once the store answers again the same holder renews it and
    /// writes go on.
    #[tokio::test(start_paused = true)]
    async fn a_lease_lapses_while_the_store_is_silent_and_is_renewed_when_it_answers() {
        use object_store::memory::InMemory;
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        let slow = Arc::new(ThrottledStore::new(
            InMemory::new(),
            ThrottleConfig::default(),
        ));
        let store = Store::with_backend(slow.clone(), "memory://", &"a".parse().unwrap());
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let guard = lease.guard();
        let acquired = Instant::now();
        let (_vtx, vrx) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(lease.keep(vrx, stop.clone()));
        slow.config_mut(|c| c.wait_get_per_call = Duration::from_secs(3600));
        while guard.is_valid() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lapsed = acquired.elapsed();
        assert!(
            lapsed >= Duration::from_secs(25) && lapsed < Duration::from_secs(26),
            "{lapsed:?}"
        );
        assert!(!guard.is_gone());
        // A writer waits; the store answers again; the write goes on.
        let writer = {
            let guard = guard.clone();
            tokio::spawn(async move { guard.wait_valid("a segment").await })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!writer.is_finished());
        slow.config_mut(|c| c.wait_get_per_call = Duration::ZERO);
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("the writer goes on")
            .unwrap()
            .unwrap();
        assert!(guard.is_valid());
        stop.cancel();
        let lease = task.await.unwrap().unwrap();
        lease.release().await.unwrap();
        assert!(guard.is_gone());
        assert!(guard.wait_valid("more").await.is_err());
    }

    /// A lease that lapsed and was taken by another holder meanwhile is not renewed: the old
    /// holder's renewal finds the new one and ends with `Lost`.
    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_taken_meanwhile_is_lost() {
        use object_store::memory::InMemory;
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        let mem = Arc::new(InMemory::new());
        let slow = Arc::new(ThrottledStore::new(mem.clone(), ThrottleConfig::default()));
        let store = Store::with_backend(slow.clone(), "memory://", &"a".parse().unwrap());
        let other = Store::with_backend(mem, "memory://", &"a".parse().unwrap());
        let lease = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        let guard = lease.guard();
        let (_vtx, vrx) = watch::channel(None);
        let task = tokio::spawn(lease.keep(vrx, CancellationToken::new()));
        slow.config_mut(|c| c.wait_get_per_call = Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(!guard.is_valid());
        // Taken over (the test's clock is paused; by the store's clock the lease is live).
        let new = Lease::acquire(&other, LeaseCommand::Archive, takeover())
            .await
            .unwrap();
        slow.config_mut(|c| c.wait_get_per_call = Duration::ZERO);
        let e = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("keep ends")
            .unwrap()
            .unwrap_err();
        match e {
            LeaseError::Lost { holder, .. } => assert_eq!(holder, new.info().holder),
            other => panic!("expected Lost, got {other}"),
        }
        assert!(guard.is_gone());
    }

    /// A local directory creates the lease atomically but has no conditional update: renewals
    /// and takeovers are written, then read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_directory_works_by_reading_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().to_string_lossy(), &"a".parse().unwrap()).unwrap();
        let mut old = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap();
        assert!(dir.path().join("a").join("lease").is_file());
        old.renew(None).await.unwrap();
        assert!(
            !old.place.conditional,
            "a local directory has no conditional update"
        );
        let e = Lease::acquire(&store, LeaseCommand::Archive, cfg())
            .await
            .unwrap_err();
        assert!(matches!(e, LeaseError::Held { .. }), "{e}");
        let new = Lease::acquire(&store, LeaseCommand::Archive, takeover())
            .await
            .unwrap();
        assert!(matches!(
            old.renew(None).await.unwrap_err(),
            LeaseError::Lost { .. }
        ));
        // The listing shows neither an object nor a foreign name for it.
        let listing = store.list().await.unwrap();
        assert!(listing.objects.is_empty() && listing.foreign.is_empty());
        new.release().await.unwrap();
        assert!(!dir.path().join("a").join("lease").exists());
    }

    #[test]
    fn the_lease_is_not_an_archive_object_name() {
        assert!(LEASE_OBJECT
            .parse::<crate::archive::names::ObjectName>()
            .is_err());
    }

    #[test]
    fn timings_follow_the_time_to_live() {
        let c = cfg();
        assert_eq!(c.renew_every(), Duration::from_secs(5));
        assert_eq!(c.margin(), Duration::from_secs(5));
        assert_eq!(c.op_timeout(), Duration::from_secs(5));
        let short = LeaseConfig {
            ttl: Duration::from_secs(2),
            takeover: false,
        };
        assert_eq!(short.op_timeout(), Duration::from_secs(1));
    }
}
