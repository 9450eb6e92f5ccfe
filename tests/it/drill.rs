//! `pitr drill` against real servers: archive a master with writes in several databases, run the
//! drill into a scratch redis-server and into a live target, and check what it reports (keys
//! per database, thresholds, exit codes) and that its scratch directory and server are gone
//! afterwards, also after a failure and after Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::state::{diff, logical_state};
use crate::support::*;

/// `db<N>` → keys, from `INFO keyspace`.
fn keyspace(r: &RedisServer) -> BTreeMap<String, u64> {
    r.info("keyspace")
        .into_iter()
        .filter(|(db, _)| db.starts_with("db"))
        .map(|(db, v)| {
            let keys = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse().ok())
                .expect("keys=N");
            (db, keys)
        })
        .collect()
}

/// The drill's `keyspace` in the same form.
fn reported_keyspace(report: &Value) -> BTreeMap<String, u64> {
    report["keyspace"]
        .as_array()
        .expect("keyspace is a list")
        .iter()
        .map(|d| {
            (
                format!("db{}", d["db"].as_u64().unwrap()),
                d["keys"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `pitr drill --store <archive> <args…> --json` with TMPDIR set to `tmp`.
fn drill(archive: &Archive, tmp: &Path, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["drill", "--store", archive.store(), "--json"];
    all.extend_from_slice(args);
    let envs = [("TMPDIR".to_string(), tmp.display().to_string())];
    let out = run_pitr(&all, &envs);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a process with this id is still there (and not a zombie).
fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Nothing left in the drill's temporary directory.
#[track_caller]
fn assert_scratch_gone(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the drill left {left:?} in {}",
        tmp.display()
    );
}

/// A master with keys in databases 0, 3 and 7 (one with a TTL), archived while more writes
/// arrive, the archiver stopped once they are durable.
fn archived_master() -> (RedisServer, Archive) {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    r.cmd(&["SET", "before", "snapshot"]);
    r.cmd(&["SELECT", "3"]);
    let archive = Archive::local();
    let p = archive.archiver(&r, &["--flush-interval", "100ms"]);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    for i in 0..50 {
        exec(&mut con, &["SET", &format!("k{i}"), &i.to_string()]);
    }
    exec(&mut con, &["SELECT", "3"]);
    exec(&mut con, &["HSET", "h", "f", "v", "g", "w"]);
    exec(&mut con, &["SET", "ttl", "x", "EX", "3600"]);
    exec(&mut con, &["SELECT", "7"]);
    exec(&mut con, &["RPUSH", "l", "a", "b", "c"]);
    exec(&mut con, &["SELECT", "0"]);
    exec(&mut con, &["DEL", "k0"]);
    assert_eq!(wait_archived(&mut con, 5000), 1, "the writes were archived");
    p.stop_gracefully(Duration::from_secs(30));
    (r, archive)
}

#[test]
fn drill_into_a_scratch_server_and_a_live_target() {
    let (r, archive) = archived_master();
    let want = keyspace(&r);
    assert_eq!(want.len(), 3, "{want:?}");
    let tmp = temp_dir("pitr-drill-tmp");

    // Files and a scratch server: every key of every database, and a pass.
    let (out, rep) = drill(&archive, tmp.path(), &[]);
    assert!(out.status.success(), "{}\n{rep:#}", stderr(&out));
    assert_eq!(rep["passed"], true, "{rep:#}");
    assert_eq!(rep["mode"], "files");
    assert_eq!(reported_keyspace(&rep), want, "{rep:#}");
    assert_eq!(rep["keys"].as_u64(), Some(want.values().sum::<u64>()));
    let restore = rep["restore_seconds"].as_f64().unwrap();
    let load = rep["load_seconds"].as_f64().unwrap();
    let rto = rep["rto_seconds"].as_f64().unwrap();
    assert!(restore > 0.0 && load > 0.0, "{rep:#}");
    assert!((rto - (restore + load)).abs() < 1e-6, "{rep:#}");
    // The newest write the restore included is the last one archived: RPO is the time since.
    let offset = master_offset(&r);
    assert_eq!(rep["offset"].as_u64(), Some(offset), "{rep:#}");
    let rpo = rep["rpo_seconds"].as_f64().unwrap();
    let started = rep["started_ms"].as_u64().unwrap();
    let restored = rep["restored_ms"].as_u64().unwrap();
    assert!(
        restored <= started && restored + 60_000 > started,
        "{rep:#}"
    );
    assert!((rpo - (started - restored) as f64 / 1000.0).abs() < 1e-9);
    // A snapshot and at least one segment, read and checked again.
    let objects = rep["objects"].as_u64().unwrap();
    assert!(objects >= 2, "{rep:#}");
    assert_eq!(rep["verify"]["ok"], true, "{rep:#}");
    assert_eq!(rep["verify"]["objects"].as_u64(), Some(objects));
    assert_eq!(rep["bytes_read"], rep["restore"]["bytes_read"]);
    let version = r.info("server")["redis_version"].clone();
    assert_eq!(rep["server"]["version"].as_str(), Some(version.as_str()));
    assert_eq!(rep["thresholds"]["exceeded"], serde_json::json!([]));
    // The scratch server and directory are gone.
    let pid = rep["server"]["pid"].as_u64().expect("a scratch server pid");
    assert!(!process_alive(pid), "scratch server {pid} still runs");
    assert_scratch_gone(tmp.path());

    // Generous thresholds pass.
    let (out, rep) = drill(
        &archive,
        tmp.path(),
        &["--max-rto", "10m", "--max-rpo", "1h"],
    );
    assert!(out.status.success(), "{}\n{rep:#}", stderr(&out));
    assert_eq!(rep["thresholds"]["max_rto_seconds"].as_f64(), Some(600.0));

    // RPO over its threshold: exit 7, the report still printed, the threshold named.
    let (out, rep) = drill(&archive, tmp.path(), &["--max-rpo", "0"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(rep["passed"], false, "{rep:#}");
    assert_eq!(reported_keyspace(&rep), want);
    let exceeded = rep["thresholds"]["exceeded"].as_array().unwrap();
    assert_eq!(exceeded.len(), 1, "{rep:#}");
    assert_eq!(exceeded[0]["threshold"], "max_rpo");
    assert!(exceeded[0]["over_seconds"].as_f64().unwrap() > 0.0);
    let err = stderr(&out);
    assert!(err.contains("drill thresholds exceeded: max-rpo"), "{err}");
    assert!(!err.contains("max-rto"), "{err}");
    assert_scratch_gone(tmp.path());

    // RTO likewise (no restore and server start takes under a microsecond).
    let (out, rep) = drill(&archive, tmp.path(), &["--max-rto", "1us"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let exceeded = rep["thresholds"]["exceeded"].as_array().unwrap();
    assert_eq!(exceeded.len(), 1, "{rep:#}");
    assert_eq!(exceeded[0]["threshold"], "max_rto");
    assert!(stderr(&out).contains("max-rto"), "{}", stderr(&out));
    assert_scratch_gone(tmp.path());

    // A live target: the same data as the master, no scratch server.
    let target = RedisServer::start(&[]);
    let url = plain_url(&target);
    let (out, rep) = drill(&archive, tmp.path(), &["--target", &url]);
    assert!(out.status.success(), "{}\n{rep:#}", stderr(&out));
    assert_eq!(rep["mode"], "target");
    assert_eq!(rep["load_seconds"], Value::Null);
    assert_eq!(rep["server"]["pid"], Value::Null);
    assert_eq!(reported_keyspace(&rep), want);
    let now = now_ms();
    let (a, b) = (logical_state(&r, now), logical_state(&target, now));
    assert_eq!(diff(&a, &b), None, "the target differs from the master");
    assert_scratch_gone(tmp.path());
    // A target that holds keys is refused, as by pitr restore.
    let (out, _) = drill(&archive, tmp.path(), &["--target", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A server binary that is not there: a usage error naming it, before anything is read.
    let (out, _) = drill(
        &archive,
        tmp.path(),
        &["--redis-server", "/nonexistent/bin/redis-server-x"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/bin/redis-server-x"),
        "{}",
        stderr(&out)
    );
    assert_scratch_gone(tmp.path());
}

/// A stand-in "server" that records its pid and never listens: the drill waits for it to
/// load until `--load-timeout`, or until it is interrupted.
fn silent_server(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let pidfile = dir.join("server.pid");
    let script = dir.join("silent-server");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, pidfile)
}

fn read_pid(pidfile: &Path) -> u64 {
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn drill_removes_its_server_and_directory_on_failure_and_on_ctrl_c() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&r, |con| exec(con, &["SET", "k", "v"]));
    let tmp = temp_dir("pitr-drill-tmp");
    let bins = temp_dir("pitr-drill-bin");
    let (script, pidfile) = silent_server(bins.path());
    let script = script.display().to_string();

    // A server that never loads: an error after --load-timeout, and nothing left.
    let (out, _) = drill(
        &archive,
        tmp.path(),
        &["--redis-server", &script, "--load-timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--load-timeout"), "{}", stderr(&out));
    let pid = read_pid(&pidfile);
    assert!(!process_alive(pid), "the scratch server {pid} still runs");
    assert_scratch_gone(tmp.path());

    // Ctrl-C while it waits: exit 130, nothing left.
    std::fs::remove_file(&pidfile).unwrap();
    let envs = [("TMPDIR".to_string(), tmp.path().display().to_string())];
    let p = PitrProcess::spawn(
        &[
            "drill",
            "--store",
            archive.store(),
            "--redis-server",
            &script,
            "--load-timeout",
            "10m",
        ],
        &envs,
    );
    wait_until_msg(
        Duration::from_secs(60),
        "the scratch server to start",
        || pidfile.exists() && std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')),
    );
    let pid = read_pid(&pidfile);
    assert!(process_alive(pid));
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().count() > 0,
        "a scratch directory while the drill runs"
    );
    p.sigint();
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("drill did not stop after SIGINT\n{}", p.log()));
    assert_eq!(st.code(), Some(130), "{}", p.log());
    assert!(p.stderr().contains("interrupted by Ctrl-C"), "{}", p.log());
    assert!(!process_alive(pid), "the scratch server {pid} still runs");
    assert_scratch_gone(tmp.path());
}

/// A Valkey archive: the restore's command line names `valkey-server`, which the drill starts
/// by default (an error naming it when it is not on PATH), or the binary `--redis-server` names.
#[test]
fn a_valkey_archive_drills_on_valkey() {
    let valkey = crate::support::servers::valkey_9_1();
    let r = RedisServer::start_with(&valkey, &[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&r, |con| {
        exec(con, &["SET", "k", "v"]);
        exec(con, &["SELECT", "2"]);
        exec(con, &["HSET", "h", "f", "v"]);
    });
    let tmp = temp_dir("pitr-drill-tmp");
    let valkey_path = valkey.display().to_string();
    let (out, rep) = drill(&archive, tmp.path(), &["--redis-server", &valkey_path]);
    assert!(out.status.success(), "{}\n{rep:#}", stderr(&out));
    assert_eq!(rep["server"]["name"], "valkey", "{rep:#}");
    assert_eq!(
        rep["server"]["version"].as_str(),
        r.info("server").get("valkey_version").map(String::as_str)
    );
    assert!(
        rep["server"]["command_line"]
            .as_str()
            .unwrap()
            .starts_with("valkey-server "),
        "{rep:#}"
    );
    assert_eq!(reported_keyspace(&rep), keyspace(&r));
    assert_scratch_gone(tmp.path());

    // Without --redis-server, on a PATH that holds no valkey-server.
    let mut all = vec!["drill", "--store", archive.store()];
    all.push("--json");
    let envs = [
        ("TMPDIR".to_string(), tmp.path().display().to_string()),
        ("PATH".to_string(), tmp.path().display().to_string()),
    ];
    let out = run_pitr(&all, &envs);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("valkey-server: not found on PATH"),
        "{}",
        stderr(&out)
    );
    assert_scratch_gone(tmp.path());
}
