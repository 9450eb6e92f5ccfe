//! Archiving a whole cluster in one process: one [`Archiver`] per shard, each into its own
//! archive, and a topology poller that records the slot ownership over time, tells a shard's
//! archiver when its master moved, and starts or stops archivers as shards come and go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::archive::names::ArchiveName;
use crate::archive::store::{redact_store_url, Store};
use crate::ingest::archiver::{ArchiveConfig, ArchiveError, Archiver};
use crate::net::{Locate, Source};
use crate::ship;

use super::{shard_store, write_record, ClusterSource, Discovery, Shard, Topology, TOPOLOGY_DIR};

/// How often the poller asks the cluster for its topology.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Where one shard's master is now.
pub struct ShardLocate {
    discovery: Arc<Discovery>,
    shard: String,
    moved: watch::Sender<u64>,
}

impl ShardLocate {
    /// Says that the shard's master moved: a link to the old one lets go.
    pub fn bump(&self) {
        self.moved.send_modify(|n| *n += 1);
    }
}

impl Locate for ShardLocate {
    fn master(&self, timeout: Duration) -> BoxFuture<'_, Result<(String, u16), String>> {
        Box::pin(async move {
            let t = tokio::time::timeout(timeout, self.discovery.topology())
                .await
                .map_err(|_| format!("{}: no topology within {timeout:?}", self.describe()))??;
            let s = t
                .shard(&self.shard)
                .ok_or_else(|| format!("{}: the cluster has no such shard now", self.describe()))?;
            Ok((s.master.host.clone(), s.master.port))
        })
    }

    fn moved(&self) -> Option<watch::Receiver<u64>> {
        Some(self.moved.subscribe())
    }

    fn describe(&self) -> String {
        format!("cluster shard {}", self.shard)
    }
}

/// A running shard archiver.
struct Running {
    locate: Arc<ShardLocate>,
    stop: CancellationToken,
    master: String,
}

/// What [`run`] needs besides the per-shard settings.
pub struct ClusterArchive {
    pub source: ClusterSource,
    /// `--store` as given, and `--name`: the shards go to `<store>/<name>/<shard-id>`.
    pub store_url: String,
    pub name: ArchiveName,
    /// The store of `--name` itself, for the topology records.
    pub store: Store,
    /// `--also-to`: the store of `--name` in the store that keeps a copy; each shard's
    /// archive is copied to `<also-to>/<name>/<shard-id>`, and the topology records too.
    pub also_to: Option<Store>,
    /// The settings of every shard's archiver (its source and store are replaced).
    pub template: ArchiveConfig,
}

/// Archives every shard until `shutdown` (then every archiver flushes and stops), or until one
/// of them fails for good (then the others are stopped too, and that error is returned).
pub async fn run(c: ClusterArchive, shutdown: CancellationToken) -> Result<(), ArchiveError> {
    let discovery = Arc::new(Discovery::new(c.source.clone()));
    // The shard names of the last record, so that a shard named by a master that failed over
    // since keeps its archive.
    match super::read_records(&c.store, &c.name).await {
        Ok(records) => {
            if let Some(last) = records.last() {
                discovery.remember(last);
            }
        }
        Err(e) => {
            warn!(error = %e, "the topology records could not be read: shards are named afresh")
        }
    }
    let first = discovery
        .topology()
        .await
        .map_err(|what| crate::ingest::link::LinkError::Locate { what })?;
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut tasks: JoinSet<(String, Result<(), ArchiveError>)> = JoinSet::new();
    let mut last: Option<Topology> = None;
    let mut result = Ok(());
    let mut topology = Some(first);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `--also-to`: the topology records are copied beside the shards' archives.
    let stop_records = CancellationToken::new();
    let records = c.also_to.clone().map(|dst| {
        tokio::spawn(copy_records_until(
            c.store.clone(),
            dst,
            c.name.clone(),
            stop_records.clone(),
        ))
    });
    loop {
        if let Some(t) = topology.take() {
            if last.as_ref().is_none_or(|l| !l.same_as(&t)) {
                let written = match write_record(&c.store, &c.name, &t).await {
                    Ok(path) => {
                        info!(record = %path, shards = t.shards.len(), "cluster topology recorded");
                        true
                    }
                    Err(e) => {
                        warn!(error = %e, "the topology record could not be written; trying again at the next poll");
                        false
                    }
                };
                apply(&c, &discovery, &t, &mut running, &mut tasks);
                if written {
                    last = Some(t);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                match discovery.topology().await {
                    Ok(t) => topology = Some(t),
                    Err(e) => warn!(error = %e, "cluster topology unknown this round"),
                }
            }
            Some(done) = tasks.join_next() => {
                let (shard, r) = match done {
                    Ok(x) => x,
                    Err(e) => (String::new(), Err(ArchiveError::Archive(format!("a shard's archiver failed: {e}")))),
                };
                let stopped = running.get(&shard).is_none_or(|r| r.stop.is_cancelled());
                match r {
                    Ok(()) if stopped => { running.remove(&shard); }
                    Ok(()) => {
                        running.remove(&shard);
                        result = Err(ArchiveError::Archive(format!("the archiver of shard {shard} stopped")));
                        break;
                    }
                    Err(e) => {
                        error!(shard = %shard, error = %e, "a shard's archiver failed: stopping every shard");
                        running.remove(&shard);
                        result = Err(e);
                        break;
                    }
                }
            }
        }
    }
    for r in running.values() {
        r.stop.cancel();
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((shard, Err(e))) = done {
            error!(shard = %shard, error = %e, "a shard's archiver ended with an error");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    stop_records.cancel();
    if let Some(task) = records {
        let _ = task.await;
    }
    result
}

/// Copies the topology records of `name` that `dst` lacks, every [`ship::KEEP_COPY_EVERY`]
/// until `stop`, then once more. A failure is logged and tried again at the next round.
async fn copy_records_until(src: Store, dst: Store, name: ArchiveName, stop: CancellationToken) {
    let to = redact_store_url(dst.url());
    loop {
        let last = stop.is_cancelled();
        match copy_records(&src, &dst, &name).await {
            Ok(0) => {}
            Ok(n) => info!(to = %to, records = n, "--also-to: topology records copied"),
            Err(e) => {
                warn!(to = %to, error = %e, "--also-to: the topology records could not be copied; trying again")
            }
        }
        if last {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(ship::KEEP_COPY_EVERY) => {}
        }
    }
}

/// Copies the topology records (`<name>/cluster/*.json`) that `dst` lacks, create-only (a
/// record is never rewritten). Returns how many it copied.
pub async fn copy_records(src: &Store, dst: &Store, name: &ArchiveName) -> Result<usize, String> {
    let prefix = Path::from(format!("{name}/{TOPOLOGY_DIR}"));
    let list = |s: &Store| {
        let backend = s.backend().clone();
        let prefix = prefix.clone();
        async move {
            backend
                .list(Some(&prefix))
                .try_collect::<Vec<_>>()
                .await
                .map(|v| {
                    v.into_iter()
                        .map(|m| (m.location, m.size))
                        .collect::<Vec<_>>()
                })
        }
    };
    let have: HashMap<Path, u64> = match list(dst).await {
        Ok(v) => v.into_iter().collect(),
        Err(object_store::Error::NotFound { .. }) => HashMap::new(),
        Err(e) => return Err(format!("listing the copy's topology records: {e}")),
    };
    let want = match list(src).await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(format!("listing the topology records: {e}")),
    };
    let mut copied = 0;
    for (path, size) in want {
        if have.get(&path) == Some(&size) || !path.as_ref().ends_with(".json") {
            continue;
        }
        let body = src
            .backend()
            .get(&path)
            .await
            .map_err(|e| format!("reading {path}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("reading {path}: {e}"))?;
        dst.create_root().await.map_err(|e| e.to_string())?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match dst
            .backend()
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => copied += 1,
            // Written by an earlier round whose listing had not shown it yet.
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(format!("writing {path}: {e}")),
        }
    }
    Ok(copied)
}

/// Starts archivers for new shards, stops those of shards that are gone, and tells those whose
/// master changed.
fn apply(
    c: &ClusterArchive,
    discovery: &Arc<Discovery>,
    t: &Topology,
    running: &mut BTreeMap<String, Running>,
    tasks: &mut JoinSet<(String, Result<(), ArchiveError>)>,
) {
    for (id, r) in running.iter_mut() {
        match t.shard(id) {
            None => {
                info!(shard = %id, "the shard is gone from the cluster: stopping its archiver");
                r.stop.cancel();
            }
            Some(s) if s.master.id != r.master => {
                info!(shard = %id, from = %r.master, to = %s.master.id, addr = %s.master.addr,
                    "the shard's master moved");
                r.master = s.master.id.clone();
                r.locate.bump();
            }
            Some(_) => {}
        }
    }
    for s in &t.shards {
        if running.contains_key(&s.id) {
            continue;
        }
        match start(c, discovery, s, tasks) {
            Ok(r) => {
                running.insert(s.id.clone(), r);
            }
            Err(e) => error!(shard = %s.id, error = %e, "cannot archive the shard"),
        }
    }
}

fn start(
    c: &ClusterArchive,
    discovery: &Arc<Discovery>,
    s: &Shard,
    tasks: &mut JoinSet<(String, Result<(), ArchiveError>)>,
) -> Result<Running, String> {
    let store = shard_store(&c.store_url, &c.name, &s.id).map_err(|e| e.to_string())?;
    let (moved, _) = watch::channel(0);
    let locate = Arc::new(ShardLocate {
        discovery: discovery.clone(),
        shard: s.id.clone(),
        moved,
    });
    let source = Source {
        locate: Some(locate.clone()),
        ..c.source.node(&s.master.host, s.master.port)
    };
    // The shard's own metrics, labelled with its id, held while its archiver runs.
    let metrics = crate::metrics::shard(&s.id);
    let store = store.with_metrics(metrics.handle());
    let copy_to = match &c.also_to {
        Some(dst) => Some(
            shard_store(dst.url(), &c.name, &s.id)
                .map_err(|e| e.to_string())?
                .with_metrics(metrics.handle()),
        ),
        None => None,
    };
    let mut cfg = c.template.clone();
    cfg.source = source;
    cfg.store = store;
    // Never promoted: nothing listens.
    cfg.announce_port = 0;
    let stop = CancellationToken::new();
    let id = s.id.clone();
    info!(shard = %id, master = %s.master.addr, slots = ?s.slots, "archiving the shard");
    let token = stop.clone();
    let span = tracing::info_span!("shard", id = %id);
    tasks.spawn(
        async move {
            // `--also-to`: the shard's copy, beside its archiver, under the copy's own lease.
            let copy = copy_to.map(|dst| {
                let stop = CancellationToken::new();
                let task = tokio::spawn(
                    ship::keep_copy(cfg.store.clone(), dst, cfg.lease, stop.clone())
                        .in_current_span(),
                );
                (stop, task)
            });
            let r = Archiver::run(cfg, token).await;
            if let Some((stop, task)) = copy {
                stop.cancel();
                let _ = task.await;
            }
            // The shard's series leave /metrics once nothing runs for it.
            drop(metrics);
            (id, r)
        }
        .instrument(span),
    );
    Ok(Running {
        locate,
        stop,
        master: s.master.id.clone(),
    })
}
