//! Scheduled snapshots (`pitr archive --snapshot-interval`) and `pitr snapshot` against a real
//! `redis-server`: the snapshots are read from the store directly (decoded headers), since
//! `ls` and `verify` report a generation's second snapshot as a fork until the catalog accepts
//! scheduled ones.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_pitr::archive::format::{self, SnapshotHeader, Taken};

use crate::support::archiving::*;
use crate::support::*;

/// A master whose full syncs start at once (no diskless delay).
fn master() -> RedisServer {
    RedisServer::start(&[("repl-diskless-sync-delay", "0")])
}

fn stat(r: &RedisServer, field: &str) -> u64 {
    r.info("stats")[field]
        .parse()
        .unwrap_or_else(|_| panic!("{field} is a number"))
}

/// The snapshot objects of the archive `default` in the local store `store`, as
/// `(path, header)`, sorted by generation and offset.
fn snapshots(store: &str) -> Vec<(PathBuf, SnapshotHeader)> {
    let root = Path::new(store).join("default");
    let mut found = Vec::new();
    let Ok(gens) = std::fs::read_dir(&root) else {
        return found;
    };
    for g in gens.flatten() {
        let Ok(files) = std::fs::read_dir(g.path().join("snapshots")) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".snapshot") || name.contains('#') {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let pre = format::parse_preamble(&bytes)
                .unwrap()
                .expect("a whole preamble");
            let h =
                SnapshotHeader::decode(&bytes[pre.header.clone()], pre.header.start, pre.version)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            found.push((p, h));
        }
    }
    found.sort_by_key(|(_, h)| (h.generation, h.offset, h.time_ms));
    found
}

fn scheduled(store: &str) -> Vec<(PathBuf, SnapshotHeader)> {
    snapshots(store)
        .into_iter()
        .filter(|(_, h)| h.taken == Some(Taken::Scheduled))
        .collect()
}

/// Writes until `stop`, in pipelines.
fn writer(r: &RedisServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut con = r.client();
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for j in 0..20 {
                pipe.cmd("SET")
                    .arg(format!("w:{}", (i * 20 + j) % 2000))
                    .arg(i)
                    .ignore();
                pipe.cmd("INCR").arg("counter").ignore();
            }
            pipe.query::<()>(&mut con).expect("the writes succeed");
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn scheduled_snapshots_under_writes_leave_the_archiving_link_alone() {
    let r = master();
    let a = Archive::local();
    let p = a.archiver(
        &r,
        &["--flush-interval", "200ms", "--snapshot-interval", "3s"],
    );
    wait_online(&r, Duration::from_secs(60));
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    assert_eq!(stat(&r, "sync_full"), 1, "the base's full sync");
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&r, stop.clone());
    let mut con = r.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    // WAIT keeps being answered by the archiving link while snapshots are taken beside it.
    let mut waits = 0;
    while scheduled(a.store()).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 scheduled snapshots\n{}",
            p.log_tail(60)
        );
        exec(&mut con, &["SET", "probe", &waits.to_string()]);
        assert_eq!(
            wait_archived(&mut con, 5000),
            1,
            "WAIT was not answered\n{}",
            p.log_tail(60)
        );
        waits += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    exec(&mut con, &["SET", "last", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let sync_full = stat(&r, "sync_full");
    let stored_before_stop = scheduled(a.store()).len() as u64;
    p.stop_gracefully(Duration::from_secs(30));
    let log = p.log();
    assert!(!log.contains("scheduled snapshot discarded"), "{log}");
    assert!(!log.contains("scheduled snapshot failed"), "{log}");

    let all = snapshots(a.store());
    let sched = scheduled(a.store());
    // One generation: the base and the scheduled snapshots in it, at distinct offsets.
    assert!(all.iter().all(|(_, h)| h.generation.0 == 1), "{all:?}");
    let base: Vec<_> = all
        .iter()
        .filter(|(_, h)| h.taken == Some(Taken::Base))
        .collect();
    assert_eq!(base.len(), 1, "{all:?}");
    let base_offset = base[0].1.offset;
    let mut last = base_offset;
    for (path, h) in &sched {
        assert!(h.offset > 0 && h.offset > last, "{}: {h:?}", path.display());
        assert!(path.starts_with(Path::new(a.store()).join("default/0000000001/snapshots")));
        last = h.offset;
    }
    // Each snapshot is one full sync of the master; the one in progress when the archiver
    // stopped (if any) was counted by the master but abandoned. No partial resync failed:
    // the archiving link never had to reconnect.
    let extra = sync_full - 1 - stored_before_stop;
    assert!(
        extra <= 1,
        "sync_full {sync_full} for {stored_before_stop} scheduled snapshots\n{log}"
    );
    assert_eq!(stat(&r, "sync_partial_err"), 0);
    assert_eq!(
        log.matches("full sync: new generation").count(),
        1,
        "a new generation\n{log}"
    );
    assert!(
        log.matches("scheduled snapshot durable").count() >= 3,
        "{log}"
    );
}

#[test]
fn pitr_snapshot_asks_the_running_archiver_and_prints_the_snapshot() {
    let r = master();
    let a = Archive::local();
    // Without an archiver, nothing can take it: a usage error naming the need.
    let out = run_pitr(&["snapshot", "--store", a.store(), "--timeout", "5s"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("archiver"), "{err}");

    // Scheduled snapshots off: only the request makes one.
    let p = a.archiver(
        &r,
        &["--flush-interval", "200ms", "--snapshot-interval", "0"],
    );
    wait_online(&r, Duration::from_secs(60));
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    let mut con = r.client();
    for i in 0..100 {
        exec(&mut con, &["SET", &format!("k{i}"), &i.to_string()]);
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    assert_eq!(stat(&r, "sync_full"), 1);
    let asked = now_ms();
    let v = a.snapshot_now(&r);
    assert_eq!(v["kind"], "scheduled", "{v}");
    assert_eq!(v["generation"], 1, "{v}");
    assert!(v["offset"].as_u64().unwrap() > 0, "{v}");
    assert!(v["time_ms"].as_u64().unwrap() >= asked, "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    let sched = scheduled(a.store());
    assert_eq!(sched.len(), 1, "{sched:?}");
    assert_eq!(Some(sched[0].1.offset), v["offset"].as_u64());
    assert!(sched[0]
        .0
        .to_string_lossy()
        .ends_with(v["object"].as_str().unwrap()));
    assert_eq!(stat(&r, "sync_full"), 2);
    // The archiver removes the request it answered.
    let request = Path::new(a.store()).join("default/snapshot-request");
    wait_until_msg(Duration::from_secs(10), "the request to be removed", || {
        !request.exists()
    });
    // The archiving link was not disturbed.
    exec(&mut con, &["SET", "after", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    assert_eq!(stat(&r, "sync_partial_err"), 0);

    // Text output, for a second one.
    let out = run_pitr_ok(&["snapshot", "--store", a.store(), "--timeout", "60s"], &[]);
    assert!(out.starts_with("snapshot 0000000001/snapshots/"), "{out}");
    assert_eq!(scheduled(a.store()).len(), 2);
    p.stop_gracefully(Duration::from_secs(30));
    assert!(p.log().contains("snapshot requested"), "{}", p.log());
}

#[test]
fn restores_start_from_the_newest_scheduled_snapshot_at_or_before_the_target() {
    let r = master();
    let a = Archive::local();
    let p = a.archiver(
        &r,
        &["--flush-interval", "200ms", "--snapshot-interval", "3s"],
    );
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    let mut n = 0u64;
    while scheduled(a.store()).len() < 2 {
        n += 1;
        exec(&mut con, &["SET", "n", &n.to_string()]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(n < 20_000, "no scheduled snapshots\n{}", p.log_tail(60));
    }
    for _ in 0..50 {
        n += 1;
        exec(&mut con, &["SET", "n", &n.to_string()]);
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let sched = scheduled(a.store());
    let newest = &sched.last().unwrap().1;
    let first = &sched[0].1;

    let plan = a.json("restore", &["--to", "latest", "--dry-run"]);
    assert_eq!(
        plan["snapshot"]["offset"].as_u64(),
        Some(newest.offset),
        "{plan}"
    );

    let just_after = (first.time_ms + 1).to_string();
    let plan = a.json("restore", &["--to", &just_after, "--dry-run"]);
    assert_eq!(
        plan["snapshot"]["offset"].as_u64(),
        Some(first.offset),
        "{plan}"
    );
    let dir = util::temp_dir("restored");
    let out_dir = dir.path().join("out");
    let report = a.json(
        "restore",
        &[
            "--to",
            &just_after,
            "--output-dir",
            &out_dir.to_string_lossy(),
        ],
    );
    assert!(
        report["offset"].as_u64().unwrap() >= first.offset,
        "{report}"
    );
}
