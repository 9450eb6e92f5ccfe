//! The archiver beside a real Sentinel (`redis-server --sentinel`, the binary the
//! `redis-sentinel` package runs): it announces port 0, so Sentinel never picks it as a
//! replica to promote. With the archiver as the master's only replica, `SENTINEL FAILOVER`
//! finds no replica to promote; with a real replica beside it, the failover promotes that one.

use std::time::Duration;

use crate::support::archiving::*;
use crate::support::redis_server::redis_server_bin;
use crate::support::*;

/// A Sentinel process monitoring `master` as `mymaster` (quorum 1), in a temporary directory;
/// its port.
fn start_sentinel(master: &RedisServer) -> (ManagedChild, u16, tempfile::TempDir) {
    let dir = temp_dir("pitr-sentinel");
    let port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 2000\n\
             sentinel failover-timeout mymaster 10000\n",
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
    wait_until_msg(Duration::from_secs(30), "the sentinel to answer", || {
        sentinel(port, &["PING"]).is_ok()
    });
    (child, port, dir)
}

fn sentinel(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
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
    let (_sentinel, port, _dir) = start_sentinel(&master);
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
