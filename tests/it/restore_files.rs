//! `pitr restore --output-dir` against real servers: archive a master while writing, restore
//! to chosen moments as files, start a stock redis-server on them with the printed command
//! line, and compare what it holds. Also: the plan, the errors for moments outside the archive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::archiving::*;
use crate::support::*;

fn get_all(port: u16, keys: &[&str]) -> Vec<Option<String>> {
    let mut c = crate::support::restored::connect(port);
    keys.iter()
        .map(|k| redis::cmd("GET").arg(*k).query(&mut c).unwrap())
        .collect()
}

/// Sleeps a little, takes the time, sleeps again: a moment clearly between two writes.
fn moment() -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    let t = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    t
}

#[test]
fn restore_to_moments_as_files_that_redis_loads() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    r.cmd(&["SET", "base", "0"]);
    let archive = Archive::local();
    let p = archive.archiver(&r, &["--flush-interval", "100ms"]);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    let wait = |con: &mut redis::Connection| assert_eq!(wait_archived(con, 5000), 1);
    // Checkpoint 0: only the snapshot.
    let t0 = moment();
    exec(&mut con, &["SET", "a", "1"]);
    wait(&mut con);
    let t1 = moment();
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
    exec(&mut con, &["SELECT", "3"]);
    exec(&mut con, &["SET", "in3", "x"]);
    exec(&mut con, &["SELECT", "0"]);
    wait(&mut con);
    let t2 = moment();
    exec(&mut con, &["DEL", "base"]);
    wait(&mut con);
    p.stop_gracefully(Duration::from_secs(30));

    let snap_time = archive.ls()["generations"][0]["snapshots"][0]["time_ms"]
        .as_u64()
        .unwrap();
    assert!(snap_time <= t0);

    let keys = ["base", "a", "n"];
    let cases: [(u64, &[Option<&str>]); 3] = [
        (t0, &[Some("0"), None, None]),
        (t1, &[Some("0"), Some("1"), None]),
        (t2, &[Some("0"), Some("2"), Some("1")]),
    ];
    for (i, (t, want)) in cases.iter().enumerate() {
        let files = archive.restore_as_files_and_start(&t.to_string(), &[]);
        let rep = &files.report;
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
        let want: Vec<Option<String>> = want.iter().map(|w| w.map(String::from)).collect();
        assert_eq!(
            get_all(files.port, &keys),
            want,
            "checkpoint {i} at {t}: {rep}"
        );
    }
    // Latest: db 3 too, and `base` deleted.
    let files = archive.restore_as_files_and_start("latest", &[]);
    assert_eq!(
        get_all(files.port, &["base", "a"]),
        vec![None, Some("2".into())]
    );
    let mut c = files.con();
    exec(&mut c, &["SELECT", "3"]);
    let v: Option<String> = redis::cmd("GET").arg("in3").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("x"));
}

/// `pitr restore --store <archive> <args…>`, expected to fail with `code`; its stderr.
fn restore_fails(archive: &Archive, args: &[&str], code: i32) -> String {
    let mut all = vec!["restore", "--store", archive.store()];
    all.extend_from_slice(args);
    let out = run_pitr(&all, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    err
}

#[test]
fn plans_and_errors_name_what_and_where() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    // An empty archive: not found.
    restore_fails(&archive, &["--to", "latest", "--dry-run"], 3);
    archive.archive_while(&r, |con| exec(con, &["SET", "k", "v"]));

    let plan = archive.restore("latest", &["--dry-run"]);
    assert_eq!(plan["segments"].as_array().unwrap().len(), 1, "{plan}");
    assert!(plan["bytes"].as_u64().unwrap() > 0);

    // Before the archive began: an error naming the nearest restorable point.
    let err = restore_fails(
        &archive,
        &[
            "--to",
            "2020-01-01T00:00:00Z",
            "--output-dir",
            "/nonexistent/x",
        ],
        3,
    );
    assert!(err.contains("outside every restorable window"), "{err}");
    assert!(err.contains("offset"), "{err}");
    // Nothing was written for a failed plan.
    assert!(!Path::new("/nonexistent/x").exists());
    // A bad --to, and no destination, are usage errors.
    restore_fails(&archive, &["--to", "yesterday", "--dry-run"], 2);
    restore_fails(&archive, &["--to", "latest"], 2);
}

/// Archives a master holding keys in two databases, then writes more (one command touching a
/// selected and an unselected key). Returns the master and the archive.
fn two_db_archive() -> (RedisServer, Archive) {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = r.client();
    for db in ["0", "1"] {
        exec(&mut con, &["SELECT", db]);
        for i in 0..5 {
            exec(&mut con, &["SET", &format!("user:{i}"), db]);
            exec(&mut con, &["SET", &format!("order:{i}"), db]);
        }
    }
    let archive = Archive::local();
    archive.archive_while(&r, |con| {
        exec(con, &["SET", "user:new", "n"]);
        exec(con, &["SET", "order:new", "n"]);
        exec(con, &["DEL", "user:0", "order:0"]);
    });
    (r, archive)
}

fn keys_of(con: &mut redis::Connection, db: i64) -> Vec<String> {
    exec(con, &["SELECT", &db.to_string()]);
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    k.sort();
    k
}

#[test]
fn selective_restore_keeps_the_chosen_keys_in_both_modes() {
    let (_r, archive) = two_db_archive();
    let want0 = vec!["user:1", "user:2", "user:3", "user:4", "user:new"];
    let subset = ["--db", "0", "--match", "user:*"];
    // A live target.
    let (target, rep) = archive.restore_into_new_server("latest", &subset);
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
    let files = archive.restore_as_files_and_start("latest", &subset);
    let mut con = files.con();
    assert_eq!(keys_of(&mut con, 0), want0);
    assert!(keys_of(&mut con, 1).is_empty());
}

#[test]
fn corrupt_objects_fail_the_restore_naming_the_object_and_byte() {
    let (_r, archive) = two_db_archive();
    let find = |ext: &str| {
        walk(Path::new(archive.store()))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("a {ext}"))
    };
    // Flip a byte in the middle of the (only) segment.
    let seg = find("segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let target = RedisServer::start(&[]);
    let err = restore_fails(
        &archive,
        &["--to", "latest", "--target", &plain_url(&target)],
        4,
    );
    assert!(err.contains(&name) && err.contains("byte"), "{err}");
    let out = run_pitr(&["verify", "--store", archive.store()], &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));

    // A truncated snapshot: the restore fails before writing anything a server would load.
    let snap = find("snapshot");
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() - 40]).unwrap();
    let dir = temp_dir("pitr-restore");
    let out_dir = dir.path().join("data");
    let err = restore_fails(
        &archive,
        &["--to", "latest", "--output-dir", &out_dir.to_string_lossy()],
        4,
    );
    assert!(err.contains(".snapshot"), "{err}");
    assert!(
        walk(&out_dir).is_empty(),
        "files left in {}",
        out_dir.display()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

#[test]
fn readers_of_a_missing_store_path_do_not_create_it() {
    let dir = temp_dir("pitr-missing");
    let store = dir.path().join("no-archive-here");
    let path = store.to_string_lossy().into_owned();
    for (args, code) in [
        (vec!["ls"], Some(3)),
        (vec!["ls", "--json"], Some(3)),
        (vec!["verify"], Some(3)),
        // The exit code of a store error inside a restore is the command line's business.
        (vec!["restore", "--to", "latest", "--dry-run"], None),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--store", &path]);
        let out = run_pitr(&all, &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        match code {
            Some(c) => assert_eq!(out.status.code(), Some(c), "{args:?}: {err}"),
            None => assert!(!out.status.success(), "{args:?}: {err}"),
        }
        assert!(err.contains("no archive at"), "{args:?}: {err}");
        assert!(err.contains("no-archive-here"), "{args:?}: {err}");
        assert!(!store.exists(), "pitr {args:?} created {path}");
    }
    let file_url = format!("file://{path}");
    let out = run_pitr(&["ls", "--store", &file_url], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!store.exists());
    // Only the archiver creates it.
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let p = PitrProcess::spawn(
        &["archive", "--source", &plain_url(&r), "--store", &path],
        &[],
    );
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    p.stop_gracefully(Duration::from_secs(30));
    assert!(store.is_dir());
    run_pitr_ok(&["verify", "--store", &path], &[]);
}
