//! A throw-away Redis Cluster: redis-server processes with `cluster-enabled yes`, joined by
//! `redis-cli --cluster create`, and a client that routes each key to its slot's master.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::redis_server::{redis_server_bin, RedisServer};
use super::util::{require_binary, wait_until_msg};

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// The server binary of every node (also of those added later).
    bin: PathBuf,
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

impl Cluster {
    /// `masters * (1 + replicas)` nodes, `cluster-node-timeout 2000`, each master with
    /// `replicas` replicas; waits until every node says `cluster_state:ok` and knows them all.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        Cluster::start_with(&redis_server_bin(), masters, replicas)
    }

    /// Like [`start`](Self::start), with the server binary `bin` (another Redis version, or
    /// Valkey: see [`super::servers`]); `redis-cli` joins them all the same.
    pub fn start_with(bin: &Path, masters: usize, replicas: usize) -> Cluster {
        Cluster::start_configured(bin, masters, replicas, Vec::new, &[], |n| n.addr())
    }

    /// Like [`start_with`](Self::start_with), with `config()` added to each node's settings,
    /// and `redis-cli cli_args --cluster create` given `create_addr` of each node (a TLS port,
    /// say).
    pub fn start_configured(
        bin: &Path,
        masters: usize,
        replicas: usize,
        config: impl Fn() -> Vec<(String, String)>,
        cli_args: &[&str],
        create_addr: impl Fn(&RedisServer) -> String,
    ) -> Cluster {
        let cli = require_binary("redis-cli");
        let n = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..n).map(|_| Cluster::new_node(bin, &config())).collect();
        let mut cmd = Command::new(cli);
        cmd.args(cli_args).arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(create_addr(node));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = cmd.output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster {
            nodes,
            bin: bin.to_path_buf(),
        };
        c.wait_ok();
        c
    }

    fn new_node(bin: &Path, extra: &[(String, String)]) -> RedisServer {
        let mut settings = vec![
            ("cluster-enabled", "yes"),
            ("cluster-config-file", "nodes.conf"),
            ("cluster-node-timeout", "2000"),
        ];
        settings.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        RedisServer::start_with(bin, &settings)
    }

    /// `pitr archive --source cluster://<every node> --store <store> --name cl
    /// --flush-interval 100ms`, plus `extra`.
    pub fn archiver(&self, store: &str, extra: &[&str]) -> super::pitr::PitrProcess {
        let source = format!("cluster://{}", self.seeds());
        let mut args = vec![
            "archive",
            "--source",
            &source,
            "--store",
            store,
            "--name",
            "cl",
            "--flush-interval",
            "100ms",
        ];
        args.extend_from_slice(extra);
        super::pitr::PitrProcess::spawn(&args, &[])
    }

    /// Runs `redis-cli --cluster <args>`, which must succeed.
    pub fn cli(&self, args: &[&str]) {
        let mut cmd = Command::new(require_binary("redis-cli"));
        cmd.arg("--cluster").args(args);
        let out = cmd.output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts one more node and joins it as a master without slots (`redis-cli --cluster
    /// add-node`); waits until every node knows it. Returns it.
    pub fn add_master(&mut self) -> &RedisServer {
        let node = Cluster::new_node(&self.bin, &[]);
        let first = self.nodes.iter().find(|s| s.is_running()).expect("a node");
        self.cli(&["add-node", &node.addr(), &first.addr()]);
        self.nodes.push(node);
        self.wait_ok();
        self.nodes.last().unwrap()
    }

    /// Takes the node on `port` (a master without slots, or a replica) out of the cluster
    /// (`redis-cli --cluster del-node`), stops it, and waits until the others agree.
    pub fn del_node(&mut self, port: u16) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node of the cluster");
        let id = self.id_of(&self.nodes[i]);
        let other = self
            .nodes
            .iter()
            .find(|s| s.is_running() && s.port() != port)
            .expect("another node");
        self.cli(&["del-node", &other.addr(), &id]);
        let gone = self.nodes.remove(i);
        gone.stop();
        self.wait_ok();
    }

    /// Waits until every running node says `cluster_state:ok`, knows every node, and agrees
    /// on the masters of all slots.
    pub fn wait_ok(&self) {
        let n = self.nodes.len();
        wait_until_msg(
            Duration::from_secs(60),
            "cluster_state:ok everywhere",
            || {
                let views: Vec<_> = self
                    .nodes
                    .iter()
                    .filter(|s| s.is_running())
                    .map(|s| {
                        let info = text(&s.cmd(&["CLUSTER", "INFO"]));
                        let ok = info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{n}"));
                        (ok, self.slot_masters_of(s))
                    })
                    .collect();
                views.iter().all(|(ok, _)| *ok) && views.windows(2).all(|w| w[0].1 == w[1].1)
            },
        );
    }

    /// `host:port,host:port…` of every node: the seeds of a `cluster://` URL.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The slot ranges and their master's port, as `s` sees them.
    fn slot_masters_of(&self, s: &RedisServer) -> Vec<(u16, u16, u16)> {
        let v = s.cmd(&["CLUSTER", "SLOTS"]);
        let mut out = Vec::new();
        if let redis::Value::Array(ranges) = v {
            for r in ranges {
                if let redis::Value::Array(r) = r {
                    let int = |v: &redis::Value| text(v).parse::<u16>().unwrap();
                    let port = match &r[2] {
                        redis::Value::Array(m) => int(&m[1]),
                        other => panic!("a master that is not an array: {other:?}"),
                    };
                    out.push((int(&r[0]), int(&r[1]), port));
                }
            }
        }
        out.sort();
        out
    }

    /// The slot ranges and the port of their master, from the first running node.
    pub fn slot_masters(&self) -> Vec<(u16, u16, u16)> {
        let s = self.nodes.iter().find(|s| s.is_running()).expect("a node");
        self.slot_masters_of(s)
    }

    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of the cluster")
    }

    /// The masters now (those that serve slots).
    pub fn masters(&self) -> Vec<&RedisServer> {
        let mut ports: Vec<u16> = self.slot_masters().iter().map(|r| r.2).collect();
        ports.sort();
        ports.dedup();
        ports.into_iter().map(|p| self.node(p)).collect()
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        text(&self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]))
            .parse()
            .unwrap()
    }

    /// The master that serves `key` now.
    pub fn master_of(&self, key: &str) -> &RedisServer {
        let slot = self.slot(key);
        let port = self
            .slot_masters()
            .into_iter()
            .find(|r| r.0 <= slot && slot <= r.1)
            .map(|r| r.2)
            .expect("every slot is served");
        self.node(port)
    }

    /// Runs a command on the master of `key`.
    pub fn run(&self, key: &str, args: &[&str]) {
        self.master_of(key).cmd(args);
    }

    /// Runs a command on the master of `key`, following `MOVED` and `ASK` redirections (a
    /// slot being migrated), as a cluster client does. Returns the reply.
    pub fn run_routed(&self, key: &str, args: &[&str]) -> redis::Value {
        let mut node = self.master_of(key);
        let mut asking = false;
        for _ in 0..10 {
            if asking {
                node.cmd(&["ASKING"]);
            }
            match node.try_cmd(args) {
                Ok(v) => return v,
                Err(e) => match (e.kind(), e.redirect_node()) {
                    (kind, Some((addr, _))) => {
                        asking = kind == redis::ErrorKind::Ask;
                        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                        node = self.node(port);
                    }
                    (redis::ErrorKind::TryAgain, _) => {
                        std::thread::sleep(Duration::from_millis(20));
                        asking = false;
                        node = self.master_of(key);
                    }
                    _ => panic!("{args:?}: {e}"),
                },
            }
        }
        panic!("{args:?}: too many redirections");
    }

    /// A node's id (`CLUSTER MYID`).
    pub fn id_of(&self, node: &RedisServer) -> String {
        text(&node.cmd(&["CLUSTER", "MYID"]))
    }

    /// Every key and its string value, across the masters.
    pub fn state(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for m in self.masters() {
            let mut con = m.client();
            for (k, v) in strings_of(&mut con) {
                assert!(all.insert(k.clone(), v).is_none(), "{k} on two masters");
            }
        }
        all
    }

    /// Waits until, on every master, the archiver (the replica announced on port 0) has
    /// acknowledged everything written so far.
    pub fn wait_archived(&self) {
        wait_until_msg(
            Duration::from_secs(60),
            "the archiver to ack every master",
            || {
                self.masters().iter().all(|m| {
                    let info = m.info("replication");
                    let want = &info["master_repl_offset"];
                    info.iter().any(|(k, v)| {
                        k.starts_with("slave")
                            && v.contains("port=0,")
                            && v.contains("state=online")
                            && v.contains(&format!("offset={want},"))
                    })
                })
            },
        );
    }
}

/// Every key of a (non-cluster or cluster) server and its string value.
pub fn strings_of(con: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    let mut out = BTreeMap::new();
    for k in keys {
        let v: String = redis::cmd("GET").arg(&k).query(con).expect("GET");
        out.insert(k, v);
    }
    out
}
