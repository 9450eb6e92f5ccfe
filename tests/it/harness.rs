//! Tests of the test harness itself (`tests/support`): real redis-server,
//! real Garage, real `pitr` binary.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

fn text(v: &redis::Value) -> String {
    crate::support::redis_server::value_to_string(v)
}

fn pid_alive(pid: u32) -> bool {
    // A reaped child's /proc entry disappears (a zombie's would not).
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RedisServer>();
    check::<Garage>();
    check::<PitrProcess>();
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let set: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(set.len(), ports.len(), "free_port handed out a port twice");
    for p in ports {
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("free port is bindable");
    }
}

#[test]
#[should_panic(expected = "not found on PATH")]
fn require_binary_panics_when_missing() {
    require_binary("definitely-not-a-real-binary-4b1d");
}

#[test]
fn require_binary_finds_tools() {
    assert!(require_binary("redis-server").is_file());
    assert!(require_binary("garage").is_file());
}

#[test]
fn wait_until_polls_and_panics_on_timeout() {
    let start = Instant::now();
    wait_until(Duration::from_secs(5), || {
        start.elapsed() > Duration::from_millis(200)
    });
    let r = std::panic::catch_unwind(|| {
        wait_until_msg(Duration::from_millis(100), "never", || false);
    });
    let err = r.expect_err("wait_until_msg must panic on timeout");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("never"), "panic message: {msg}");
}

#[test]
fn managed_child_is_killed_on_drop_and_signals_work() {
    let mut c = ManagedChild::spawn("sleep", Command::new("sleep").arg("300"));
    let pid = c.pid();
    assert!(c.is_running());
    assert!(live_children().iter().any(|(p, _)| *p == pid));
    assert!(c.signal("TERM"));
    let st = c
        .wait_timeout(Duration::from_secs(10))
        .expect("exits on TERM");
    assert!(!st.success());
    assert!(!live_children().iter().any(|(p, _)| *p == pid));
    assert!(!c.signal("TERM"), "no signal after the child was reaped");

    let c = ManagedChild::spawn("sleep", Command::new("sleep").arg("300"));
    let pid = c.pid();
    drop(c);
    assert!(!pid_alive(pid), "dropped child {pid} is still alive");
}

#[test]
fn redis_server_lifecycle() {
    let r = RedisServer::start(&[
        ("requirepass", "s3cr3t"),
        ("repl-diskless-sync", "no"),
        ("repl-backlog-size", "1mb"),
    ]);
    assert!(r.url().starts_with("redis://:s3cr3t@127.0.0.1:"));
    assert_eq!(r.password(), Some("s3cr3t"));
    let port = r.port();
    let pid = r.pid().expect("running");

    // Config really applied.
    let cfg = r.cmd(&["CONFIG", "GET", "repl-backlog-size"]);
    assert!(text(&cfg).contains("1048576"), "{cfg:?}");
    assert_eq!(text(&r.cmd(&["CONFIG", "GET", "save"])), "save\n");

    // SET / GET through the cached connection and a fresh client.
    assert_eq!(r.cmd(&["SET", "k1", "v1"]), redis::Value::Okay);
    assert_eq!(text(&r.cmd(&["GET", "k1"])), "v1");
    let mut con = r.client();
    let v: String = redis::cmd("GET").arg("k1").query(&mut con).unwrap();
    assert_eq!(v, "v1");
    assert!(r.try_cmd(&["NOSUCHCOMMAND"]).is_err());

    let info = r.info("replication");
    assert_eq!(info.get("role").map(String::as_str), Some("master"));
    let replid1 = info["master_replid"].clone();
    assert_eq!(replid1.len(), 40);

    // Restart without persistence: same port, empty, new replid.
    r.restart();
    assert_eq!(r.port(), port);
    assert_ne!(r.pid(), Some(pid));
    assert!(!pid_alive(pid), "old redis-server {pid} still alive");
    assert_eq!(r.cmd(&["GET", "k1"]), redis::Value::Nil);
    let replid2 = r.info("replication")["master_replid"].clone();
    assert_ne!(replid1, replid2);

    // Redis saves its replication id in the RDB only once it has a backlog,
    // i.e. once a replica has attached: attach one.
    r.cmd(&["SET", "k2", "v2"]);
    let replica = RedisServer::start(&[
        ("replicaof", &format!("127.0.0.1 {port}")),
        ("masterauth", "s3cr3t"),
    ]);
    replica.wait_in_sync("replica in sync");
    assert_eq!(text(&replica.cmd(&["GET", "k2"])), "v2");
    let info = r.info("replication");
    assert_eq!(info["connected_slaves"], "1");
    // The first replica made the master switch to a fresh replid.
    let replid3 = info["master_replid"].clone();
    assert_ne!(replid3, replid2);

    // Restart with SHUTDOWN SAVE: data kept, old replid kept as replid2.
    r.restart_with_save();
    assert_eq!(r.port(), port);
    assert_eq!(text(&r.cmd(&["GET", "k2"])), "v2");
    let info = r.info("replication");
    assert_eq!(info["master_replid2"], replid3, "{info:?}");
    assert!(r.rdb_path().exists());
    // The replica continues with a partial resync.
    replica.wait_in_sync("replica back in sync");
    assert_eq!(
        replica.info("replication")["master_replid"],
        info["master_replid"]
    );
    assert!(
        replica
            .log_tail()
            .contains("Successful partial resynchronization"),
        "{}",
        replica.log_tail()
    );
    drop(replica);

    // kill -9, then start again from the same directory.
    let pid = r.pid().unwrap();
    r.kill9();
    assert!(!r.is_running());
    assert!(!pid_alive(pid));
    assert!(r.try_cmd(&["PING"]).is_err());
    r.start_again();
    assert_eq!(text(&r.cmd(&["GET", "k2"])), "v2", "dump.rdb reloaded");
    assert!(r.log_tail().contains("Ready to accept connections"));

    // Drop kills the process and removes the directory.
    let pid = r.pid().unwrap();
    let dir = r.dir().to_path_buf();
    drop(r);
    assert!(!pid_alive(pid), "redis-server {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn redis_server_without_password_and_stop() {
    let r = RedisServer::start(&[]);
    assert_eq!(r.url(), format!("redis://127.0.0.1:{}", r.port()));
    r.cmd(&["SET", "a", "1"]);
    r.stop();
    assert!(!r.is_running());
    r.start_again();
    assert_eq!(
        r.cmd(&["GET", "a"]),
        redis::Value::Nil,
        "save \"\" means no dump"
    );
}

#[test]
fn garage_lifecycle() {
    let g = Garage::start();
    assert!(g.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(g.bucket(), "pitr");
    assert_eq!(g.region(), "garage");
    assert!(g.access_key().starts_with("GK"), "{}", g.access_key());
    assert_eq!(g.secret_key().len(), 64);
    assert_eq!(g.store_url("/a/b/"), "s3://pitr/a/b");
    let env = g.env();
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
    ] {
        assert!(env.iter().any(|(n, _)| n == k), "env() lacks {k}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = g.object_store();
    let path = ObjPath::from("harness/dir/object.bin");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    rt.block_on(async {
        store
            .put(&path, PutPayload::from(body.clone()))
            .await
            .expect("put");
        store
            .put(&ObjPath::from("harness/other.txt"), PutPayload::from("x"))
            .await
            .expect("put 2");
        let got = store.get(&path).await.expect("get").bytes().await.unwrap();
        assert_eq!(got.as_ref(), body.as_slice());
        let mut listed: Vec<String> = store
            .list(Some(&ObjPath::from("harness")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        listed.sort();
        assert_eq!(listed, vec!["harness/dir/object.bin", "harness/other.txt"]);

        // A prefixed view of the same bucket.
        let sub = g.object_store_at("harness/dir");
        let got = sub
            .get(&ObjPath::from("object.bin"))
            .await
            .expect("get via prefix")
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), body.len());
    });

    // Stop: the S3 port is closed; start again: the data is still there.
    g.stop();
    assert!(!g.is_running());
    assert!(!g.s3_answers());
    g.start_again();
    assert!(g.is_running());
    let store = g.object_store();
    rt.block_on(async {
        let got = store
            .get(&path)
            .await
            .expect("get after restart")
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), body.as_slice());
        store.delete(&path).await.expect("delete");
        assert!(store.head(&path).await.is_err());
    });

    let dir = g.dir().to_path_buf();
    drop(g);
    assert!(!dir.exists());
}

#[test]
fn pitr_binary_runs() {
    assert!(pitr_bin().is_file());
    let out = run_pitr(&["--help"], &[]);
    assert!(
        out.status.success(),
        "pitr --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = run_pitr_ok(&["--help"], &[]);
    assert!(stdout.contains("Usage"), "{stdout}");

    let p = PitrProcess::spawn(&["--help"], &[("RUST_LOG".into(), "debug".into())]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("exits");
    assert!(st.success(), "{}", p.log());
    assert!(p.log().contains("Usage"), "{}", p.log());
    assert!(!p.is_running());
    assert!(!p.sigterm(), "no signal to a reaped process");
}
