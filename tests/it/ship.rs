//! `pitr ship` with real redis-server, from one Garage bucket to a second one (or between
//! two local directories): restores from the copy equal those from the source at
//! several moments; compaction on the source then `--mirror-deletes`; a second writer on the
//! destination is refused by its lease; a corrupted copy is found by the next run; `--follow`
//! killed with -9 under load and run again finishes the job, and its lag falls to 0.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::metrics::{get_ok, metric};
use crate::support::archiving::*;
use crate::support::*;

/// The exit code of a refused lease (README, "Exit codes").
const EXIT_LEASE: i32 = 6;

const ARCHIVER_ARGS: &[&str] = &["--flush-interval", "50ms", "--compaction-levels", "off"];

fn ship_args<'a>(from: &'a Archive, to: &'a Archive, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["ship", "--from", from.store(), "--to", to.store(), "--json"];
    a.extend_from_slice(extra);
    a
}

/// `pitr ship … --json` once, which must succeed; its report.
fn ship_ok(from: &Archive, to: &Archive, envs: &[(String, String)], extra: &[&str]) -> Value {
    let out = run_pitr_ok(&ship_args(from, to, extra), envs);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The logical state (every key, value and TTL) of a server restored as files from `a` at
/// `to`.
fn digest_at(a: &Archive, to: &str) -> Value {
    let r = a.restore_as_files_and_start(to, &[]);
    let mut con = r.con();
    crate::support::state::logical_state_con(&mut con, 0)
}

/// Segment names (relative to the archive) in `ls --objects`-independent form: every object
/// name a local archive holds.
fn names_under(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = files_under(std::path::Path::new(dir))
        .into_iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            (n.ends_with(".segment") || n.ends_with(".snapshot")).then_some(n)
        })
        .collect();
    v.sort();
    v
}

/// Writes `n` keys (some with TTLs, some overwritten), returning the time after them.
fn write_some(con: &mut redis::Connection, from: u64, n: u64) -> u64 {
    for i in from..from + n {
        exec(con, &["SET", &format!("k{}", i % 300), &i.to_string()]);
        if i % 7 == 0 {
            exec(
                con,
                &["HSET", &format!("h{}", i % 20), &format!("f{i}"), "v"],
            );
        }
        if i % 11 == 0 {
            exec(con, &["PEXPIRE", &format!("k{}", i % 300), "3600000"]);
        }
    }
    assert_eq!(wait_archived(con, 5000), 1);
    std::thread::sleep(Duration::from_millis(30));
    now_ms()
}

#[test]
fn ship_to_garage_restores_the_same_mirrors_compaction_and_refuses_a_second_writer() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    // From one Garage bucket to a second one.
    let g = Garage::start();
    let envs = g.env();
    let a = Archive::at(g.store_url("source"), envs.clone());
    let p = a.archiver(&master, ARCHIVER_ARGS);
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    let mut moments = Vec::new();
    for round in 0..4 {
        moments.push(write_some(&mut con, round * 200, 200));
        std::thread::sleep(Duration::from_millis(300));
    }
    // A scheduled snapshot in the middle, then more writes.
    a.snapshot_now(&master);
    moments.push(write_some(&mut con, 1000, 200));
    p.stop_gracefully(Duration::from_secs(30));

    let b = Archive::at(g.create_bucket("pitr-copy", "shipped"), envs.clone());

    // A ship that holds the destination's lease: a second one is refused, so is an archiver.
    let follow = PitrProcess::spawn(&ship_args(&a, &b, &["--follow", "--interval", "1s"]), &envs);
    follow.wait_for_log("ship round", Duration::from_secs(60));
    let second = run_pitr(&ship_args(&a, &b, &[]), &envs);
    assert_eq!(
        second.status.code(),
        Some(EXIT_LEASE),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("pitr ship"));
    let archiver = run_pitr_timeout(
        &[
            "archive",
            "--source",
            &plain_url(&master),
            "--store",
            b.store(),
        ],
        &envs,
        Duration::from_secs(30),
    );
    assert_eq!(archiver.status.code(), Some(EXIT_LEASE));
    follow.stop_gracefully(Duration::from_secs(30));

    // Everything is there, checked; a second run copies nothing.
    let again = ship_ok(&a, &b, &envs, &[]);
    assert_eq!(again["objects_copied"], 0, "{again}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source_objects = rt.block_on(async {
        use futures::TryStreamExt;
        let metas: Vec<_> = g
            .object_store_at("source")
            .list(None)
            .try_collect()
            .await
            .unwrap();
        metas
            .iter()
            .filter(|m| {
                let n = m.location.as_ref();
                n.ends_with(".segment") || n.ends_with(".snapshot")
            })
            .count() as u64
    });
    assert_eq!(
        again["objects_skipped"].as_u64().unwrap(),
        source_objects,
        "{again}"
    );
    assert_eq!(again["lag"]["objects"], 0);
    b.verify();
    // Moments with writes after them (the window ends at the last write's arrival).
    for (i, t) in moments[..moments.len() - 1].iter().enumerate().step_by(2) {
        let t = t.to_string();
        assert_eq!(digest_at(&a, &t), digest_at(&b, &t), "moment {i} ({t})");
    }
    assert_eq!(digest_at(&a, "latest"), digest_at(&b, "latest"));

    // Compaction on the source, then a ship with --mirror-deletes: the destination holds
    // what the source holds, and still restores the same.
    let c = a.json("compact", &["--levels", "1s,2s"]);
    assert!(c["objects_deleted"].as_u64().unwrap() > 0, "{c}");
    let without = ship_ok(&a, &b, &envs, &[]);
    assert_eq!(without["objects_deleted"], 0, "{without}");
    assert!(without["objects_copied"].as_u64().unwrap() > 0, "{without}");
    let mirrored = ship_ok(&a, &b, &envs, &["--mirror-deletes"]);
    assert!(
        mirrored["objects_deleted"].as_u64().unwrap() > 0,
        "{mirrored}"
    );
    let (la, lb) = (a.ls(), b.ls());
    assert_eq!(
        la["generations"][0]["segments_by_level"], lb["generations"][0]["segments_by_level"],
        "{la:#}\n{lb:#}"
    );
    b.verify();
    let t = moments[2].to_string();
    assert_eq!(digest_at(&a, &t), digest_at(&b, &t));

    // A corrupted copy (same name and size, one byte flipped) is found by the next run,
    // deleted and copied again.
    let store = g.object_store_in("pitr-copy", "shipped");
    let victim = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let m = metas
            .into_iter()
            .find(|m| m.location.as_ref().ends_with(".segment"))
            .expect("a segment");
        let mut bytes = store
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        store.put(&m.location, bytes.into()).await.unwrap();
        m.location.to_string()
    });
    let out = run_pitr(&ship_args(&a, &b, &[]), &envs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let file = victim.rsplit('/').next().unwrap();
    assert!(
        log.contains("fails its check") && log.contains(file),
        "the corrupted {victim} was not named: {log}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["objects_copied"], 1, "{r}");
    b.verify();
}

#[test]
fn follow_killed_under_load_and_run_again_catches_up_with_no_lag() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    let b = Archive::local();
    let p = a.archiver(&master, ARCHIVER_ARGS);
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    write_some(&mut con, 0, 100);
    let ship = PitrProcess::spawn(
        &ship_args(
            &a,
            &b,
            &["--follow", "--interval", "200ms", "--parallel", "4"],
        ),
        &[],
    );
    // Writes go on while it ships; killed in the middle.
    let started = Instant::now();
    let mut i = 100;
    while started.elapsed() < Duration::from_secs(4) {
        write_some(&mut con, i, 20);
        i += 20;
    }
    ship.kill9();
    let killed_with = names_under(b.store()).len();
    assert!(killed_with > 0);
    // While the source keeps growing, a restore from the copy sees a contiguous prefix.
    let r = b.restore("latest", &["--dry-run"]);
    assert!(
        r.get("segments").is_some() || r.get("plan").is_some(),
        "{r}"
    );

    // Run again (the killed one's lease is taken over), writes still going on, then stop them.
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let ship = PitrProcess::spawn(
        &ship_args(
            &a,
            &b,
            &[
                "--follow",
                "--interval",
                "200ms",
                "--takeover",
                "--metrics-addr",
                &addr,
            ],
        ),
        &[],
    );
    let started = Instant::now();
    let mid = write_some(&mut con, i, 20);
    i += 20;
    while started.elapsed() < Duration::from_secs(2) {
        write_some(&mut con, i, 20);
        i += 20;
    }
    let last = write_some(&mut con, i, 20);
    p.stop_gracefully(Duration::from_secs(30));
    let rounds_before = ship.stdout().lines().count();
    // The lag falls to 0 once the writes stop.
    wait_until_msg(Duration::from_secs(60), "the lag to fall to 0", || {
        let out = ship.stdout();
        let rounds = out.lines().skip(rounds_before);
        rounds
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| {
                r["lag"]["objects"] == 0
                    && r["lag"]["seconds"].as_f64() == Some(0.0)
                    && r["lag"]["destination_newest_ms"]
                        .as_u64()
                        .is_some_and(|d| d + 1000 >= last)
            })
    });
    // Its own lag, as metrics: none left, copies counted, ready.
    let port: u16 = port.parse().unwrap();
    wait_until_msg(Duration::from_secs(30), "pitr_ship_lag_objects 0", || {
        metric(port, "pitr_ship_lag_objects") == 0.0
    });
    assert_eq!(metric(port, "pitr_ship_lag_seconds"), 0.0);
    assert!(metric(port, "pitr_ship_copied_objects_total") > 0.0);
    assert_eq!(get_ok(port, "/readyz").0, 200);
    ship.stop_gracefully(Duration::from_secs(30));
    let again = ship_ok(&a, &b, &[], &[]);
    assert_eq!(again["objects_copied"], 0, "{again}");
    assert_eq!(names_under(a.store()), names_under(b.store()));
    b.verify();
    assert_eq!(digest_at(&a, "latest"), digest_at(&b, "latest"));
    let t = mid.to_string();
    assert_eq!(digest_at(&a, &t), digest_at(&b, &t));
}

/// `pitr archive --also-to`: a second store kept by the archiver itself; a restore from it
/// equals the master, at the end and at a moment in the middle; the copy's lease is held
/// meanwhile (a ship to it is refused), and after a graceful stop the copy holds every object.
#[test]
fn archive_also_to_keeps_a_checked_copy() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    let b = Archive::local();
    let mut args = ARCHIVER_ARGS.to_vec();
    args.extend_from_slice(&["--also-to", b.store()]);
    let p = a.archiver(&master, &args);
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    let mid = write_some(&mut con, 0, 200);
    let before = master_offset(&master);
    wait_until_msg(
        Duration::from_secs(60),
        "the copy to reach the master",
        || {
            // Empty (exit 3) until the first copy.
            let out = run_pitr(&["ls", "--store", b.store(), "--objects", "--json"], &[]);
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["generations"]
                .as_array()
                .and_then(|g| g.last())
                .and_then(|g| g["last_offset"].as_u64())
                .is_some_and(|o| o >= before)
        },
    );
    // The copy's writer is the archiver: a ship to it is refused.
    let out = run_pitr(&ship_args(&a, &b, &[]), &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_LEASE),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = write_some(&mut con, 200, 100);
    assert!(last >= mid);
    p.stop_gracefully(Duration::from_secs(60));
    assert!(
        p.log().contains("--also-to: the copy is up to date"),
        "{}",
        p.log_tail(20)
    );
    assert_eq!(names_under(a.store()), names_under(b.store()));
    b.verify();
    assert_eq!(digest_at(&a, "latest"), digest_at(&b, "latest"));
    let t = mid.to_string();
    assert_eq!(digest_at(&a, &t), digest_at(&b, &t));
    // --also-to the archive's own store is a usage error.
    let out = run_pitr(
        &[
            "archive",
            "--source",
            &plain_url(&master),
            "--store",
            a.store(),
            "--also-to",
            a.store(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}
