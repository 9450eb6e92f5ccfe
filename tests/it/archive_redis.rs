//! `pitr archive` against real `redis-server` processes: full syncs both ways with a large RDB,
//! AUTH, kill -9 and restart, master restart, backlog overrun, WAIT, SIGTERM.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::archiving::*;
use crate::support::*;
use serde_json::Value;

const FLUSH: &[&str] = &["--flush-interval", "200ms"];

/// `pitr archive` of `source` with a short flush interval.
fn archiver(a: &Archive, source: &str, envs: &[(String, String)]) -> PitrProcess {
    a.archiver_with(source, FLUSH, envs)
}

/// `pitr archive` started again after the previous one was killed: it takes over the lease the
/// killed one left (the module `lease` tests waiting for it to expire instead).
fn restarted(a: &Archive, source: &str) -> PitrProcess {
    a.archiver_with(source, &["--flush-interval", "200ms", "--takeover"], &[])
}

fn caught_up(a: &Archive, r: &RedisServer) -> Value {
    a.caught_up(r, Duration::from_secs(30))
}

fn full_sync_large(diskless: &str) {
    let r = RedisServer::start(&[
        ("repl-diskless-sync", diskless),
        ("repl-diskless-sync-delay", "0"),
        ("rdbcompression", "no"),
    ]);
    // About 120 MB of RDB.
    r.cmd(&["DEBUG", "POPULATE", "1000000", "key", "100"]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    // Writes while the snapshot is taken and streamed.
    let mut con = r.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("during:{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    p.wait_for_log("snapshot durable", Duration::from_secs(120));
    wait_online(&r, Duration::from_secs(30));
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("after:{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let g = caught_up(&a, &r);
    assert_eq!(g["snapshots"].as_array().unwrap().len(), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let v = a.verify();
    assert!(
        v["raw_bytes"].as_u64().unwrap() > 100_000_000,
        "RDB smaller than expected: {v}"
    );
    assert!(v["commands"].as_u64().unwrap() >= 200);
    let log = p.log();
    let framing = if diskless == "yes" { "EOF" } else { "len" };
    assert!(
        log.contains("snapshot durable"),
        "{framing}: no snapshot log\n{log}"
    );
}

#[test]
fn full_sync_disk_based_over_100mb() {
    full_sync_large("no");
}

#[test]
fn full_sync_diskless_over_100mb() {
    full_sync_large("yes");
}

#[test]
fn auth_with_requirepass_from_the_environment() {
    let r = RedisServer::start(&[("requirepass", "s3cret-pass")]);
    let a = Archive::local();
    // The password comes from the environment, not argv, and never reaches the logs.
    let p = archiver(
        &a,
        &plain_url(&r),
        &[("PITR_SOURCE_PASSWORD".into(), "s3cret-pass".into())],
    );
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    assert!(!p.log().contains("s3cret"), "password in the log");
    a.verify();

    // Or from a file named by PITR_SOURCE_PASSWORD_FILE (as systemd credentials and
    // Kubernetes secrets give it), with its trailing newline.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "s3cret-pass\n").unwrap();
    let file_var = (
        "PITR_SOURCE_PASSWORD_FILE".to_string(),
        secret.path().display().to_string(),
    );
    let p = archiver(&a, &plain_url(&r), std::slice::from_ref(&file_var));
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v")
        .query(&mut con)
        .unwrap();
    assert!(wait_archived(&mut con, 5000) >= 1);
    p.stop_gracefully(Duration::from_secs(30));
    assert!(!p.log().contains("s3cret"), "password in the log");
    // Both set is a usage error that names them, not the secret.
    let both = archiver(
        &a,
        &plain_url(&r),
        &[
            file_var,
            ("PITR_SOURCE_PASSWORD".into(), "s3cret-pass".into()),
        ],
    );
    let st = both
        .wait_timeout(Duration::from_secs(30))
        .expect("both variables end the archiver");
    assert_eq!(st.code(), Some(2), "{}", both.log());
    assert!(
        both.log()
            .contains("PITR_SOURCE_PASSWORD_FILE and PITR_SOURCE_PASSWORD are both set"),
        "{}",
        both.log()
    );
    assert!(!both.log().contains("s3cret"), "password in the log");
    a.verify();

    // A wrong password is a clear, fatal error.
    let bad = archiver(
        &a,
        &plain_url(&r),
        &[("REDISCLI_AUTH".into(), "wrong".into())],
    );
    let st = bad
        .wait_timeout(Duration::from_secs(30))
        .expect("a wrong password ends the archiver");
    assert!(!st.success());
    assert!(bad.log().contains("authentication"), "{}", bad.log());
    assert!(!bad.log().contains("wrong\""), "password in the log");
}

#[test]
fn auth_with_an_acl_user_that_has_only_what_the_archiver_needs() {
    let r = RedisServer::start(&[("requirepass", "adminpass")]);
    r.cmd(&[
        "ACL",
        "SETUSER",
        "archiver",
        "on",
        ">archiver-pass",
        "-@all",
        "+psync",
        "+replconf",
        "+ping",
    ]);
    let a = Archive::local();
    let p = archiver(
        &a,
        &format!("redis://archiver@127.0.0.1:{}", r.port()),
        &[("PITR_SOURCE_PASSWORD".into(), "archiver-pass".into())],
    );
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    a.verify();
}

/// Writes continuously on one connection until told to stop; counts the writes.
fn writer(
    r: &RedisServer,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let mut con = r.client();
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for j in 0..50 {
                pipe.cmd("SET")
                    .arg(format!("w:{}", (i * 50 + j) % 5000))
                    .arg(i * 50 + j)
                    .ignore();
                pipe.cmd("INCR").arg("counter").ignore();
            }
            if pipe.query::<()>(&mut con).is_err() {
                // The master is restarting; try again shortly.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            i += 1;
            count.fetch_add(100, Ordering::Relaxed);
        }
    })
}

#[test]
fn kill9_during_heavy_writes_resumes_the_same_generation() {
    let r = RedisServer::start(&[("repl-backlog-size", "64mb")]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let w = writer(&r, stop.clone(), count.clone());
    std::thread::sleep(Duration::from_millis(1500));
    p.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let p2 = restarted(&a, &plain_url(&r));
    p2.wait_for_log("partial resync", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    p2.kill9();
    let p3 = restarted(&a, &plain_url(&r));
    p3.wait_for_log("partial resync", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(
        count.load(Ordering::Relaxed) > 1000,
        "the writer made too few writes"
    );
    let mut con = r.client();
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let g = caught_up(&a, &r);
    p3.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    assert_eq!(
        ls["generations"].as_array().unwrap().len(),
        1,
        "a restart must continue the generation: {ls:#}"
    );
    assert!(g["holes"].as_array().unwrap().is_empty());
    assert_eq!(g["last_offset"].as_u64().unwrap(), master_offset(&r));
    a.verify();
}

/// Archives a master across `restart`, with a write before and one after; returns the
/// archive's listing once everything is archived and the archiver stopped.
fn across_a_restart(restart: impl FnOnce(&RedisServer)) -> (Archive, Value) {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    r.cmd(&["SET", "before", "1"]);
    caught_up(&a, &r);
    restart(&r);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    exec(&mut con, &["SET", "after", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    a.verify();
    (a, ls)
}

#[test]
fn master_restart_without_data_starts_a_new_generation_and_shows_the_gap() {
    let (a, ls) = across_a_restart(RedisServer::restart);
    assert_eq!(ls["generations"].as_array().unwrap().len(), 2, "{ls:#}");
    assert_eq!(ls["gaps"].as_array().unwrap().len(), 1, "{ls:#}");
    let text = run_pitr_ok(&["ls", "--store", a.store()], &[]);
    assert!(text.contains("gap between generation"), "{text}");
}

#[test]
fn master_restart_with_save_continues_the_generation() {
    let (_a, ls) = across_a_restart(RedisServer::restart_with_save);
    assert_eq!(ls["generations"].as_array().unwrap().len(), 1, "{ls:#}");
}

#[test]
fn backlog_overrun_forces_a_full_resync_and_a_new_generation() {
    let r = RedisServer::start(&[("repl-backlog-size", "16kb")]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    r.cmd(&["SET", "before", "1"]);
    caught_up(&a, &r);
    p.kill9();
    // Far more than the backlog holds, while the archiver is away.
    let big = "x".repeat(1000);
    let mut con = r.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&big)
            .query(&mut con)
            .unwrap();
    }
    let p2 = restarted(&a, &plain_url(&r));
    p2.wait_for_log("new generation", Duration::from_secs(30));
    wait_online(&r, Duration::from_secs(30));
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut con)
        .unwrap();
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p2.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    let gens = ls["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{ls:#}");
    let gap = &ls["gaps"][0];
    assert_eq!(gap["from_offset"], gens[0]["last_offset"]);
    assert_eq!(gap["to_offset"], gens[1]["first_offset"]);
    a.verify();
}

#[test]
fn wait_returns_once_the_write_is_in_the_store() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    // A long flush interval: WAIT must not have to wait for it (GETACK flushes at once).
    let p = a.archiver(&r, &["--flush-interval", "30s"]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let t = std::time::Instant::now();
        assert_eq!(wait_archived(&mut con, 2000), 1);
        assert!(t.elapsed() < Duration::from_secs(2));
        // Right now, not after some delay: the archive holds the write.
        let offset = master_offset(&r);
        let ls = a.ls();
        let last = ls["generations"][0]["last_offset"].as_u64().unwrap();
        // The master's offset may have moved on by its own PING; the write is before it.
        assert!(
            last + 14 >= offset && last <= offset,
            "archive at {last}, master at {offset}"
        );
    }
    // SIGTERM: exit 0, everything acked.
    let before = master_offset(&r);
    p.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    assert!(ls["generations"][0]["last_offset"].as_u64().unwrap() >= before - 14);
    a.verify();
}

/// Every file under `dir`, recursively.
/// The files of the archive whose names end with `suffix`, sorted by name.
fn archived(a: &Archive, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = files_under(std::path::Path::new(a.store()))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// `GET key` on a restored server.
fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

#[test]
fn a_store_removed_under_the_archiver_is_noticed_and_nothing_unrestorable_is_acked() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    std::fs::remove_dir_all(a.store()).unwrap();
    exec(&mut con, &["SET", "after", "2"]);
    // The write may be acknowledged only once it is restorable: in a new generation, whose
    // snapshot is in the store before the acknowledgement.
    let acked = wait_archived(&mut con, 20000);
    let snaps = archived(&a, ".snapshot");
    assert_eq!(acked, 1, "never acknowledged again\n{}", p.log_tail(40));
    assert!(
        !snaps.is_empty(),
        "WAIT returned 1 for a write no restore can reach (no snapshot in the store)\n{}",
        p.log_tail(40)
    );
    p.assert_running();
    exec(&mut con, &["SET", "later", "3"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    let last = ls["generations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["snapshots"].as_array().unwrap().len(), 1, "{ls:#}");
    assert!(last["problems"].as_array().unwrap().is_empty(), "{ls:#}");
    let (target, _) = a.restore_into_new_server("latest", &[]);
    let mut t = target.client();
    assert_eq!(get(&mut t, "before").as_deref(), Some("1"));
    assert_eq!(get(&mut t, "after").as_deref(), Some("2"));
    assert_eq!(get(&mut t, "later").as_deref(), Some("3"));
}

#[test]
fn a_generation_that_lost_its_snapshot_is_not_resumed_after_a_restart() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.kill9();
    // What an archiver that wrote on after its store was emptied left: segments, no base.
    for s in archived(&a, ".snapshot") {
        std::fs::remove_file(s).unwrap();
    }
    let p2 = restarted(&a, &plain_url(&r));
    p2.wait_for_log("not resuming", Duration::from_secs(30));
    wait_online(&r, Duration::from_secs(30));
    exec(&mut con, &["SET", "after", "2"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p2.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    let gens = ls["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{ls:#}");
    assert_eq!(gens[1]["snapshots"].as_array().unwrap().len(), 1, "{ls:#}");
    let (target, _) = a.restore_into_new_server("latest", &[]);
    let mut t = target.client();
    assert_eq!(get(&mut t, "before").as_deref(), Some("1"));
    assert_eq!(get(&mut t, "after").as_deref(), Some("2"));
}

#[test]
fn staging_files_of_killed_full_syncs_are_removed_at_the_next_start() {
    let r = RedisServer::start(&[
        ("repl-diskless-sync", "yes"),
        ("repl-diskless-sync-delay", "0"),
        ("rdbcompression", "no"),
    ]);
    // About 40 MB of RDB: the full sync takes long enough to be killed in the middle.
    r.cmd(&["DEBUG", "POPULATE", "300000", "key", "120"]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_until_msg(
        Duration::from_secs(60),
        "a snapshot upload to begin",
        || !archived(&a, ".snapshot#1").is_empty(),
    );
    p.kill9();
    let left = archived(&a, ".snapshot#1");
    assert!(!left.is_empty(), "the killed upload left no staging file");
    let p2 = restarted(&a, &plain_url(&r));
    p2.wait_for_log("snapshot durable", Duration::from_secs(120));
    for f in &left {
        assert!(!f.exists(), "{} was left behind", f.display());
    }
    let staging: Vec<_> = files_under(std::path::Path::new(a.store()))
        .into_iter()
        .filter(|f| file_name(f).contains('#'))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    p2.stop_gracefully(Duration::from_secs(30));
}

#[test]
fn a_corrupt_newest_segment_starts_a_new_generation_and_verify_names_it() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    a.archive_while(&r, |con| exec(con, &["SET", "before", "1"]));
    let newest = archived(&a, ".segment").pop().expect("a segment");
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&newest, &bytes).unwrap();
    let name = file_name(&newest);

    let p = archiver(&a, &plain_url(&r), &[]);
    // Not an exit: a loud log naming the object, and a new generation with a full sync.
    p.wait_for_log("not resuming", Duration::from_secs(30));
    p.assert_running();
    assert!(p.stderr().contains(&name), "{}", p.log_tail(40));
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "after", "2"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    assert_eq!(a.ls()["generations"].as_array().unwrap().len(), 2);
    // The corrupt object is left for verify to report.
    let out = run_pitr(&["verify", "--store", a.store()], &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
    let (target, _) = a.restore_into_new_server("latest", &[]);
    let mut t = target.client();
    assert_eq!(get(&mut t, "before").as_deref(), Some("1"));
    assert_eq!(get(&mut t, "after").as_deref(), Some("2"));
}

#[test]
fn stray_objects_are_not_resumed_and_the_last_generation_id_is_a_clear_error() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    a.archive_while(&r, |con| exec(con, &["SET", "before", "1"]));
    let snap = archived(&a, ".snapshot").pop().unwrap();
    let stem = file_name(&snap);
    // `<store>/default/<generation>/snapshots/<file>`.
    let archive_dir = std::path::Path::new(a.store()).join("default");
    // Garbage named like a snapshot of a later generation: never resumed from by name.
    let stray = archive_dir.join("0000000005").join("snapshots").join(&stem);
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, vec![0x42u8; 4096]).unwrap();
    let p = archiver(&a, &plain_url(&r), &[]);
    p.wait_for_log("not resuming", Duration::from_secs(30));
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "after", "2"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    let last = ls["generations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["id"], "0000000006", "{ls:#}");
    let (target, _) = a.restore_into_new_server("latest", &[]);
    assert_eq!(get(&mut target.client(), "after").as_deref(), Some("2"));

    // Generation 9999999999: nothing can follow it. A clear error, and nothing written
    // under an id that does not fit the names.
    let stray = archive_dir.join("9999999999").join("snapshots").join(&stem);
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, vec![0x42u8; 4096]).unwrap();
    let p = archiver(&a, &plain_url(&r), &[]);
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("the archiver refuses to start");
    assert!(!st.success());
    let log = p.log();
    assert!(
        log.contains("9999999999") && log.contains("last id"),
        "{log}"
    );
    assert!(!archive_dir.join("10000000000").exists());
}

/// A master that stops answering (DEBUG SLEEP) while the archiver streams must be noticed
/// within --read-timeout, although the archiver keeps sending ACKs every second; the archiver
/// then reconnects and continues with a partial resync.
#[test]
fn read_timeout_fires_while_streaming() {
    // The master's own PING every second keeps an idle but healthy link under the timeout.
    let r = RedisServer::start(&[("repl-ping-replica-period", "1")]);
    let a = Archive::local();
    let p = a.archiver(&r, &["--flush-interval", "200ms", "--read-timeout", "3s"]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    // Blocks the master (and this thread) for 6 s: nothing reaches the archiver.
    exec(&mut con, &["DEBUG", "SLEEP", "6"]);
    p.wait_for_log("no data from", Duration::from_secs(20));
    p.wait_for_log("partial resync: continuing", Duration::from_secs(30));
    wait_online(&r, Duration::from_secs(30));
    exec(&mut con, &["SET", "after", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    assert_eq!(ls["generations"].as_array().unwrap().len(), 1, "{ls:#}");
    a.verify();
}

/// Repeated `CLIENT KILL TYPE replica` under steady writes, with the default 1 MB backlog:
/// each reconnect must come fast (the backoff starts again once a session is established), so
/// every one is a partial resync and every write is archived.
#[test]
fn replica_kills_under_writes_resync_partially_and_archive_every_write() {
    let r = RedisServer::start(&[("repl-backlog-size", "1mb")]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    wait_online(&r, Duration::from_secs(30));
    // About 400 KB of stream a second: the backlog holds 2 to 3 s of it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut wcon = r.client();
    let s = stop.clone();
    let value = "v".repeat(200);
    let w = std::thread::spawn(move || {
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for _ in 0..20 {
                pipe.cmd("SET")
                    .arg(format!("w:{}", i % 5000))
                    .arg(&value)
                    .ignore();
                i += 1;
            }
            pipe.query::<()>(&mut wcon)
                .expect("the master takes the writes");
            std::thread::sleep(Duration::from_millis(10));
        }
        i
    });
    let resyncs = |p: &PitrProcess| {
        let log = p.stderr();
        log.matches("partial resync").count() + log.matches("full resync").count()
    };
    for k in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        r.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
        wait_until_msg(Duration::from_secs(60), "the archiver to reattach", || {
            resyncs(&p) > k
        });
        wait_online(&r, Duration::from_secs(30));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = w.join().unwrap();
    assert!(writes > 2000, "the writer made too few writes: {writes}");
    let mut con = r.client();
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let g = caught_up(&a, &r);
    p.stop_gracefully(Duration::from_secs(30));
    let log = p.stderr();
    assert!(!log.contains("full resync"), "{}", p.log_tail(60));
    assert_eq!(
        log.matches("partial resync: continuing").count(),
        8,
        "{}",
        p.log_tail(60)
    );
    let ls = a.ls();
    assert_eq!(ls["generations"].as_array().unwrap().len(), 1, "{ls:#}");
    assert!(g["holes"].as_array().unwrap().is_empty(), "{ls:#}");
    assert_eq!(g["last_offset"].as_u64().unwrap(), master_offset(&r));
    a.verify();
}

/// SIGTERM while the snapshot streams into the store: the upload is aborted (nothing a reader
/// would trust is left), the archiver says so and exits 0.
#[test]
fn sigterm_during_a_full_sync_abandons_the_snapshot_and_exits_0() {
    let r = RedisServer::start(&[
        ("repl-diskless-sync", "yes"),
        ("repl-diskless-sync-delay", "0"),
    ]);
    r.cmd(&["DEBUG", "POPULATE", "20000", "key", "10"]);
    // 1 ms per key: the full sync takes about 20 s.
    r.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "1000"]);
    let a = Archive::local();
    let p = archiver(&a, &plain_url(&r), &[]);
    p.wait_for_log("full sync: new generation", Duration::from_secs(30));
    // Some of the RDB has arrived and gone into the upload.
    std::thread::sleep(Duration::from_millis(1500));
    p.assert_running();
    p.sigterm();
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("the archiver exits after SIGTERM");
    assert!(st.success(), "exit {st}\n{}", p.log_tail(40));
    assert!(
        p.stderr().contains("snapshot abandoned"),
        "{}",
        p.log_tail(40)
    );
    assert!(
        !p.stderr().contains("snapshot durable"),
        "{}",
        p.log_tail(40)
    );
    let files = files_under(std::path::Path::new(a.store()));
    assert!(files.is_empty(), "left in the store: {files:?}");
    // An empty archive: `ls` exits 3 (not found) and lists no generation.
    let out = run_pitr(&["ls", "--store", a.store(), "--json"], &[]);
    let ls: Value = serde_json::from_slice(&out.stdout).expect("ls --json");
    assert!(ls["generations"].as_array().unwrap().is_empty(), "{ls:#}");
}

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// A single command larger than --max-buffer (the master's replica output-buffer limit off)
/// would have to be held whole. The archiver refuses it as soon as its size is known, says so,
/// and starts a new generation with a full sync (whose snapshot holds the command's effect).
/// Its peak RSS stays under 2 x --max-buffer (what the read buffer and the bytes not yet
/// durable may hold) plus a fixed 16 MiB (runtime, zstd contexts; this test's snapshot is
/// small, so its upload buffers are too): 32 MiB, less than the command alone.
#[test]
fn command_larger_than_max_buffer_is_refused_within_the_memory_bound() {
    const MAX_BUFFER: u64 = 8 << 20;
    const BOUND: u64 = 2 * MAX_BUFFER + (16 << 20);
    let r = RedisServer::start(&[("client-output-buffer-limit", "replica 0 0 0")]);
    let a = Archive::local();
    let p = a.archiver(&r, &["--flush-interval", "200ms", "--max-buffer", "8MiB"]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let big = "x".repeat(40 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    drop(big);
    exec(&mut con, &["SET", "after", "1"]);
    // Archived (once the archiver is back with its new generation).
    wait_until_msg(
        Duration::from_secs(120),
        "the write after it archived",
        || wait_archived(&mut con, 1000) == 1,
    );
    caught_up(&a, &r);
    let hwm = peak_rss(p.pid());
    eprintln!("archiver peak RSS: {} MiB", hwm >> 20);
    assert!(
        hwm < BOUND,
        "peak RSS {} MiB, bound {} MiB\n{}",
        hwm >> 20,
        BOUND >> 20,
        p.log_tail(30)
    );
    p.stop_gracefully(Duration::from_secs(30));
    let log = p.stderr();
    assert!(log.contains("refusing the command"), "{}", p.log_tail(30));
    assert!(
        log.contains("full sync after the refused command"),
        "{}",
        p.log_tail(30)
    );
    let ls = a.ls();
    let gens = ls["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{ls:#}");
    assert_eq!(ls["gaps"].as_array().unwrap().len(), 1, "{ls:#}");
    a.verify();
}

/// While the archiver is attached and the master idle, the restorable window reaches the
/// moment the archiver last vouched for (its lease), not only the last write: a restore to a
/// moment after the last write succeeds and gives the state of that write.
#[test]
fn the_window_reaches_the_vouched_moment_while_the_master_is_idle() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let a = Archive::local();
    let p = archiver(
        &a,
        &plain_url(&r),
        &[("PITR_LEASE_TTL".to_string(), "3s".to_string())],
    );
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "k", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let last_write = caught_up(&a, &r)["last_time_ms"].as_u64().unwrap();
    // Renewals every half second (a sixth of 3 s): a few of them while nothing is written.
    std::thread::sleep(Duration::from_secs(3));
    let g = caught_up(&a, &r);
    let vouched = g["vouched_ms"].as_u64().expect("a vouched moment");
    assert!(vouched > last_write + 1000, "{g:#}");
    assert_eq!(g["last_time_ms"].as_u64(), Some(vouched));
    let (target, report) = a.restore_into_new_server(&vouched.to_string(), &[]);
    assert_eq!(
        get(&mut target.client(), "k").as_deref(),
        Some("1"),
        "{report:#}"
    );
    p.stop_gracefully(Duration::from_secs(30));
}
