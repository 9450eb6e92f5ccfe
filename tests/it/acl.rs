//! Least privilege, with the ACL rules of `docs/security.md` as they are written there (the
//! `ACL SETUSER` lines are read from the page): a master whose only user for the archiver is
//! `pitr-archiver` is archived, and a restore through `pitr-restore` into a server equals the
//! master at a checkpoint; the default users of both servers need a password, so every
//! command `pitr` runs after `AUTH` is checked against the documented rule. With one
//! permission taken away at a time, the archiver stops at once (exit 5, README "Exit codes")
//! with an error naming the command it was refused.

use std::path::Path;
use std::time::Duration;

use crate::support::archiving::*;
use crate::support::redis_server::value_to_string;
use crate::support::state::{diff, drop_expired, logical_state};
use crate::support::workload::Workload;
use crate::support::*;

/// The default users' password: what the test harness itself connects with.
const ADMIN_PW: &str = "harness-admin";
/// The archiver's and the restore target's user's password.
const PITR_PW: &str = "acl-test-pw";
/// Exit codes (README, "Exit codes").
const EXIT_UNREACHABLE: i32 = 5;

/// Every `ACL SETUSER <user> …` line of docs/security.md, as arguments, the password
/// placeholder replaced with `PITR_PW`.
fn documented_rules(user: &str) -> Vec<Vec<String>> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"))
            .expect("docs/security.md");
    let head = format!("ACL SETUSER {user} ");
    let rules: Vec<Vec<String>> = page
        .lines()
        .filter(|l| l.starts_with(&head))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.replace(">CHANGE-ME", &format!(">{PITR_PW}")))
                .collect()
        })
        .collect();
    assert!(!rules.is_empty(), "no `{head}…` line in docs/security.md");
    rules
}

/// The first documented rule of `user`.
fn documented_rule(user: &str) -> Vec<String> {
    documented_rules(user).remove(0)
}

/// Sets `rule` (an `ACL SETUSER` line) on `r`, with `extra` words after it.
fn set_user(r: &RedisServer, rule: &[String], extra: &[&str]) {
    let mut args: Vec<&str> = rule.iter().map(String::as_str).collect();
    args.insert(3, "reset");
    args.extend_from_slice(extra);
    r.cmd(&args);
}

/// A connection to `r` as `user`.
fn connect_as(r: &RedisServer, user: &str) -> redis::Connection {
    let url = format!("redis://{user}:{PITR_PW}@127.0.0.1:{}", r.port());
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn source_url(r: &RedisServer) -> String {
    format!("redis://pitr-archiver@127.0.0.1:{}", r.port())
}

fn pw_env(var: &str) -> Vec<(String, String)> {
    vec![(var.to_string(), PITR_PW.to_string())]
}

#[test]
fn documented_rules_archive_and_restore_a_master() {
    let rule = documented_rule("pitr-archiver");
    // The replica's line is the master's.
    for other in documented_rules("pitr-archiver") {
        let cluster_extra = ["+cluster|shards", "+cluster|slots", "+cluster|myid"];
        let other: Vec<String> = other
            .into_iter()
            .filter(|w| !cluster_extra.contains(&w.as_str()))
            .collect();
        assert_eq!(
            other, rule,
            "the archiver's rules in docs/security.md disagree"
        );
    }
    let master = RedisServer::start(&[("requirepass", ADMIN_PW)]);
    set_user(&master, &rule, &[]);
    // The user can read and write no key with ordinary commands.
    let mut as_archiver = connect_as(&master, "pitr-archiver");
    for cmd in [
        redis::cmd("GET").arg("k").clone(),
        redis::cmd("SET").arg("k").arg("v").clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
    ] {
        let e = cmd.query::<redis::Value>(&mut as_archiver).unwrap_err();
        assert_eq!(e.code(), Some("NOPERM"), "{e}");
    }

    let archive = Archive::local();
    let p = archive.archiver_with(
        &source_url(&master),
        &["--metrics-addr", "off", "--snapshot-interval", "0"],
        &pw_env("PITR_SOURCE_PASSWORD"),
    );
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    let mut w = Workload::new(0xac1);
    w.run_step(&mut con, 400);
    let cp = w.checkpoint(&mut con, &master);
    w.run_step(&mut con, 50);
    assert_eq!(wait_archived(&mut con, 5000), 1, "{}", p.log_tail(20));
    // The link is named as the rule allows.
    let clients = value_to_string(&master.cmd(&["CLIENT", "LIST"]));
    assert!(
        clients.contains("name=pitr-archiver") && clients.contains("user=pitr-archiver"),
        "{clients}"
    );
    p.stop_gracefully(Duration::from_secs(30));
    assert!(
        !p.log().contains("NOPERM"),
        "the archiver was refused something:\n{}",
        p.log()
    );

    let target = RedisServer::start(&[("requirepass", ADMIN_PW)]);
    set_user(&target, &documented_rule("pitr-restore"), &[]);
    let mut as_restore = connect_as(&target, "pitr-restore");
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("")
        .query::<redis::Value>(&mut as_restore)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    let target_url = format!("redis://pitr-restore@127.0.0.1:{}", target.port());
    let out = run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            &cp.time_ms.to_string(),
            "--target",
            &target_url,
            "--json",
        ],
        &pw_env("PITR_TARGET_PASSWORD"),
    );
    assert!(
        out.status.success(),
        "restore as pitr-restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cutoff = now_ms() + 10_000;
    let want = drop_expired(&cp.state, cutoff);
    let got = drop_expired(&logical_state(&target, 0), cutoff);
    assert!(
        want["keys"].as_array().is_some_and(|k| k.len() > 10),
        "the workload wrote too little: {want:#}"
    );
    if let Some(d) = diff(&want, &got) {
        panic!("restore through pitr-restore differs from the master (left):\n{d}");
    }

    // Again with --force into the now non-empty target: FLUSHALL and FUNCTION FLUSH too.
    let out = run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            &cp.time_ms.to_string(),
            "--target",
            &target_url,
            "--force",
            "--json",
        ],
        &pw_env("PITR_TARGET_PASSWORD"),
    );
    assert!(
        out.status.success(),
        "restore --force as pitr-restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = drop_expired(&logical_state(&target, 0), cutoff);
    if let Some(d) = diff(&want, &got) {
        panic!("restore --force through pitr-restore differs from the master (left):\n{d}");
    }
}

/// The archiver under the documented rule less `-<perm>`: it must stop within `limit`, with
/// exit 5 and a message naming `command`.
fn refused_without(perm: &str, command: &str) {
    let master = RedisServer::start(&[("requirepass", ADMIN_PW)]);
    set_user(
        &master,
        &documented_rule("pitr-archiver"),
        &[&format!("-{perm}")],
    );
    let archive = Archive::local();
    let started = std::time::Instant::now();
    let out = run_pitr_timeout(
        &[
            "archive",
            "--source",
            &source_url(&master),
            "--store",
            archive.store(),
            "--metrics-addr",
            "off",
        ],
        &pw_env("PITR_SOURCE_PASSWORD"),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_UNREACHABLE), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to give up",
        started.elapsed()
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pitr: error: ")
            && last.contains(&format!("refused {command}"))
            && last.contains("NOPERM")
            && last.contains(&format!("'{perm}'")),
        "{stderr}"
    );
    assert!(!stderr.contains(PITR_PW), "{stderr}");
}

#[test]
fn without_psync_the_archiver_stops_naming_it() {
    refused_without("psync", "PSYNC");
}

#[test]
fn without_replconf_the_archiver_stops_naming_it() {
    refused_without("replconf", "REPLCONF");
}

/// `+info` only lets the archiver follow a failover that demotes the master; without it the
/// archiver archives all the same and says, once, what it cannot do.
#[test]
fn without_info_the_archiver_archives_and_warns_it_cannot_follow() {
    let master = RedisServer::start(&[("requirepass", ADMIN_PW)]);
    set_user(&master, &documented_rule("pitr-archiver"), &["-info"]);
    let archive = Archive::local();
    let p = archive.archiver_with(
        &source_url(&master),
        &["--metrics-addr", "off", "--flush-interval", "100ms"],
        &pw_env("PITR_SOURCE_PASSWORD"),
    );
    let mut con = master.client();
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        exec(&mut con, &["SET", "k", "v"]);
        wait_archived(&mut con, 1000) == 1
    });
    let log = p.log();
    assert!(
        log.contains("INFO replication refused") && log.contains("grant +info"),
        "{log}"
    );
    assert!(!log.contains(PITR_PW), "{log}");
    p.stop_gracefully(Duration::from_secs(30));
}

/// Sentinel under the documented `pitr-sentinel` rule: the archiver finds the master and keeps
/// its `+switch-master` subscription; without `SENTINEL GET-MASTER-ADDR-BY-NAME` it stops at
/// once, exit 5, naming the refusal.
#[test]
fn the_documented_sentinel_rule_is_enough_and_without_it_the_archiver_stops() {
    let master = RedisServer::start(&[]);
    let (_sentinel, port, _dir) = crate::sentinel::start_sentinel_of(&master, 1);
    let rule = documented_rule("pitr-sentinel");
    let mut args: Vec<&str> = rule.iter().map(String::as_str).collect();
    args.insert(3, "reset");
    crate::sentinel::sentinel(port, &args).expect("the sentinel takes the documented rule");
    let archive = Archive::local();
    let url = format!("sentinel://127.0.0.1:{port}/mymaster");
    let flags = [
        "--sentinel-user",
        "pitr-sentinel",
        "--metrics-addr",
        "off",
        "--flush-interval",
        "100ms",
    ];
    let p = archive.archiver_with(&url, &flags, &pw_env("PITR_SENTINEL_PASSWORD"));
    let mut con = master.client();
    wait_until_msg(Duration::from_secs(60), "the archiver to attach", || {
        exec(&mut con, &["SET", "k", "v"]);
        wait_archived(&mut con, 1000) == 1
    });
    // The subscription held for a while (a PING goes out every 5 s of silence).
    std::thread::sleep(Duration::from_secs(7));
    let log = p.log();
    assert!(!log.contains("subscription failed"), "{log}");
    assert!(!log.contains(PITR_PW), "{log}");
    p.stop_gracefully(Duration::from_secs(30));

    args.push("-sentinel|get-master-addr-by-name");
    crate::sentinel::sentinel(port, &args).unwrap();
    let mut all = vec![
        "archive",
        "--source",
        url.as_str(),
        "--store",
        archive.store(),
    ];
    all.extend_from_slice(&flags);
    let out = run_pitr_timeout(
        &all,
        &pw_env("PITR_SENTINEL_PASSWORD"),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_UNREACHABLE), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot locate the master") && last.contains("NOPERM"),
        "{stderr}"
    );
    assert!(!stderr.contains(PITR_PW), "{stderr}");
}
