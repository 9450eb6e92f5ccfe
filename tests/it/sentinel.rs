//! The archiver beside a real Sentinel (`redis-server --sentinel`, the binary the
//! `redis-sentinel` package runs): it announces port 0, so Sentinel never picks it as a
//! replica to promote. With the archiver as the master's only replica, `SENTINEL FAILOVER`
//! finds no replica to promote; with a real replica beside it, the failover promotes that one.
//!
//! Following the master: a `sentinel://` source through `SENTINEL FAILOVER` and a `kill -9`
//! of the master, a `redis://` source through `FAILOVER` and `REPLICAOF` on the master, and a
//! failover that lost writes, recorded as a branch. Every checkpoint before and after restores
//! equal to the master of the time.

use std::time::Duration;

use serde_json::Value;

use crate::support::state::logical_state;

use crate::support::archiving::*;
use crate::support::redis_server::redis_server_bin;
use crate::support::*;

pub(crate) fn sentinel(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con)
}

/// The ports of the replicas Sentinel knows of `mymaster`.
fn known_replica_ports(port: u16) -> Vec<String> {
    let Ok(redis::Value::Array(replicas)) = sentinel(port, &["SENTINEL", "REPLICAS", "mymaster"])
    else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter_map(|r| {
            let redis::Value::Array(fields) = r else {
                return None;
            };
            let text: Vec<String> = fields
                .iter()
                .map(|f| match f {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            let i = text.iter().position(|k| k == "port")?;
            text.get(i + 1).cloned()
        })
        .collect()
}

#[test]
fn sentinel_never_promotes_the_archiver() {
    let master = RedisServer::start(&[]);
    let a = Archive::local();
    let p = a.archiver(&master, &["--flush-interval", "100ms"]);
    wait_online(&master, Duration::from_secs(60));
    let (_sentinel, port, _dir) = start_sentinel_of(&master, 1);
    let mut con = master.client();
    exec(&mut con, &["SET", "k", "v"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    // Sentinel has had time to read the master's INFO (every 10 s at first, sooner after a
    // change): it lists no replica that it could promote.
    std::thread::sleep(Duration::from_secs(2));
    let known = known_replica_ports(port);
    assert!(
        known.iter().all(|p| p == "0"),
        "Sentinel knows replicas {known:?}"
    );
    let e = sentinel(port, &["SENTINEL", "FAILOVER", "mymaster"])
        .expect_err("a failover with only the archiver as replica");
    assert!(e.to_string().contains("NOGOODSLAVE"), "{e}");

    // A real replica beside it: the failover promotes that one, never the archiver.
    let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {}", master.port()))]);
    replica.wait_in_sync("the replica");
    let rport = replica.port().to_string();
    wait_until_msg(
        Duration::from_secs(30),
        "Sentinel to see the replica",
        || known_replica_ports(port).contains(&rport),
    );
    // Sentinel takes a replica only once it has its INFO (asked every 10 s at first).
    wait_until_msg(
        Duration::from_secs(40),
        "Sentinel to accept the failover",
        || sentinel(port, &["SENTINEL", "FAILOVER", "mymaster"]).is_ok(),
    );
    wait_until_msg(Duration::from_secs(60), "the replica's promotion", || {
        replica.info("replication").get("role").map(String::as_str) == Some("master")
    });
    let promoted = redis::Value::Array(vec![
        redis::Value::BulkString(b"127.0.0.1".to_vec()),
        redis::Value::BulkString(rport.into_bytes()),
    ]);
    wait_until_msg(
        Duration::from_secs(30),
        "Sentinel to name the new master",
        || {
            sentinel(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).ok()
                == Some(promoted.clone())
        },
    );
    assert!(p.is_running(), "{}", p.log_tail(20));
    p.stop_gracefully(Duration::from_secs(30));
    a.verify();
}

/// [`wait_acks`] for a poll: `None` when the connection fails (Sentinel has a promoted
/// replica's clients killed), so that the poll tries again.
fn try_wait_acks(r: &RedisServer, n: usize) -> Option<i64> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}", r.port()))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .ok()?;
    redis::cmd("WAIT").arg(n).arg(5000).query(&mut con).ok()
}

/// `WAIT <n> 5000` on `r`: how many replicas acknowledged everything written before.
fn wait_acks(r: &RedisServer, n: usize) -> i64 {
    let mut con = r.client();
    redis::cmd("WAIT")
        .arg(n)
        .arg(5000)
        .query(&mut con)
        .expect("WAIT answers")
}

/// As `write_some(r, prefix, 1)` then `wait_acks(r, n) == n`, on a connection of its own;
/// `false` when the server closes it: Sentinel has a promoted replica's clients killed
/// (`CLIENT KILL TYPE normal`), and a poll goes on with a new connection.
fn written_and_acked(r: &RedisServer, prefix: &str, n: i64) -> bool {
    let attempt = || -> redis::RedisResult<i64> {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{}", r.port()))?
            .get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("SET")
            .arg(format!("{prefix}:0"))
            .arg(format!("{prefix}-0"))
            .query::<()>(&mut con)?;
        redis::cmd("HSET")
            .arg(format!("{prefix}:h"))
            .arg("f")
            .arg(prefix)
            .query::<()>(&mut con)?;
        redis::cmd("WAIT").arg(n).arg(5000).query(&mut con)
    };
    attempt().is_ok_and(|acked| acked == n)
}

/// Writes `n` keys `<prefix>:<i>` and a hash on `r`.
fn write_some(r: &RedisServer, prefix: &str, n: usize) {
    let mut con = r.client();
    for i in 0..n {
        exec(
            &mut con,
            &["SET", &format!("{prefix}:{i}"), &format!("{prefix}-{i}")],
        );
    }
    exec(&mut con, &["HSET", &format!("{prefix}:h"), "f", prefix]);
}

/// The master's state now and a moment just after it (nothing is written around it).
fn checkpoint(r: &RedisServer) -> (String, Value) {
    let state = logical_state(r, 0);
    std::thread::sleep(Duration::from_millis(30));
    let moment = now_ms().to_string();
    std::thread::sleep(Duration::from_millis(30));
    (moment, state)
}

/// Each checkpoint restored as files into a new server equals the state recorded; a
/// mismatch shows the archive's summary and the end of the archiver's log (`p`).
fn restores_equal(a: &Archive, p: &PitrProcess, checkpoints: &[(String, Value)]) {
    for (i, (moment, want)) in checkpoints.iter().enumerate() {
        let restored = a.restore_as_files_and_start(moment, &[]);
        let got = crate::support::state::logical_state_con(&mut restored.con(), 0);
        assert!(
            got == *want,
            "checkpoint {i} at {moment}: {}\n{:#}\n{}",
            crate::support::state::diff(want, &got).unwrap_or_default(),
            a.ls_summary(),
            p.log_tail(60)
        );
    }
}

fn role(r: &RedisServer) -> String {
    r.info("replication")
        .get("role")
        .cloned()
        .unwrap_or_default()
}

/// Three sentinels (quorum 2) watching a master with two replicas.
struct Deployment {
    servers: Vec<RedisServer>,
    sentinels: Vec<(ManagedChild, u16, tempfile::TempDir)>,
}

impl Deployment {
    fn start() -> Deployment {
        let master = RedisServer::start(&[]);
        let mut servers = vec![master];
        for _ in 0..2 {
            let r =
                RedisServer::start(&[("replicaof", &format!("127.0.0.1 {}", servers[0].port()))]);
            r.wait_in_sync("a replica");
            servers.push(r);
        }
        let sentinels = (0..3).map(|_| start_sentinel_of(&servers[0], 2)).collect();
        let d = Deployment { servers, sentinels };
        wait_until_msg(
            Duration::from_secs(60),
            "the sentinels to know both replicas",
            || {
                d.sentinels.iter().all(|(_, port, _)| {
                    known_replica_ports(*port)
                        .iter()
                        .filter(|p| *p != "0")
                        .count()
                        == 2
                })
            },
        );
        d
    }

    fn url(&self) -> String {
        let addrs: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("sentinel://{}/mymaster", addrs.join(","))
    }

    /// The port the first sentinel names as the master's.
    fn named_master(&self) -> Option<u16> {
        named_master_at(self.sentinels[0].1)
    }

    fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("a server of the deployment")
    }

    /// Waits until every sentinel names a master other than `old` and that server is a master;
    /// returns it.
    fn wait_new_master(&self, old: u16) -> &RedisServer {
        wait_until_msg(
            Duration::from_secs(90),
            "the sentinels to name a new master",
            || {
                self.named_master().is_some_and(|p| p != old)
                    && role(self.server(self.named_master().unwrap())) == "master"
            },
        );
        self.server(self.named_master().unwrap())
    }
}

/// The port the sentinel at `port` names as the master's.
fn named_master_at(port: u16) -> Option<u16> {
    match sentinel(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]) {
        Ok(redis::Value::Array(a)) if a.len() == 2 => match &a[1] {
            redis::Value::BulkString(p) => String::from_utf8_lossy(p).parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A Sentinel process monitoring `master` as `mymaster` with `quorum`, quick to act, in a
/// temporary directory; its port.
pub(crate) fn start_sentinel_of(
    master: &RedisServer,
    quorum: u32,
) -> (ManagedChild, u16, tempfile::TempDir) {
    let dir = temp_dir("pitr-sentinel");
    let port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {} {quorum}\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n",
            dir.path().display(),
            master.port()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(redis_server_bin());
    cmd.arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = ManagedChild::spawn("redis-sentinel", &mut cmd);
    wait_until_msg(Duration::from_secs(30), "a sentinel to answer", || {
        sentinel(port, &["PING"]).is_ok()
    });
    (child, port, dir)
}

#[test]
fn the_archive_follows_sentinel_through_a_failover_and_a_kill_9_in_one_generation() {
    let d = Deployment::start();
    let a = Archive::local();
    let p = a.archiver_with(&d.url(), &["--flush-interval", "100ms"], &[]);
    let first = d.server(d.named_master().unwrap());
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        try_wait_acks(first, 3) == Some(3)
    });
    let mut checkpoints = Vec::new();
    write_some(first, "one", 100);
    assert_eq!(
        wait_acks(first, 3),
        3,
        "the archiver and both replicas have the writes"
    );
    checkpoints.push(checkpoint(first));

    // A manual failover: Sentinel promotes a replica and turns the old master into one.
    wait_until_msg(
        Duration::from_secs(60),
        "Sentinel to accept the failover",
        || sentinel(d.sentinels[0].1, &["SENTINEL", "FAILOVER", "mymaster"]).is_ok(),
    );
    let second = d.wait_new_master(first.port());
    // The archiver, the other replica and the old master, all on the new master.
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to follow the new master",
        || written_and_acked(second, "two", 3),
    );
    write_some(second, "two", 100);
    assert_eq!(wait_acks(second, 3), 3);
    checkpoints.push(checkpoint(second));

    // The master killed: Sentinel promotes another replica, the archiver follows.
    second.kill9();
    let third = d.wait_new_master(second.port());
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to follow the third master",
        || written_and_acked(third, "three", 2),
    );
    write_some(third, "three", 100);
    assert_eq!(wait_acks(third, 2), 2);
    checkpoints.push(checkpoint(third));
    // A write after the last moment, so that the window reaches past it.
    write_some(third, "end", 1);
    assert_eq!(wait_acks(third, 2), 2);
    assert!(p.is_running(), "{}", p.log_tail(30));
    p.stop_gracefully(Duration::from_secs(30));

    // No full resync: one generation, its replication ids those of the three masters.
    let ls = a.ls_summary();
    let generations = ls["generations"].as_array().unwrap();
    assert_eq!(generations.len(), 1, "{ls:#}\n{}", p.log_tail(40));
    // The manual failover leaves Sentinel's hellos (PUBLISH) on the old master past the
    // promotion: a branch that changes no data, which the generation goes on past.
    let id = generations[0]["id"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    for b in ls["branches"].as_array().unwrap() {
        assert_eq!(b["shifted"], true, "{b:#}");
        assert_eq!(b["lost_data_commands"], 0, "{b:#}");
        assert_eq!(b["continued_in"], id, "{b:#}");
    }
    let log = p.log();
    assert!(
        log.contains("+switch-master"),
        "the subscription saw the failovers:\n{log}"
    );
    a.verify();
    restores_equal(&a, &p, &checkpoints);
}

#[test]
fn failover_and_replicaof_on_the_master_are_followed() {
    let m = RedisServer::start(&[]);
    let r = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {}", m.port()))]);
    r.wait_in_sync("the replica");
    let a = Archive::local();
    let p = a.archiver(&m, &["--flush-interval", "100ms"]);
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        wait_acks(&m, 2) == 2
    });
    let mut checkpoints = Vec::new();
    write_some(&m, "one", 100);
    assert_eq!(wait_acks(&m, 2), 2);
    checkpoints.push(checkpoint(&m));

    // FAILOVER on the master: the replica becomes the master, the master its replica. The
    // archiver, pointed at the old master, moves to the new one (not chained through the old).
    // Named with TO: without it Redis takes the first caught-up replica, which may be the
    // archiver (docs/runbook.md).
    m.cmd(&["FAILOVER", "TO", "127.0.0.1", &r.port().to_string()]);
    wait_until_msg(Duration::from_secs(30), "the FAILOVER to complete", || {
        role(&r) == "master" && role(&m) == "slave"
    });
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to follow the new master",
        || written_and_acked(&r, "two", 2),
    );
    write_some(&r, "two", 100);
    assert_eq!(wait_acks(&r, 2), 2);
    checkpoints.push(checkpoint(&r));

    // And back with REPLICAOF.
    m.cmd(&["REPLICAOF", "NO", "ONE"]);
    r.cmd(&["REPLICAOF", "127.0.0.1", &m.port().to_string()]);
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to follow back",
        || written_and_acked(&m, "three", 2),
    );
    write_some(&m, "three", 100);
    assert_eq!(wait_acks(&m, 2), 2);
    checkpoints.push(checkpoint(&m));
    // Nothing written after the last moment: the stopped archiver's last vouched point
    // (`archive::stopped`) keeps it inside the window.
    p.stop_gracefully(Duration::from_secs(30));

    let ls = a.ls_summary();
    assert_eq!(
        ls["generations"].as_array().unwrap().len(),
        1,
        "{ls:#}\n{}",
        p.log_tail(40)
    );
    let log = p.log();
    assert!(log.contains("following its master"), "{log}");
    a.verify();
    restores_equal(&a, &p, &checkpoints);
}

#[test]
fn writes_a_failover_lost_are_a_branch_restorable_only_before_it() {
    let m = RedisServer::start(&[]);
    m.cmd(&[
        "ACL", "SETUSER", "repl", "on", ">repl-pw", "+@all", "~*", "&*",
    ]);
    let r = RedisServer::start(&[
        ("replicaof", &format!("127.0.0.1 {}", m.port())),
        ("masteruser", "repl"),
        ("masterauth", "repl-pw"),
    ]);
    r.wait_in_sync("the replica");
    let a = Archive::local();
    let p = a.archiver(&m, &["--flush-interval", "100ms"]);
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        wait_acks(&m, 2) == 2
    });
    let mut checkpoints = Vec::new();
    write_some(&m, "shared", 50);
    assert_eq!(wait_acks(&m, 2), 2);
    checkpoints.push(checkpoint(&m));

    // The replica cut off (its user disabled, its link killed): what the master takes now
    // reaches the archiver only.
    m.cmd(&["ACL", "SETUSER", "repl", "off"]);
    m.cmd(&["CLIENT", "KILL", "USER", "repl"]);
    wait_until_msg(
        Duration::from_secs(20),
        "the replica to lose its link",
        || {
            r.info("replication")
                .get("master_link_status")
                .map(String::as_str)
                != Some("up")
        },
    );
    let lost = 10;
    {
        let mut con = m.client();
        for i in 0..lost {
            exec(
                &mut con,
                &[
                    "SET",
                    &format!("lost:{i}"),
                    "acknowledged by the old master",
                ],
            );
        }
    }
    assert_eq!(
        wait_acks(&m, 1),
        1,
        "the archiver has the writes the replica lacks"
    );
    checkpoints.push(checkpoint(&m));
    // One more after the moment, so that the generation's window reaches past it.
    exec(&mut m.client(), &["SET", "lost:last", "x"]);
    assert_eq!(wait_acks(&m, 1), 1);

    // The replica promoted, the old master made its replica: its lost writes are gone.
    r.cmd(&["REPLICAOF", "NO", "ONE"]);
    m.cmd(&["REPLICAOF", "127.0.0.1", &r.port().to_string()]);
    wait_until_msg(Duration::from_secs(30), "the old master to resync", || {
        m.info("replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up")
    });
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to follow the new master",
        || written_and_acked(&r, "after", 2),
    );
    write_some(&r, "after", 50);
    assert_eq!(wait_acks(&r, 2), 2);
    checkpoints.push(checkpoint(&r));
    write_some(&r, "end", 1);
    assert_eq!(wait_acks(&r, 2), 2);
    p.stop_gracefully(Duration::from_secs(30));

    let ls = a.ls_summary();
    let branches = ls["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 1, "{ls:#}\n{}", p.log_tail(40));
    let b = &branches[0];
    let generations = ls["generations"].as_array().unwrap();
    assert_eq!(generations.len(), 2, "{ls:#}");
    let id = |g: &Value| g["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(b["generation"], id(&generations[0]), "{b:#}");
    assert_eq!(b["continued_in"], id(&generations[1]), "{b:#}");
    assert_eq!(b["shifted"], false, "{b:#}");
    assert_eq!(b["lost_data_commands"], lost + 1, "the eleven SETs: {b:#}");
    assert_eq!(
        b["new_master"],
        Value::from(format!("127.0.0.1:{}", r.port())),
        "{b:#}"
    );
    assert!(b["lost_bytes"].as_u64().unwrap() > 0, "{b:#}");
    // The SETs, and beside them the GETACKs of the WAITs and perhaps a PING of the master.
    let commands = b["lost_commands"]
        .as_u64()
        .expect("the lost range was read");
    assert!((lost + 1..=lost + 5).contains(&commands), "{b:#}");
    let text = crate::support::pitr::run_pitr_ok(&["ls", "--store", a.store()], &[]);
    assert!(
        text.contains("branch in generation")
            && text.contains(&format!("lost {commands} commands")),
        "{text}"
    );
    a.verify();
    // Before the failover the lost writes are there; after it they are not.
    restores_equal(&a, &p, &checkpoints);
    assert!(checkpoints[1].1.to_string().contains("lost:0"));
    assert!(!checkpoints[2].1.to_string().contains("lost:0"));
}

#[test]
fn a_sentinel_failover_under_writes_restores_every_checkpoint() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let d = Deployment::start();
    let a = Archive::local();
    let p = a.archiver_with(&d.url(), &["--flush-interval", "100ms"], &[]);
    let first = d.server(d.named_master().unwrap());
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        try_wait_acks(first, 3) == Some(3)
    });

    // A client that writes without pause to whichever server Sentinel names, as applications
    // do: on an error it asks Sentinel again. A checkpoint holds the gate between two writes.
    let gate = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (gate, stop, written) = (gate.clone(), stop.clone(), written.clone());
        let sentinel_port = d.sentinels[0].1;
        std::thread::spawn(move || {
            let mut con: Option<redis::Connection> = None;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let held = gate.lock().unwrap();
                if con.is_none() {
                    con = named_master_at(sentinel_port).and_then(|port| {
                        redis::Client::open(format!("redis://127.0.0.1:{port}"))
                            .ok()?
                            .get_connection_with_timeout(Duration::from_secs(2))
                            .ok()
                    });
                }
                if let Some(c) = con.as_mut() {
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(format!("w:{}", i % 500))
                        .arg(i)
                        .query(c);
                    match r {
                        Ok(()) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => con = None,
                    }
                }
                i += 1;
                drop(held);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The current master's state while the writer waits, once the replicas and the archiver
    // have everything.
    let take = |replicas: i64| {
        let _held = gate.lock().unwrap();
        let m = d.server(d.named_master().unwrap());
        wait_until_msg(
            Duration::from_secs(60),
            "the replicas and the archiver to catch up",
            || try_wait_acks(m, replicas as usize).is_some_and(|a| a >= replicas),
        );
        checkpoint(m)
    };
    let mut checkpoints = Vec::new();
    std::thread::sleep(Duration::from_millis(800));
    checkpoints.push(take(3));
    std::thread::sleep(Duration::from_millis(800));
    checkpoints.push(take(3));

    wait_until_msg(
        Duration::from_secs(60),
        "Sentinel to accept the failover",
        || sentinel(d.sentinels[0].1, &["SENTINEL", "FAILOVER", "mymaster"]).is_ok(),
    );
    let second = d.wait_new_master(first.port());
    let at_failover = written.load(Ordering::Relaxed);
    wait_until_msg(Duration::from_secs(30), "writes to the new master", || {
        written.load(Ordering::Relaxed) > at_failover + 200
    });
    checkpoints.push(take(3));
    std::thread::sleep(Duration::from_millis(800));
    checkpoints.push(take(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    write_some(second, "end", 1);
    assert_eq!(wait_acks(second, 3), 3);
    p.stop_gracefully(Duration::from_secs(30));

    // One generation, or two when writes reached the old master after the promotion: then a
    // branch that lost writes says so.
    let ls = a.ls_summary();
    let generations = ls["generations"].as_array().unwrap();
    let branches = ls["branches"].as_array().unwrap();
    let lossy: Vec<&Value> = branches.iter().filter(|b| b["shifted"] == false).collect();
    assert_eq!(
        generations.len(),
        1 + lossy.len(),
        "{ls:#}\n{}",
        p.log_tail(40)
    );
    for b in lossy {
        assert!(
            b["lost_data_commands"].as_u64().is_some_and(|n| n > 0),
            "{b:#}\n{}",
            p.log_tail(60)
        );
    }
    a.verify();
    restores_equal(&a, &p, &checkpoints);
}
