//! Archiving a whole cluster in one process: one [`Archiver`] per shard, each into its own
//! archive, and a topology poller that records the slot ownership over time, tells a shard's
//! archiver when its master moved, and starts or stops archivers as shards come and go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::archive::names::ArchiveName;
use crate::archive::store::Store;
use crate::ingest::archiver::{ArchiveConfig, ArchiveError, Archiver};
use crate::net::{Locate, Source};

use super::{shard_store, write_record, ClusterSource, Discovery, Shard, Topology};

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
    result
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
            let r = Archiver::run(cfg, token).await;
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
