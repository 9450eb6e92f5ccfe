//! Restoring a cluster archive: every shard to the same moment, in parallel, each as files
//! of its own (`<dir>/<shard-id>/`), with the slot ranges of each shard at that moment
//! (`<dir>/cluster.json`); or one shard after the other into one live (non-cluster) server, or
//! into a live cluster with each key routed to its slot's master there ([`super::route`]).
//!
//! A key can be on two shards at a moment: a `MIGRATE` (a resharding) reaches the importing
//! shard's stream (its `RESTORE-ASKING`) a little before the exporting shard's `DEL`. The rule:
//! the shard that owns the key's slot in the topology record in force at the moment keeps it;
//! a key of a slot its shard does not own (moved there, the record not yet written) is kept
//! when the owner does not hold it. Into one live server this is exact: every shard's keys of
//! its own slots first, then the keys of the other slots a shard met, less those the target
//! then holds ([`SlotFilter`]). As files, each shard's state is written as it is (see
//! `docs/format.md`, "Cluster archives").

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;

use crate::archive::names::ArchiveName;
use crate::net::Source;
use crate::replay::filter::SlotFilter;
use crate::replay::live_sink::{ContinuingOpener, ExpiryShift, LiveOpener};
use crate::replay::plan::{Plan, Target};
use crate::replay::{self, Destination, Progress, Report, RestoreConfig};

use super::client::{Client, Value};
use super::route::{owner_table, RoutingOpener};
use super::slot::{key_slot, table};
use super::{record_at, shard_store, Topology};
use super::{ClusterSource, Discovery};

/// The file beside the shards' directories that says which slots each serves.
pub const CLUSTER_FILE: &str = "cluster.json";

/// One shard of a cluster restore.
#[derive(Debug, Serialize)]
pub struct ShardRestore {
    pub id: String,
    pub slots: Vec<(u16, u16)>,
    /// The master's address and node id at that moment (from the topology record).
    pub master: super::Node,
    pub report: Report,
    /// Live target: the second pass, over the keys of slots the shard did not own at the
    /// moment (only when it met any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign: Option<Report>,
}

/// What a cluster restore did.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// The moment every shard was restored to (unix ms).
    pub time_ms: u64,
    /// The topology record in force then.
    pub topology_ms: u64,
    pub shards: Vec<ShardRestore>,
}

/// Why a cluster restore could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterRestoreError {
    #[error("{0}")]
    Usage(String),
    #[error("shard {shard}: {source}")]
    Shard {
        shard: String,
        #[source]
        source: replay::RestoreError,
    },
    #[error("{0}")]
    Other(String),
}

/// The moment `target` means for every shard of the cluster: a time. `latest` is the oldest of
/// the shards' newest moments (the newest moment every shard has).
pub async fn moment(
    store_url: &str,
    name: &ArchiveName,
    records: &[Topology],
    target: Target,
) -> Result<Target, ClusterRestoreError> {
    match target {
        Target::Time(_) | Target::Now => Ok(target),
        Target::Offset(_) => Err(ClusterRestoreError::Usage(
            "--to offset:<N> names a position in one shard's stream: restore one shard with \
             --store <store>/<name> --name <shard-id>"
                .into(),
        )),
        Target::Latest => {
            let newest = records.last().ok_or_else(|| {
                ClusterRestoreError::Other("the cluster archive has no topology record".into())
            })?;
            let mut at = u64::MAX;
            for s in &newest.shards {
                let plan = shard_plan(store_url, name, &s.id, Target::Latest).await?;
                let last = plan
                    .segments
                    .last()
                    .map_or(plan.snapshot.first_ms, |o| o.last_ms);
                at = at.min(last);
            }
            Ok(Target::Time(at))
        }
    }
}

async fn shard_plan(
    store_url: &str,
    name: &ArchiveName,
    shard: &str,
    target: Target,
) -> Result<Plan, ClusterRestoreError> {
    let store = shard_store(store_url, name, shard)
        .map_err(|e| ClusterRestoreError::Other(format!("shard {shard}: {e}")))?;
    replay::make_plan(&store, target)
        .await
        .map_err(|source| ClusterRestoreError::Shard {
            shard: shard.to_string(),
            source,
        })
}

/// Restores every shard of the record in force at `target` (a time, see [`moment`]) into
/// `<dir>/<shard-id>/`, in parallel, and writes `<dir>/cluster.json`. `template` gives the
/// filter, `force` and the fetch settings; its store and destination are replaced.
pub async fn to_files(
    store_url: &str,
    name: &ArchiveName,
    records: &[Topology],
    target: Target,
    dir: PathBuf,
    template: &RestoreConfig,
) -> Result<ClusterReport, ClusterRestoreError> {
    let (time_ms, topology) = topology_at(records, target).map_err(ClusterRestoreError::Other)?;
    let mut tasks = tokio::task::JoinSet::new();
    for s in shards_at(store_url, name, records, topology, target).await {
        let store = shard_store(store_url, name, &s.id)
            .map_err(|e| ClusterRestoreError::Other(format!("shard {}: {e}", s.id)))?;
        let cfg = RestoreConfig {
            store,
            target,
            destination: Destination::Files {
                dir: dir.join(&s.id),
            },
            ..template.clone()
        };
        tasks.spawn(async move {
            let r = async {
                let plan = replay::make_plan(&cfg.store, target).await?;
                replay::restore(&cfg, &plan, Arc::new(Progress::default())).await
            }
            .await;
            (s, r)
        });
    }
    let mut shards = Vec::new();
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((s, Ok(report))) => shards.push(ShardRestore {
                id: s.id,
                slots: s.slots,
                master: s.master,
                report,
                foreign: None,
            }),
            Ok((s, Err(source))) => {
                first_error.get_or_insert(ClusterRestoreError::Shard {
                    shard: s.id,
                    source,
                });
            }
            Err(e) => {
                first_error.get_or_insert(ClusterRestoreError::Other(format!(
                    "a shard's restore failed: {e}"
                )));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    shards.sort_by(|a, b| a.id.cmp(&b.id));
    let report = ClusterReport {
        time_ms,
        topology_ms: topology.time_ms,
        shards,
    };
    let layout = serde_json::json!({
        "time_ms": time_ms,
        "topology_ms": topology.time_ms,
        "shards": report.shards.iter().map(|s| serde_json::json!({
            "id": s.id,
            "dir": s.id,
            "slots": s.slots,
            "master": s.master,
        })).collect::<Vec<_>>(),
    });
    let path = dir.join(CLUSTER_FILE);
    let text = serde_json::to_vec_pretty(&layout)
        .map_err(|e| ClusterRestoreError::Other(e.to_string()))?;
    tokio::fs::write(&path, text).await.map_err(|e| {
        ClusterRestoreError::Other(format!("{}: cannot write: {e}", path.display()))
    })?;
    Ok(report)
}

/// The shards of `topology` (the record in force at `target`) to restore. A shard that the
/// next record drops, or shows without slots, and whose archive does not reach the moment is
/// left out: its master lost its last slot (every key moved to another shard) and turned
/// replica, which ended its archive, and the record that says so came up to a poll later.
async fn shards_at(
    store_url: &str,
    name: &ArchiveName,
    records: &[Topology],
    topology: &Topology,
    target: Target,
) -> Vec<super::Shard> {
    let next = records.iter().find(|t| t.time_ms > topology.time_ms);
    let mut out = Vec::new();
    for s in &topology.shards {
        let dropped = next.is_some_and(|n| n.shard(&s.id).is_none_or(|x| x.slots.is_empty()));
        if dropped {
            if let Err(e) = shard_plan(store_url, name, &s.id, target).await {
                tracing::info!(shard = %s.id, reason = %e,
                    "shard left out: the next topology record drops it and its archive ends before the moment");
                continue;
            }
        }
        out.push(s.clone());
    }
    out
}

/// The moment `target` names (see [`moment`]) and the record in force then.
fn topology_at(records: &[Topology], target: Target) -> Result<(u64, &Topology), String> {
    let time_ms = match target {
        Target::Time(t) => t,
        _ => crate::ingest::archiver::now_ms(),
    };
    let topology = record_at(records, time_ms).ok_or_else(|| {
        format!(
            "no topology record at or before {}: the cluster archive starts at {}",
            Target::Time(time_ms),
            records
                .first()
                .map_or("no record".into(), |t| Target::Time(t.time_ms).to_string())
        )
    })?;
    Ok((time_ms, topology))
}

/// Restores every shard of the record in force at `target` (a time, see [`moment`]) into one
/// live server, one shard after the other. The target is checked empty (or flushed, `force`)
/// once, before the first. Each shard first restores the keys of the slots it owns at the
/// moment; then each shard that met keys of other slots restores those, less the keys the
/// target holds by then in slots it does not own (their owner's). `template` gives the user's
/// filter, `force` and the fetch settings; `tls`, the TLS of every node of a `cluster://`
/// target (a single server takes `rediss://`).
#[allow(clippy::too_many_arguments)]
pub async fn to_live(
    store_url: &str,
    name: &ArchiveName,
    records: &[Topology],
    target: Target,
    url: &str,
    password: Option<String>,
    tls: Option<Arc<crate::net::Tls>>,
    template: &RestoreConfig,
) -> Result<ClusterReport, ClusterRestoreError> {
    let (time_ms, topology) = topology_at(records, target).map_err(ClusterRestoreError::Other)?;
    let dest = if ClusterSource::is_cluster_url(url) {
        LiveDest::cluster(url, password, tls, template.target_timeout)
            .await
            .map_err(|e| ClusterRestoreError::Other(format!("the target cluster: {e}")))?
    } else {
        LiveDest::One {
            url: url.to_string(),
            password,
        }
    };
    let mut shards = Vec::new();
    let mut owners = Vec::new();
    let present = shards_at(store_url, name, records, topology, target).await;
    for (i, s) in present.iter().enumerate() {
        let owned = SlotFilter {
            owned: Arc::new(table(&s.slots)),
            ..Default::default()
        };
        let report = shard_live(
            store_url,
            name,
            &s.id,
            target,
            &dest,
            template,
            owned.clone(),
            i > 0,
        )
        .await?;
        shards.push(ShardRestore {
            id: s.id.clone(),
            slots: s.slots.clone(),
            master: s.master.clone(),
            report,
            foreign: None,
        });
        owners.push(owned);
    }
    for (shard, owned) in shards.iter_mut().zip(owners) {
        if owned.foreign_seen.load(Relaxed) == 0 {
            continue;
        }
        let except = held_outside(&dest, template, &owned.owned)
            .await
            .map_err(|e| ClusterRestoreError::Other(format!("shard {}: {e}", shard.id)))?;
        let foreign = SlotFilter {
            foreign: true,
            except: Arc::new(except),
            ..owned
        };
        shard.foreign = Some(
            shard_live(
                store_url, name, &shard.id, target, &dest, template, foreign, true,
            )
            .await?,
        );
    }
    Ok(ClusterReport {
        time_ms,
        topology_ms: topology.time_ms,
        shards,
    })
}

/// One pass of one shard into the live target, with `slots` beside the user's filter.
#[allow(clippy::too_many_arguments)]
async fn shard_live(
    store_url: &str,
    name: &ArchiveName,
    shard: &str,
    target: Target,
    dest: &LiveDest,
    template: &RestoreConfig,
    slots: SlotFilter,
    checked: bool,
) -> Result<Report, ClusterRestoreError> {
    let store = shard_store(store_url, name, shard)
        .map_err(|e| ClusterRestoreError::Other(format!("shard {shard}: {e}")))?;
    let mut filter = template.filter.clone();
    filter.slots = Some(slots);
    let (first, password) = dest.first();
    let cfg = RestoreConfig {
        store,
        target,
        destination: Destination::Live {
            url: first,
            password,
        },
        filter,
        ..template.clone()
    };
    let opener = |url: &str, password: &Option<String>| LiveOpener {
        url: url.to_string(),
        password: password.clone(),
        timeout: cfg.target_timeout,
        force: cfg.force,
        max_restore_bytes: cfg.max_restore_bytes,
        shift: ExpiryShift::new(crate::ingest::archiver::now_ms() as i64),
    };
    let shard_err = |source| ClusterRestoreError::Shard {
        shard: shard.to_string(),
        source,
    };
    let plan = replay::make_plan(&cfg.store, target)
        .await
        .map_err(shard_err)?;
    let progress = Arc::new(Progress::default());
    let r = match dest {
        LiveDest::One { url, password } if checked => {
            let o = ContinuingOpener(opener(url, password));
            replay::restore::run(&cfg, &plan, progress, o).await
        }
        LiveDest::One { url, password } => {
            replay::restore::run(&cfg, &plan, progress, opener(url, password)).await
        }
        LiveDest::Cluster {
            masters,
            password,
            owner,
        } => {
            let o = RoutingOpener {
                masters: masters.iter().map(|u| opener(u, password)).collect(),
                owner: owner.clone(),
                checked,
            };
            replay::restore::run(&cfg, &plan, progress, o).await
        }
    };
    r.map_err(shard_err)
}

/// The keys the target holds (a cluster uses database 0 only) in the slots `owned` leaves
/// out.
async fn held_outside(
    dest: &LiveDest,
    template: &RestoreConfig,
    owned: &[bool],
) -> Result<HashSet<Vec<u8>>, String> {
    let mut keys = HashSet::new();
    let (urls, password) = match dest {
        LiveDest::One { url, password } => (vec![url.clone()], password),
        LiveDest::Cluster {
            masters, password, ..
        } => (masters.clone(), password),
    };
    for url in urls {
        let source = Source::parse(&url, password.clone())?;
        let mut c = Client::connect(&source, template.target_timeout).await?;
        scan_outside(&mut c, owned, &mut keys).await?;
    }
    Ok(keys)
}

async fn scan_outside(
    c: &mut Client,
    owned: &[bool],
    keys: &mut HashSet<Vec<u8>>,
) -> Result<(), String> {
    let mut cursor = b"0".to_vec();
    loop {
        let reply = c.call(&[b"SCAN", &cursor, b"COUNT", b"1000"]).await?;
        let items = match &reply {
            Value::Error(e) => return Err(format!("SCAN: {e}")),
            v => v.items().ok_or("SCAN: not an array")?,
        };
        let (Some(next), Some(batch)) = (
            items.first().and_then(Value::text),
            items.get(1).and_then(Value::items),
        ) else {
            return Err("SCAN: an unexpected reply".into());
        };
        for k in batch {
            if let Value::Bulk(Some(k)) = k {
                if !owned[key_slot(k) as usize] {
                    keys.insert(k.clone());
                }
            }
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next.into_bytes();
    }
}

/// Where a live cluster restore goes: one server, or the masters of a target cluster.
enum LiveDest {
    One {
        url: String,
        password: Option<String>,
    },
    Cluster {
        /// `redis://[user@]host:port` of each master.
        masters: Vec<String>,
        password: Option<String>,
        /// Slot → index in `masters`.
        owner: Arc<Vec<u16>>,
    },
}

impl LiveDest {
    /// The masters of the cluster at `url` (`cluster://…`) and the slots each serves now.
    async fn cluster(
        url: &str,
        password: Option<String>,
        tls: Option<Arc<crate::net::Tls>>,
        timeout: std::time::Duration,
    ) -> Result<LiveDest, String> {
        let mut source = ClusterSource::parse(url, password)?;
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        source.tls = tls;
        let mut d = Discovery::new(source.clone());
        d.timeout = timeout.min(std::time::Duration::from_secs(30));
        let t = d.topology().await?;
        let owner = owner_table(&t.shards.iter().map(|s| s.slots.clone()).collect::<Vec<_>>())
            .ok_or("a slot that no master serves")?;
        let user = source
            .user
            .as_ref()
            .map(|u| format!("{}@", percent_encoding::utf8_percent_encode(u, USERINFO)))
            .unwrap_or_default();
        Ok(LiveDest::Cluster {
            masters: t
                .shards
                .iter()
                .map(|s| format!("{scheme}://{user}{}", s.master.addr))
                .collect(),
            password: source.password,
            owner: Arc::new(owner),
        })
    }

    /// A URL for the report's destination, and the password.
    fn first(&self) -> (String, Option<String>) {
        match self {
            LiveDest::One { url, password } => (url.clone(), password.clone()),
            LiveDest::Cluster {
                masters, password, ..
            } => (masters[0].clone(), password.clone()),
        }
    }
}

/// What a user name in a URL must have percent-encoded.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
