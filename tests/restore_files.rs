//! `pitr restore --output-dir` against real servers: archive a master while writing, restore
//! to chosen moments as files, start a stock redis-server on them with the printed command
//! line, and compare what it holds. Also: the plan, the errors for moments outside the archive.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::restored::{connect, start_from};
use support::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn wait_online(r: &RedisServer) {
    wait_until_msg(Duration::from_secs(60), "the archiver to be online", || {
        r.info("replication")
            .get("slave0")
            .is_some_and(|s| s.contains("state=online"))
    });
}

fn get_all(port: u16, keys: &[&str]) -> Vec<Option<String>> {
    let mut c = connect(port);
    keys.iter()
        .map(|k| redis::cmd("GET").arg(*k).query(&mut c).unwrap())
        .collect()
}

fn restore_json(store: &str, to: &str, dir: &std::path::Path) -> Value {
    let out = run_pitr_ok(
        &[
            "restore",
            "--store",
            store,
            "--to",
            to,
            "--output-dir",
            &dir.to_string_lossy(),
            "--json",
        ],
        &[],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn restore_to_moments_as_files_that_redis_loads() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    r.cmd(&["SET", "base", "0"]);
    let archive = temp_dir("pitr-archive");
    let store = archive.path().to_string_lossy().into_owned();
    let p = PitrProcess::spawn(
        &[
            "archive",
            "--source",
            &format!("redis://127.0.0.1:{}", r.port()),
            "--store",
            &store,
            "--flush-interval",
            "100ms",
        ],
        &[],
    );
    wait_online(&r);
    let mut con = r.client();
    let wait = |con: &mut redis::Connection| {
        let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(con).unwrap();
        assert_eq!(n, 1);
    };
    // Checkpoint 0: only the snapshot.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut con).unwrap();
    wait(&mut con);
    std::thread::sleep(Duration::from_millis(20));
    let t1 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    // A transaction, then more writes.
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("a")
        .arg("2")
        .cmd("INCR")
        .arg("n")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("in3")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    wait(&mut con);
    std::thread::sleep(Duration::from_millis(20));
    let t2 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    let _: () = redis::cmd("DEL").arg("base").query(&mut con).unwrap();
    wait(&mut con);
    p.stop_gracefully(Duration::from_secs(30));

    let snap_time = {
        let ls: Value =
            serde_json::from_str(&run_pitr_ok(&["ls", "--store", &store, "--json"], &[])).unwrap();
        ls["generations"][0]["snapshots"][0]["time_ms"]
            .as_u64()
            .unwrap()
    };
    assert!(snap_time <= t0);

    let keys = ["base", "a", "n"];
    let cases: [(u64, &[Option<&str>]); 3] = [
        (t0, &[Some("0"), None, None]),
        (t1, &[Some("0"), Some("1"), None]),
        (t2, &[Some("0"), Some("2"), Some("1")]),
    ];
    for (i, (t, want)) in cases.iter().enumerate() {
        let dir = temp_dir("pitr-restore");
        let out = dir.path().join("data");
        let rep = restore_json(&store, &t.to_string(), &out);
        assert!(rep["time_ms"].as_u64().unwrap() <= *t, "{rep}");
        let layout = rep["files"]["layout"].as_str().unwrap();
        if i == 0 {
            assert_eq!(
                layout, "rdb",
                "a cut at the snapshot is a plain dump.rdb: {rep}"
            );
        } else {
            assert_eq!(layout, "aof-multipart", "{rep}");
        }
        let (_srv, port) = start_from(rep["files"]["command_line"].as_str().unwrap());
        let got = get_all(port, &keys);
        let want: Vec<Option<String>> = want.iter().map(|w| w.map(String::from)).collect();
        assert_eq!(got, want, "checkpoint {i} at {t}: {rep}");
    }
    // Latest: db 3 too, and `base` deleted.
    let dir = temp_dir("pitr-restore");
    let rep = restore_json(&store, "latest", dir.path());
    let (_srv, port) = start_from(rep["files"]["command_line"].as_str().unwrap());
    assert_eq!(get_all(port, &["base", "a"]), vec![None, Some("2".into())]);
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/3"))
        .unwrap()
        .get_connection()
        .unwrap();
    let v: Option<String> = redis::cmd("GET").arg("in3").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("x"));
}

#[test]
fn plans_and_errors_name_what_and_where() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = temp_dir("pitr-archive");
    let store = archive.path().to_string_lossy().into_owned();
    // An empty archive: not found.
    let out = run_pitr(
        &["restore", "--store", &store, "--to", "latest", "--dry-run"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let p = PitrProcess::spawn(
        &[
            "archive",
            "--source",
            &format!("redis://127.0.0.1:{}", r.port()),
            "--store",
            &store,
        ],
        &[],
    );
    wait_online(&r);
    let mut con = r.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(n, 1);
    p.stop_gracefully(Duration::from_secs(30));

    let plan: Value = serde_json::from_str(&run_pitr_ok(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--dry-run",
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(plan["segments"].as_array().unwrap().len(), 1, "{plan}");
    assert!(plan["bytes"].as_u64().unwrap() > 0);

    // Before the archive began: an error naming the nearest restorable point.
    let out = run_pitr(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "2020-01-01T00:00:00Z",
            "--output-dir",
            "/nonexistent/x",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("outside every restorable window"), "{err}");
    assert!(err.contains("offset"), "{err}");
    // Nothing was written for a failed plan.
    assert!(!std::path::Path::new("/nonexistent/x").exists());
    // A bad --to is a usage error.
    let out = run_pitr(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "yesterday",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    // No destination is a usage error.
    let out = run_pitr(&["restore", "--store", &store, "--to", "latest"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// Archives a master holding keys in two databases, then writes more (one command touching a
/// selected and an unselected key). Returns the master, the archive dir and its store path.
fn two_db_archive() -> (RedisServer, tempfile::TempDir, String) {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = r.client();
    for db in [0, 1] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut con).unwrap();
        for i in 0..5 {
            let _: () = redis::cmd("SET")
                .arg(format!("user:{i}"))
                .arg(db)
                .query(&mut con)
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(format!("order:{i}"))
                .arg(db)
                .query(&mut con)
                .unwrap();
        }
    }
    let archive = temp_dir("pitr-archive");
    let store = archive.path().to_string_lossy().into_owned();
    let p = PitrProcess::spawn(
        &[
            "archive",
            "--source",
            &format!("redis://127.0.0.1:{}", r.port()),
            "--store",
            &store,
        ],
        &[],
    );
    wait_online(&r);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("user:new")
        .arg("n")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("order:new")
        .arg("n")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("user:0")
        .arg("order:0")
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(n, 1);
    p.stop_gracefully(Duration::from_secs(30));
    (r, archive, store)
}

fn keys_of(con: &mut redis::Connection, db: i64) -> Vec<String> {
    let _: () = redis::cmd("SELECT").arg(db).query(con).unwrap();
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    k.sort();
    k
}

#[test]
fn selective_restore_keeps_the_chosen_keys_in_both_modes() {
    let (_r, _archive, store) = two_db_archive();
    let want0 = vec!["user:1", "user:2", "user:3", "user:4", "user:new"];
    // A live target.
    let target = RedisServer::start(&[]);
    let out = run_pitr_ok(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--target",
            &format!("redis://127.0.0.1:{}", target.port()),
            "--db",
            "0",
            "--match",
            "user:*",
            "--json",
        ],
        &[],
    );
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["keys"], 5, "{rep}");
    assert_eq!(rep["keys_skipped"], 15, "{rep}");
    assert_eq!(
        rep["commands_mixed"], 1,
        "DEL user:0 order:0 is applied whole: {rep}"
    );
    assert!(rep["commands_skipped"].as_u64().unwrap() >= 1, "{rep}");
    let mut con = target.client();
    assert_eq!(keys_of(&mut con, 0), want0);
    assert!(keys_of(&mut con, 1).is_empty());
    // Files.
    let dir = temp_dir("pitr-restore");
    let rep = {
        let out = run_pitr_ok(
            &[
                "restore",
                "--store",
                &store,
                "--to",
                "latest",
                "--output-dir",
                &dir.path().to_string_lossy(),
                "--db",
                "0",
                "--match",
                "user:*",
                "--json",
            ],
            &[],
        );
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let (_srv, port) = start_from(rep["files"]["command_line"].as_str().unwrap());
    let mut con = connect(port);
    assert_eq!(keys_of(&mut con, 0), want0);
    assert!(keys_of(&mut con, 1).is_empty());
}

#[test]
fn corrupt_objects_fail_the_restore_naming_the_object_and_byte() {
    let (_r, archive, store) = two_db_archive();
    // Flip a byte in the middle of the (only) segment.
    let seg = walk(archive.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "segment"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let target = RedisServer::start(&[]);
    let out = run_pitr(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--target",
            &format!("redis://127.0.0.1:{}", target.port()),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&name) && err.contains("byte"), "{err}");
    let out = run_pitr(&["verify", "--store", &store], &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));

    // A truncated snapshot: the restore fails before writing anything a server would load.
    let snap = walk(archive.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .expect("a snapshot");
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() - 40]).unwrap();
    let dir = temp_dir("pitr-restore");
    let out_dir = dir.path().join("data");
    let out = run_pitr(
        &[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--output-dir",
            &out_dir.to_string_lossy(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(".snapshot"), "{err}");
    assert!(
        walk(&out_dir).is_empty(),
        "files left in {}",
        out_dir.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
