//! `pitr restore --output-dir` against real servers: archive a master while writing, restore
//! to chosen moments as files, start a stock redis-server on them with the printed command
//! line, and compare what it holds. Also: the plan, the errors for moments outside the archive,
//! and how the `pitr` binary fails: exit codes, messages, a closed standard output.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `pitr: error:` line of stderr (logs aside).
fn error_line(out: &Output) -> String {
    stderr_of(out)
        .lines()
        .find(|l| l.starts_with("pitr: error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{}", stderr_of(out)))
        .to_string()
}

#[test]
fn a_time_past_year_9999_is_a_usage_error_not_a_panic() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&r, |con| exec(con, &["SET", "k", "v"]));
    for to in [
        "253402300800000",
        "18446744073709551615",
        "2026-02-31T00:00:00Z",
        "2026-11-24T10:15:30+25:99",
    ] {
        let err = restore_fails(&archive, &["--to", to, "--dry-run"], 2);
        assert!(!err.contains("panicked"), "{to}: {err}");
        assert!(err.contains(to), "the error names the value: {err}");
    }
    // The latest time that can be named plans (and fails as outside the window, not a panic).
    let err = restore_fails(&archive, &["--to", "253402207200000", "--dry-run"], 3);
    assert!(err.contains("9999-12-30T22:00:00.000Z"), "{err}");
}

/// A store with `n` generations of one (empty, so broken) segment each: enough output from
/// `ls` and `verify` to fill any pipe.
fn many_generations(n: u64) -> tempfile::TempDir {
    use redis_pitr::archive::names::{GenerationId, ObjectName};
    let dir = temp_dir("pitr-many");
    let arch = dir.path().join("default");
    std::fs::create_dir_all(&arch).unwrap();
    let replid = "a".repeat(40).parse().unwrap();
    for g in 1..=n {
        let t = 1_795_515_330_000 + g * 10_000;
        let name = ObjectName::segment(GenerationId(g), (0, 100), (t, t + 1), replid);
        let path = arch.join(name.to_string());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    dir
}

/// `sh -c 'pitr <args> | head -1'`: the first line, pitr's exit code and stderr.
fn through_head(args: &[&str]) -> (String, i32, String) {
    let dir = temp_dir("pitr-head");
    let (err, code) = (dir.path().join("stderr"), dir.path().join("code"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"{ "$0" "$@" 2>"$ERR"; echo $? >"$CODE"; } | head -1"#)
        .arg(pitr_bin())
        .args(args)
        .env("ERR", &err)
        .env("CODE", &code)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let code = std::fs::read_to_string(&code).unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        code.trim().parse().unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

#[test]
fn ls_and_verify_into_a_closed_pipe_exit_quietly() {
    let store = many_generations(1000);
    let s = store.path().to_str().unwrap();
    let (first, code, err) = through_head(&["ls", "--store", s]);
    assert!(first.starts_with("archive \"default\" in "), "{first}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(code, 0, "{err}");
    let (first, code, err) = through_head(&["ls", "--store", s, "--json"]);
    assert_eq!(first.trim(), "{");
    assert_eq!(code, 0, "{err}");
    // verify finds every (empty) object broken: its exit code says so, quietly.
    let (first, code, err) = through_head(&["verify", "--store", s]);
    assert!(first.starts_with("checked 1000 generations"), "{first}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(code, 4, "{err}");

    // The reader gone before pitr writes anything.
    for cmd in ["ls", "verify"] {
        let mut child = Command::new(pitr_bin())
            .args([cmd, "--store", s])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert_eq!(
            status.code(),
            Some(if cmd == "ls" { 0 } else { 4 }),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn verify_of_an_empty_archive_says_empty_not_sound() {
    let dir = temp_dir("pitr-empty");
    let store = dir.path().to_str().unwrap();
    let out = run_pitr(&["verify", "--store", store], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(!stdout.contains("sound"), "{stdout}");
    assert!(stdout.contains("empty"), "{stdout}");
    assert!(error_line(&out).contains("empty"));
    let out = run_pitr(&["verify", "--store", store, "--json"], &[]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
}

/// Archives three segments (a write and a flush each), then one more.
fn archive_of_segments(r: &RedisServer, archive: &Archive) {
    let p = archive.archiver(r, &["--flush-interval", "100ms"]);
    wait_online(r, Duration::from_secs(60));
    let mut con = r.client();
    for i in 0..4 {
        exec(&mut con, &["SET", &format!("k{i}"), "v"]);
        assert_eq!(wait_archived(&mut con, 5000), 1);
    }
    p.stop_gracefully(Duration::from_secs(30));
}

#[test]
fn a_missing_middle_segment_is_corrupt_and_names_the_range_in_order() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive_of_segments(&r, &archive);
    let mut segs: Vec<PathBuf> = walk(Path::new(archive.store()))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "segment"))
        .collect();
    // An object's name is its path below the archive's directory.
    let root = Path::new(archive.store()).join("default");
    let name_of = |p: &Path| -> redis_pitr::archive::names::ObjectName {
        p.strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    segs.sort_by_key(|p| name_of(p).start);
    assert!(segs.len() >= 3, "{segs:?}");
    let middle = &segs[1];
    let gone = name_of(middle);
    std::fs::remove_file(middle).unwrap();
    let dir = temp_dir("pitr-restore");
    let out_dir = dir.path().join("data");
    for dest in [
        vec!["--dry-run"],
        vec!["--output-dir", out_dir.to_str().unwrap()],
    ] {
        let mut args = vec!["--to", "latest"];
        args.extend(dest);
        let err = restore_fails(&archive, &args, 4);
        let want = format!("missing offsets {}..{}", gone.start, gone.end);
        assert!(err.contains(&want), "{want}: {err}");
    }
    assert!(walk(&out_dir).is_empty());
}

#[test]
fn an_output_dir_that_is_a_file_is_a_usage_error() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&r, |con| exec(con, &["SET", "k", "v"]));
    let dir = temp_dir("pitr-restore");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = restore_fails(
        &archive,
        &["--to", "latest", "--output-dir", file.to_str().unwrap()],
        2,
    );
    assert!(
        err.contains("--output-dir") && err.contains("not a directory"),
        "{err}"
    );
    // Under a file.
    let under = file.join("data");
    let err = restore_fails(
        &archive,
        &["--to", "latest", "--output-dir", under.to_str().unwrap()],
        2,
    );
    assert!(err.contains("not a directory"), "{err}");
    // Not empty, without --force.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("dump.rdb"), b"x").unwrap();
    let err = restore_fails(
        &archive,
        &["--to", "latest", "--output-dir", full.to_str().unwrap()],
        2,
    );
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn a_restore_target_that_speaks_http_is_unreachable() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&r, |con| exec(con, &["SET", "k", "v"]));
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers every connection as an HTTP server answers a request it cannot read. (The
    // thread ends with the test process.)
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 256];
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let target = format!("redis://127.0.0.1:{port}");
    let err = restore_fails(&archive, &["--to", "latest", "--target", &target], 5);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn an_unreachable_s3_store_exits_5_naming_the_error_once() {
    let r = RedisServer::start(&[]);
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let envs: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "pitr-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "pitr-test-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let source = plain_url(&r);
    let runs: [&[&str]; 4] = [
        &["ls", "--store", "s3://bucket"],
        &["verify", "--store", "s3://bucket/prefix"],
        &[
            "restore",
            "--store",
            "s3://bucket",
            "--to",
            "latest",
            "--dry-run",
        ],
        &["archive", "--store", "s3://bucket", "--source", &source],
    ];
    for args in runs {
        let out = run_pitr_timeout(args, &envs, Duration::from_secs(120));
        let line = error_line(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr_of(&out));
        assert!(line.contains("s3://bucket"), "{line}");
        assert!(!line.contains("pitr-test-secret"), "{line}");
        // The cause, once: not repeated by each error that wraps it.
        let cause = "onnection refused";
        assert_eq!(line.matches(cause).count(), 1, "{args:?}: {line}");
    }
}
