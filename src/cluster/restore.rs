//! Restoring a cluster archive: every shard to the same moment, in parallel, each as files
//! of its own (`<dir>/<shard-id>/`), with the slot ranges of each shard at that moment
//! (`<dir>/cluster.json`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::archive::names::ArchiveName;
use crate::replay::plan::{Plan, Target};
use crate::replay::{self, Destination, Progress, Report, RestoreConfig};

use super::{record_at, shard_store, Topology};

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
    let time_ms = match target {
        Target::Time(t) => t,
        _ => crate::ingest::archiver::now_ms(),
    };
    let topology = record_at(records, time_ms).ok_or_else(|| {
        ClusterRestoreError::Other(format!(
            "no topology record at or before {}: the cluster archive starts at {}",
            crate::replay::plan::Target::Time(time_ms),
            records
                .first()
                .map_or("no record".into(), |t| Target::Time(t.time_ms).to_string())
        ))
    })?;
    let mut tasks = tokio::task::JoinSet::new();
    for s in topology.shards.clone() {
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
