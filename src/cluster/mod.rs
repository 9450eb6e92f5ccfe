//! Redis Cluster: a `cluster://` source, discovery of its shards (`CLUSTER SHARDS`, or
//! `CLUSTER SLOTS` on older servers), the identity of a shard across failovers, and the layout
//! of a cluster archive in a store (see `docs/format.md`, "Cluster archives"):
//!
//! ```text
//! <name>/<shard-id>/…                      one ordinary archive per shard
//! <name>/cluster/<time_ms:013>.json        the topology from that moment on
//! ```
//!
//! A shard's archive is an ordinary archive named `<shard-id>` in the store
//! `<store>/<name>`; every command reads it that way (`--store <store>/<name> --name
//! <shard-id>`).

pub mod archive;
pub mod client;
pub mod restore;
pub mod route;
pub mod slot;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::names::ArchiveName;
use crate::archive::store::{Store, StoreError};
use crate::net::{redact_url, Source};

use client::{Client, Value};

/// The prefix, under a cluster archive's name, of its topology records.
pub const TOPOLOGY_DIR: &str = "cluster";

/// `cluster://[user[:password]@]host:port[,host:port…]`: where to start discovery, and as whom.
#[derive(Clone)]
pub struct ClusterSource {
    pub seeds: Vec<(String, u16)>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS for every node (`--tls` or a `--tls-*` flag).
    pub tls: Option<std::sync::Arc<crate::net::Tls>>,
}

impl std::fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSource")
            .field("seeds", &self.seeds)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClusterSource {
    /// Whether `url` asks for a cluster.
    pub fn is_cluster_url(url: &str) -> bool {
        url.get(..10)
            .is_some_and(|s| s.eq_ignore_ascii_case("cluster://"))
    }

    /// Parses `cluster://[user[:password]@]host:port[,host:port…]`. A password in the URL wins
    /// over `env_password`. Errors never show the password.
    pub fn parse(url: &str, env_password: Option<String>) -> Result<ClusterSource, String> {
        let shown = redact_url(url);
        if !Self::is_cluster_url(url) {
            return Err(format!("{shown:?}: not a cluster:// URL"));
        }
        let rest = &url[10..];
        let rest = rest.split(['/', '?']).next().unwrap_or("");
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(a)), None),
            },
        };
        let user = user.filter(|u| !u.is_empty());
        let mut seeds = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            // Each seed as the host part of a redis:// URL (IPv6 in brackets, default port).
            let s = Source::parse(&format!("redis://{h}"), None)
                .map_err(|_| format!("{shown:?}: bad seed {h:?} (host:port)"))?;
            seeds.push((s.host, s.port));
        }
        if seeds.is_empty() {
            return Err(format!(
                "{shown:?}: no seed (cluster://host:port[,host:port…])"
            ));
        }
        Ok(ClusterSource {
            seeds,
            user,
            password: password.or(env_password),
            tls: None,
        })
    }

    /// A [`Source`] for one node, with this cluster's user and password.
    pub fn node(&self, host: &str, port: u16) -> Source {
        Source {
            host: host.to_string(),
            port,
            user: self.user.clone(),
            password: self.password.clone(),
            locate: None,
            tls: self.tls.clone(),
        }
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One node of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// `host:port` (IPv6 in brackets).
    pub addr: String,
    #[serde(skip)]
    pub host: String,
    #[serde(skip)]
    pub port: u16,
}

impl Node {
    fn new(id: String, host: String, port: u16) -> Node {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Node {
            id,
            addr,
            host,
            port,
        }
    }
}

/// One shard: a master, its replicas, and the slot ranges it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The shard's identity, which names its archive.
    pub id: String,
    pub master: Node,
    pub replicas: Vec<Node>,
    /// Inclusive slot ranges, sorted.
    pub slots: Vec<(u16, u16)>,
}

/// A topology record: every shard at `time_ms`, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub time_ms: u64,
    pub shards: Vec<Shard>,
}

impl Topology {
    /// Whether `other` has the same shards, masters, replicas and slots (times aside).
    pub fn same_as(&self, other: &Topology) -> bool {
        let key = |t: &Topology| {
            t.shards
                .iter()
                .map(|s| {
                    let mut r: Vec<_> = s.replicas.iter().map(|n| n.id.clone()).collect();
                    r.sort();
                    (s.id.clone(), s.master.id.clone(), r, s.slots.clone())
                })
                .collect::<Vec<_>>()
        };
        key(self) == key(other)
    }

    pub fn shard(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }
}

/// A shard as a server reports it, before its identity is settled.
#[derive(Debug)]
struct Seen {
    /// The shard id the server gives (`CLUSTER SHARDS` of 7.2+ and Valkey).
    id: Option<String>,
    master: Node,
    replicas: Vec<Node>,
    slots: Vec<(u16, u16)>,
}

/// Finds the shards of one cluster, and keeps their identities: a node once seen in a shard
/// names that shard thereafter, so that a replica promoted by a failover keeps its shard's id.
pub struct Discovery {
    pub source: ClusterSource,
    /// Nodes seen so far, asked after the seeds.
    known: Mutex<Vec<(String, u16)>>,
    /// Node id → shard id.
    identities: Mutex<HashMap<String, String>>,
    pub timeout: Duration,
}

impl Discovery {
    pub fn new(source: ClusterSource) -> Discovery {
        Discovery {
            source,
            known: Mutex::new(Vec::new()),
            identities: Mutex::new(HashMap::new()),
            timeout: Duration::from_secs(5),
        }
    }

    /// Takes the shard names of `t` (a topology record written before) as known: each of its
    /// nodes names its shard again, so that a shard named by a master that has since failed
    /// over keeps its name (and its archive) in a new process. A name the server gives
    /// (`CLUSTER SHARDS` with ids) still wins.
    pub fn remember(&self, t: &Topology) {
        let mut ids = lock(&self.identities);
        let mut known = lock(&self.known);
        for s in &t.shards {
            for n in std::iter::once(&s.master).chain(&s.replicas) {
                ids.entry(n.id.clone()).or_insert_with(|| s.id.clone());
                let k = (n.host.clone(), n.port);
                if n.port != 0 && !known.contains(&k) {
                    known.push(k);
                }
            }
        }
    }

    /// The topology now, from the first seed (then known node) that answers.
    pub async fn topology(&self) -> Result<Topology, String> {
        let mut candidates = self.source.seeds.clone();
        for k in lock(&self.known).iter() {
            if !candidates.contains(k) {
                candidates.push(k.clone());
            }
        }
        let mut errors = Vec::new();
        for (host, port) in candidates {
            match self.ask(&host, port).await {
                Ok(seen) => return Ok(self.settle(seen)),
                Err(e) => errors.push(e),
            }
        }
        Err(format!(
            "no node of the cluster answered: {}",
            errors.join("; ")
        ))
    }

    async fn ask(&self, host: &str, port: u16) -> Result<Vec<Seen>, String> {
        let node = self.source.node(host, port);
        let mut c = Client::connect(&node, self.timeout).await?;
        let reply = c.call(&[b"CLUSTER", b"SHARDS"]).await?;
        let seen = match reply {
            Value::Error(e) if e.contains("unknown") || e.contains("ERR") => {
                let slots = c.call(&[b"CLUSTER", b"SLOTS"]).await?;
                from_slots(&slots, host).map_err(|e| format!("{}: CLUSTER SLOTS: {e}", c.addr()))?
            }
            Value::Error(e) => return Err(format!("{}: CLUSTER SHARDS: {e}", c.addr())),
            v => from_shards(&v, host, self.source.tls.is_some())
                .map_err(|e| format!("{}: CLUSTER SHARDS: {e}", c.addr()))?,
        };
        if seen.iter().all(|s| s.slots.is_empty()) {
            return Err(format!("{}: no shard serves any slot", c.addr()));
        }
        // A master without slots counts only when it says so itself (`ROLE`): the node asked
        // can lag behind a replica's `CLUSTER REPLICATE` or a failed-over master's demotion,
        // and a replica archived as a shard of its own would hold its master's keys.
        let mut out = Vec::with_capacity(seen.len());
        for s in seen {
            if s.slots.is_empty() && !self.says_master(&s.master).await {
                continue;
            }
            out.push(s);
        }
        Ok(out)
    }

    async fn says_master(&self, n: &Node) -> bool {
        let node = self.source.node(&n.host, n.port);
        let Ok(mut c) = Client::connect(&node, self.timeout).await else {
            return false;
        };
        match c.call(&[b"ROLE"]).await {
            Ok(v) => v
                .items()
                .and_then(|i| i.first())
                .and_then(Value::text)
                .is_some_and(|r| r == "master"),
            Err(_) => false,
        }
    }

    /// Gives each shard its identity and remembers its nodes.
    fn settle(&self, seen: Vec<Seen>) -> Topology {
        let mut ids = lock(&self.identities);
        let mut known = lock(&self.known);
        let mut shards = Vec::new();
        for s in seen {
            let id =
                s.id.clone()
                    .or_else(|| ids.get(&s.master.id).cloned())
                    .or_else(|| s.replicas.iter().find_map(|r| ids.get(&r.id).cloned()))
                    .unwrap_or_else(|| s.master.id.clone());
            for n in std::iter::once(&s.master).chain(&s.replicas) {
                ids.insert(n.id.clone(), id.clone());
                let k = (n.host.clone(), n.port);
                if !known.contains(&k) {
                    known.push(k);
                }
            }
            let mut slots = s.slots;
            slots.sort();
            shards.push(Shard {
                id,
                master: s.master,
                replicas: s.replicas,
                slots,
            });
        }
        shards.sort_by(|a, b| a.id.cmp(&b.id));
        Topology {
            time_ms: crate::ingest::archiver::now_ms(),
            shards,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node's host: its endpoint or IP, or the host asked when it gives none (`?`, empty).
fn node_host(endpoint: Option<String>, ip: Option<String>, asked: &str) -> String {
    [endpoint, ip]
        .into_iter()
        .flatten()
        .find(|h| !h.is_empty() && h != "?")
        .unwrap_or_else(|| asked.to_string())
}

/// The shards of a `CLUSTER SHARDS` reply that serve slots; each node at its `tls-port` when
/// `tls` (a node that serves both gives both), otherwise at its `port`.
fn from_shards(v: &Value, asked: &str, tls: bool) -> Result<Vec<Seen>, String> {
    let mut out = Vec::new();
    for shard in v.items().ok_or("not an array")? {
        let slots: Vec<i64> = shard
            .field("slots")
            .and_then(Value::items)
            .ok_or("a shard without slots")?
            .iter()
            .filter_map(Value::int)
            .collect();
        let slots: Vec<(u16, u16)> = slots
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0] as u16, p[1] as u16))
            .collect();
        let mut master = None;
        let mut healthy = false;
        let mut replicas = Vec::new();
        for n in shard
            .field("nodes")
            .and_then(Value::items)
            .ok_or("a shard without nodes")?
        {
            let text = |k: &str| n.field(k).and_then(Value::text);
            let id = text("id").ok_or("a node without id")?;
            let (first, second) = if tls {
                ("tls-port", "port")
            } else {
                ("port", "tls-port")
            };
            let port = n
                .field(first)
                .or_else(|| n.field(second))
                .and_then(Value::int)
                .ok_or("a node without port")?;
            let node = Node::new(
                id,
                node_host(text("endpoint"), text("ip"), asked),
                port as u16,
            );
            if text("role").as_deref() == Some("master") {
                // `health` came with `CLUSTER SHARDS` (7.0): online, failed or loading.
                healthy = text("health").is_none_or(|h| h == "online");
                master = Some(node);
            } else {
                replicas.push(node);
            }
        }
        let Some(master) = master else { continue };
        if slots.is_empty() && !healthy {
            // A failed master that lost its slots: not a shard to archive.
            continue;
        }
        // A master without slots that is up is archived too: one just added receives the
        // keys of the slots resharded onto it (`MIGRATE`) before it owns any, and one being
        // emptied still holds keys until its last slot has moved.
        out.push(Seen {
            id: shard.field("id").and_then(Value::text),
            master,
            replicas,
            slots,
        });
    }
    Ok(out)
}

/// The shards of a `CLUSTER SLOTS` reply, grouped by master.
fn from_slots(v: &Value, asked: &str) -> Result<Vec<Seen>, String> {
    let mut by_master: BTreeMap<String, Seen> = BTreeMap::new();
    for range in v.items().ok_or("not an array")? {
        let r = range.items().ok_or("a range that is not an array")?;
        if r.len() < 3 {
            return Err("a range without a master".into());
        }
        let (start, end) = (
            r[0].int().ok_or("bad start")? as u16,
            r[1].int().ok_or("bad end")? as u16,
        );
        let node = |v: &Value| -> Result<Node, String> {
            let n = v.items().ok_or("a node that is not an array")?;
            let host = n.first().and_then(Value::text);
            let port = n.get(1).and_then(Value::int).ok_or("a node without port")?;
            let id = n.get(2).and_then(Value::text).ok_or("a node without id")?;
            Ok(Node::new(id, node_host(host, None, asked), port as u16))
        };
        let master = node(&r[2])?;
        let entry = by_master.entry(master.id.clone()).or_insert_with(|| Seen {
            id: None,
            master,
            replicas: Vec::new(),
            slots: Vec::new(),
        });
        entry.slots.push((start, end));
        for rv in &r[3..] {
            let n = node(rv)?;
            if !entry.replicas.iter().any(|x| x.id == n.id) {
                entry.replicas.push(n);
            }
        }
    }
    Ok(by_master.into_values().collect())
}

/// The store that holds the shard archives of cluster archive `name` in `store_url`: the
/// store `<store_url>/<name>`, in which each shard is the archive named by its id.
pub fn shards_url(store_url: &str, name: &ArchiveName) -> String {
    match store_url.split_once('?') {
        Some((base, query)) => format!("{}/{name}?{query}", base.trim_end_matches('/')),
        None => format!("{}/{name}", store_url.trim_end_matches('/')),
    }
}

/// The archive of one shard of cluster archive `name` in `store_url`.
pub fn shard_store(store_url: &str, name: &ArchiveName, shard: &str) -> Result<Store, StoreError> {
    let shard_name: ArchiveName = shard.parse().map_err(|e| StoreError::Config {
        url: store_url.to_string(),
        reason: format!("shard id: {e}"),
    })?;
    Store::open(&shards_url(store_url, name), &shard_name)
}

/// Writes a topology record, create-only (a record already there at that millisecond moves
/// it one millisecond on). Returns its name.
pub async fn write_record(
    store: &Store,
    name: &ArchiveName,
    t: &Topology,
) -> Result<String, String> {
    store.create_root().await.map_err(|e| e.to_string())?;
    let mut t = t.clone();
    for _ in 0..100 {
        let path = Path::from(format!("{name}/{TOPOLOGY_DIR}/{:013}.json", t.time_ms));
        let body = serde_json::to_vec_pretty(&t).map_err(|e| e.to_string())?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .backend()
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => return Ok(path.to_string()),
            Err(object_store::Error::AlreadyExists { .. }) => t.time_ms += 1,
            Err(e) => return Err(format!("writing {path}: {e}")),
        }
    }
    Err("writing a topology record: every name taken".into())
}

/// The topology records of cluster archive `name`, oldest first (empty: not a cluster archive).
pub async fn read_records(store: &Store, name: &ArchiveName) -> Result<Vec<Topology>, String> {
    let prefix = Path::from(format!("{name}/{TOPOLOGY_DIR}"));
    let metas: Vec<_> = match store.backend().list(Some(&prefix)).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(format!("listing {prefix}: {e}")),
    };
    let mut records = Vec::new();
    for m in metas {
        if !m.location.as_ref().ends_with(".json") {
            continue;
        }
        let bytes = store
            .backend()
            .get(&m.location)
            .await
            .map_err(|e| format!("reading {}: {e}", m.location))?
            .bytes()
            .await
            .map_err(|e| format!("reading {}: {e}", m.location))?;
        let mut t: Topology = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a topology record: {e}", m.location))?;
        for n in t
            .shards
            .iter_mut()
            .flat_map(|s| std::iter::once(&mut s.master).chain(s.replicas.iter_mut()))
        {
            if let Some((h, p)) = n.addr.rsplit_once(':') {
                n.host = h.trim_start_matches('[').trim_end_matches(']').to_string();
                n.port = p.parse().unwrap_or(0);
            }
        }
        records.push(t);
    }
    records.sort_by_key(|t| t.time_ms);
    Ok(records)
}

/// The record in force at `time_ms`: the newest at or before it.
pub fn record_at(records: &[Topology], time_ms: u64) -> Option<&Topology> {
    records.iter().rev().find(|t| t.time_ms <= time_ms)
}

/// Every shard id the records name, sorted.
pub fn all_shards(records: &[Topology]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .flat_map(|t| t.shards.iter().map(|s| s.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A shared handle for the archiving side.
pub type SharedDiscovery = Arc<Discovery>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let c = ClusterSource::parse("cluster://u:p%40ss@10.0.0.1:7000,h2:7001,[::1]:7002", None)
            .unwrap();
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(
            c.seeds,
            vec![
                ("10.0.0.1".to_string(), 7000),
                ("h2".to_string(), 7001),
                ("::1".to_string(), 7002)
            ]
        );
        let c = ClusterSource::parse("cluster://h:7000", Some("env".into())).unwrap();
        assert_eq!(c.password.as_deref(), Some("env"));
        let e = ClusterSource::parse("cluster://u:secret@", None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(ClusterSource::parse("redis://h:1", None).is_err());
    }

    #[test]
    fn shards_url_keeps_a_query_last() {
        let n: ArchiveName = "prod".parse().unwrap();
        assert_eq!(shards_url("/var/a/", &n), "/var/a/prod");
        assert_eq!(shards_url("s3://b/p?x=1", &n), "s3://b/p/prod?x=1");
    }

    fn node(id: &str, port: u16) -> Node {
        Node::new(id.into(), "127.0.0.1".into(), port)
    }

    #[test]
    fn a_promoted_replica_keeps_its_shards_id() {
        let d = Discovery::new(ClusterSource::parse("cluster://h:1", None).unwrap());
        let seen = |m: &str, r: &str| Seen {
            id: None,
            master: node(m, 1),
            replicas: vec![node(r, 2)],
            slots: vec![(0, 16383)],
        };
        let t = d.settle(vec![seen("a", "b")]);
        assert_eq!(t.shards[0].id, "a");
        let t2 = d.settle(vec![seen("b", "a")]);
        assert_eq!(t2.shards[0].id, "a");
        assert_eq!(t2.shards[0].master.id, "b");
        assert!(!t.same_as(&t2));
        // A new process that remembers the last record names the shard the same.
        let again = Discovery::new(ClusterSource::parse("cluster://h:1", None).unwrap());
        again.remember(&t2);
        assert_eq!(again.settle(vec![seen("b", "a")]).shards[0].id, "a");
        let fresh = Discovery::new(ClusterSource::parse("cluster://h:1", None).unwrap());
        assert_eq!(fresh.settle(vec![seen("b", "a")]).shards[0].id, "b");
        // A shard id the server gives wins.
        let mut s = seen("c", "d");
        s.id = Some("s".into());
        assert_eq!(d.settle(vec![s]).shards[0].id, "s");
    }
}
