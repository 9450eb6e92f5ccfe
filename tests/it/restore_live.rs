//! The live restore path against a real redis-server: fixture RDBs parsed by `Parser`, turned
//! into commands by `KeyConverter` (by `RESTORE`, by plain commands, and by both with a tiny
//! RESTORE limit), pipelined by `LiveTarget` into a fresh server, saved there, and the saved
//! RDB's logical content compared with the fixture's `.json`.
//!
//! What the commands form cannot reproduce, and how the comparison accounts for it (nothing
//! else is relaxed; the RESTORE mode is compared exactly):
//! - a stream PEL entry whose message was deleted (`XCLAIM ... FORCE` only creates PEL
//!   entries for messages that exist): such entries are removed from the expectation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::RedisServer;
use bytes::Bytes;
use redis_pitr::rdb::logical::{self, LogicalState};
use redis_pitr::rdb::{Event, Parser, ParserConfig};
use redis_pitr::replay::keys::{ConvertConfig, ConvertStats, KeyConverter};
use redis_pitr::replay::live::{LiveTarget, TargetError};
use serde_json::Value as Json;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb")
}

struct Fixture {
    name: String,
    rdb: Vec<u8>,
    json: Json,
}

fn read_fixture(path: &Path) -> Fixture {
    let rdb = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path.with_extension("json"))
        .unwrap_or_else(|e| panic!("{}.json: {e}", path.display()));
    Fixture {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        rdb,
        json: serde_json::from_str(&text).unwrap(),
    }
}

/// The RDBs Redis 7.0.15 loads: the public 7.0 file and the `redis-assets` files that
/// `load-results.json` records as loaded.
fn loadable_fixtures() -> Vec<Fixture> {
    let mut out = vec![read_fixture(
        &fixture_dir().join("redis-7.0.15-rdb10-public.rdb"),
    )];
    let assets = fixture_dir().join("redis-assets");
    let results: Json =
        serde_json::from_str(&std::fs::read_to_string(assets.join("load-results.json")).unwrap())
            .unwrap();
    let mut names: Vec<&String> = results
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["loaded"] == Json::Bool(true))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for n in names {
        out.push(read_fixture(&assets.join(n)));
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every key by RESTORE with the target's payload version.
    Restore,
    /// Every key by RESTORE with the file's own RDB version in the payload (what
    /// `restore::payload_version` picks).
    RestoreFileVersion,
    /// No RESTORE at all.
    Commands,
    /// RESTORE for values up to 1 KiB, commands beyond (small pieces and batches).
    Mixed,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Parses `rdb` in 16 KiB pieces, converts and sends every key into `server`.
/// What a restore did: the converter's counts and the keys sent by RESTORE (db, escaped key).
struct Restored {
    stats: ConvertStats,
    by_restore: BTreeSet<(u64, String)>,
    /// `ElementChunk` events seen (long elements in pieces).
    element_chunks: usize,
}

async fn restore(server: &RedisServer, rdb: &[u8], mode: Mode) -> Result<Restored, String> {
    let mut target = LiveTarget::connect(&server.url(), None)
        .await
        .map_err(|e| e.to_string())?;
    let version = target.rdb_version().await.map_err(|e| e.to_string())?;
    assert_eq!(version, 10, "redis-server 7.0 takes RDB 10 payloads");
    assert_eq!(target.key_count().await.map_err(|e| e.to_string())?, 0);
    let file_version: u16 = std::str::from_utf8(&rdb[5..9]).unwrap().parse().unwrap();
    let (pcfg, ccfg) = match mode {
        Mode::Restore | Mode::RestoreFileVersion => (
            ParserConfig {
                max_raw_value: 8 << 20,
                ..ParserConfig::default()
            },
            ConvertConfig {
                restore_version: Some(if mode == Mode::Restore {
                    version
                } else {
                    file_version
                }),
                max_restore_bytes: 8 << 20,
                max_batch_bytes: 64 << 10,
                field_ttls_by_restore: true,
                stream_entries_added: true,
            },
        ),
        Mode::Commands => (
            ParserConfig {
                max_raw_value: 0,
                ..ParserConfig::default()
            },
            ConvertConfig {
                restore_version: None,
                max_restore_bytes: 0,
                max_batch_bytes: 64 << 10,
                field_ttls_by_restore: true,
                stream_entries_added: true,
            },
        ),
        Mode::Mixed => (
            ParserConfig {
                max_chunk: 300,
                max_raw_value: 1024,
                ..ParserConfig::default()
            },
            ConvertConfig {
                restore_version: Some(version),
                max_restore_bytes: 1024,
                max_batch_bytes: 1024,
                field_ttls_by_restore: true,
                stream_entries_added: true,
            },
        ),
    };
    let mut parser = Parser::new(pcfg);
    let mut conv = KeyConverter::new(ccfg);
    let mut events = Vec::new();
    let mut cmds = Vec::new();
    let mut by_restore = BTreeSet::new();
    let mut db = 0u64;
    let mut element_chunks = 0;
    for piece in rdb.chunks(16 << 10) {
        events.clear();
        parser
            .feed_bytes(Bytes::copy_from_slice(piece), &mut events)
            .map_err(|e| e.to_string())?;
        for ev in &events {
            element_chunks += usize::from(matches!(ev, Event::ElementChunk { .. }));
            conv.push(ev, &mut cmds).map_err(|e| e.to_string())?;
            for c in cmds.drain(..) {
                match &c[0][..] {
                    b"SELECT" => db = std::str::from_utf8(&c[1]).unwrap().parse().unwrap(),
                    b"RESTORE" => {
                        by_restore.insert((db, logical::escape(&c[1])));
                    }
                    _ => {}
                }
                target.send(&c).await.map_err(|e| e.to_string())?;
            }
        }
    }
    parser.finish().map_err(|e| e.to_string())?;
    target.sync().await.map_err(|e| e.to_string())?;
    Ok(Restored {
        stats: conv.stats(),
        by_restore,
        element_chunks,
    })
}

/// `SAVE` on the server, and the logical content of its `dump.rdb`.
fn saved_state(server: &RedisServer) -> LogicalState {
    server.cmd(&["SAVE"]);
    let data = std::fs::read(server.rdb_path()).unwrap();
    LogicalState::from_rdb(&data, 0).unwrap()
}

fn key_id(k: &Json) -> (u64, String) {
    (
        k["db"].as_u64().unwrap(),
        k["key"].as_str().unwrap().to_string(),
    )
}

/// Compares key by key, for a readable failure.
fn assert_same(what: &str, got: &LogicalState, want_keys: &Json, want_functions: &Json) {
    assert_eq!(&got.functions_json(), want_functions, "{what}: functions");
    let got: BTreeMap<_, _> = got
        .keys_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (key_id(k), k.clone()))
        .collect();
    let want: BTreeMap<_, _> = want_keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (key_id(k), k.clone()))
        .collect();
    let mut problems = Vec::new();
    for (id, w) in &want {
        match got.get(id) {
            None => problems.push(format!("missing {id:?}")),
            Some(g) if g != w => problems.push(format!("{id:?}:{}", differences(g, w))),
            _ => {}
        }
    }
    for id in got.keys().filter(|id| !want.contains_key(*id)) {
        problems.push(format!("unexpected {id:?}"));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} of {} keys differ:\n{}",
        problems.len(),
        want.len(),
        problems.join("\n")
    );
}

/// The fields of two key records (and of their values, when objects) that differ, each
/// shown truncated.
fn differences(got: &Json, want: &Json) -> String {
    let short = |v: Option<&Json>| {
        let t = v.map_or("(none)".to_string(), |v| v.to_string());
        if t.len() > 600 {
            format!("{}… ({} chars)", &t[..600], t.len())
        } else {
            t
        }
    };
    let mut out = String::new();
    let (Some(g), Some(w)) = (got.as_object(), want.as_object()) else {
        return format!(
            "\n  got  {}\n  want {}",
            short(Some(got)),
            short(Some(want))
        );
    };
    let names: BTreeSet<&String> = g.keys().chain(w.keys()).collect();
    for n in names {
        let (a, b) = (g.get(n), w.get(n));
        if a == b {
            continue;
        }
        match (a.and_then(Json::as_object), b.and_then(Json::as_object)) {
            (Some(ao), Some(bo)) => {
                let inner: BTreeSet<&String> = ao.keys().chain(bo.keys()).collect();
                for m in inner.into_iter().filter(|m| ao.get(*m) != bo.get(*m)) {
                    out.push_str(&format!(
                        "\n  {n}.{m}: got  {}\n  {n}.{m}: want {}",
                        short(ao.get(m)),
                        short(bo.get(m))
                    ));
                }
            }
            _ => out.push_str(&format!(
                "\n  {n}: got  {}\n  {n}: want {}",
                short(a),
                short(b)
            )),
        }
    }
    out
}

/// The fixture's keys as the commands form can rebuild them: stream PEL entries whose message
/// was deleted are left out (`XCLAIM ... FORCE` ignores ids that are not in the stream).
/// Keys in `by_restore` are expected exactly.
fn commands_form(keys: &Json, by_restore: &BTreeSet<(u64, String)>) -> (Json, usize) {
    let mut keys = keys.clone();
    let mut dropped = 0;
    for k in keys.as_array_mut().unwrap() {
        if k["type"] != "stream" || by_restore.contains(&key_id(k)) {
            continue;
        }
        let ids: BTreeSet<String> = k["value"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_str().unwrap().to_string())
            .collect();
        for g in k["value"]["groups"].as_array_mut().unwrap() {
            let pending = g["pending"].as_array_mut().unwrap();
            let before = pending.len();
            pending.retain(|p| ids.contains(p[0].as_str().unwrap()));
            dropped += before - pending.len();
        }
    }
    (keys, dropped)
}

/// Restores `f` into a fresh server in `mode` and compares: keys sent by RESTORE exactly,
/// keys sent as commands as [`commands_form`] says. Returns the stats and the number of PEL
/// entries the expectation left out.
fn check_fixture(f: &Fixture, mode: Mode) -> (Restored, usize) {
    let server = RedisServer::start(&[]);
    let r = runtime()
        .block_on(restore(&server, &f.rdb, mode))
        .unwrap_or_else(|e| panic!("{} ({mode:?}): {e}", f.name));
    let got = saved_state(&server);
    let what = format!("{} ({mode:?})", f.name);
    let (keys, dropped) = commands_form(&f.json["keys"], &r.by_restore);
    assert_same(&what, &got, &keys, &f.json["functions"]);
    (r, dropped)
}

#[test]
fn fixtures_by_restore_are_exact() {
    for f in loadable_fixtures() {
        for mode in [Mode::Restore, Mode::RestoreFileVersion] {
            let (r, dropped) = check_fixture(&f, mode);
            let st = r.stats;
            let what = format!("{} ({mode:?})", f.name);
            assert_eq!(dropped, 0, "{what}: nothing is left out of the expectation");
            assert_eq!(st.keys_by_commands, 0, "{what}: {st:?}");
            assert_eq!(
                st.keys_by_restore,
                f.json["keys"].as_array().unwrap().len() as u64,
                "{what}: {st:?}"
            );
        }
    }
}

#[test]
fn fixtures_by_commands_match_except_deleted_pel_entries() {
    let mut dropped_total = 0;
    for f in loadable_fixtures() {
        let (r, dropped) = check_fixture(&f, Mode::Commands);
        let st = r.stats;
        assert_eq!(st.keys_by_restore, 0, "{}: {st:?}", f.name);
        dropped_total += dropped;
    }
    // The 7.0 public file has PEL entries of deleted messages (in two streams): the one
    // documented difference.
    assert!(dropped_total >= 1, "{dropped_total}");
}

#[test]
fn huge_values_go_by_commands_with_a_1k_restore_limit() {
    let f = read_fixture(&fixture_dir().join("redis-7.0.15-rdb10-public.rdb"));
    let (r, _) = check_fixture(&f, Mode::Mixed);
    assert!(r.element_chunks > 0, "long elements came in pieces");
    let st = r.stats;
    assert!(st.keys_by_restore > 0 && st.keys_too_large > 0, "{st:?}");
    assert_eq!(st.keys_by_restore + st.keys_by_commands, 75);
}

/// A Valkey RDB 11 file into Redis 7.0 with RDB 10 payloads: the types RDB 10 lacks (listpack
/// sets, streams v3) go by commands, everything else by RESTORE.
#[test]
fn types_newer_than_the_payload_version_fall_back_to_commands() {
    let f = read_fixture(&fixture_dir().join("valkey-unstable-rdb11-public.rdb"));
    let st = check_fixture(&f, Mode::Restore).0.stats;
    assert!(st.keys_type_not_in_version > 0, "{st:?}");
    assert_eq!(st.keys_by_commands, st.keys_type_not_in_version, "{st:?}");
}

#[test]
fn an_error_reply_names_the_command_and_key() {
    // The default window (the error arrives at sync) and a tiny one (it arrives in send).
    for window in [None, Some(16)] {
        error_reply_names_the_command_and_key(window);
    }
}

fn error_reply_names_the_command_and_key(window: Option<usize>) {
    let server = RedisServer::start(&[]);
    server.cmd(&["SET", "taken", "x"]);
    let rt = runtime();
    rt.block_on(async {
        let mut t = LiveTarget::connect(&server.url(), None).await.unwrap();
        if let Some(w) = window {
            t.set_window(w, 1 << 20);
        }
        let payload = redis_pitr::rdb::dump_payload(b"\x00\x01v", 10);
        let set = |i: usize| {
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(format!("k{i}")),
                Bytes::from_static(b"v"),
            ]
        };
        let mut first_err = None;
        for i in 0..3000 {
            let cmd = if i == 1000 {
                vec![
                    Bytes::from_static(b"RESTORE"),
                    Bytes::from_static(b"taken"),
                    Bytes::from_static(b"0"),
                    Bytes::from(payload.clone()),
                ]
            } else {
                set(i)
            };
            if let Err(e) = t.send(&cmd).await {
                first_err = Some(e);
                break;
            }
        }
        let err = match first_err {
            Some(e) => e,
            None => t.sync().await.unwrap_err(),
        };
        match &err {
            TargetError::Reply {
                command,
                reply,
                addr,
                ..
            } => {
                assert_eq!(command, "RESTORE taken");
                assert!(reply.starts_with("BUSYKEY"), "{reply}");
                assert_eq!(addr, &server.addr());
            }
            other => panic!("not a Reply error: {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("RESTORE taken") && msg.contains("BUSYKEY"),
            "{msg}"
        );
        // The connection is not used again.
        assert!(matches!(
            t.send(&set(0)).await,
            Err(TargetError::Failed { .. })
        ));
    });
    // Commands before the failing one were applied.
    assert_eq!(
        crate::support::redis_server::value_to_string(&server.cmd(&["EXISTS", "k999"])),
        "1"
    );
}

#[test]
fn connect_auth_flush_and_counts() {
    let server = RedisServer::start(&[("requirepass", "s3cret")]);
    let rt = runtime();
    rt.block_on(async {
        let url = format!("redis://{}", server.addr());
        match LiveTarget::connect(&url, None).await {
            Err(TargetError::Auth { addr, reply }) => {
                assert_eq!(addr, server.addr());
                assert!(reply.starts_with("NOAUTH"), "{reply}");
            }
            other => panic!("{other:?}"),
        }
        match LiveTarget::connect(&url, Some("wrong".into())).await {
            Err(e @ TargetError::Auth { .. }) => assert!(!e.to_string().contains("wrong")),
            other => panic!("{other:?}"),
        }
        let mut t = LiveTarget::connect(&url, Some("s3cret".into()))
            .await
            .unwrap();
        assert_eq!(t.key_count().await.unwrap(), 0);
        for (db, key) in [("0", "a"), ("0", "b"), ("5", "c")] {
            t.send(&[Bytes::from_static(b"SELECT"), Bytes::from(db)])
                .await
                .unwrap();
            t.send(&[
                Bytes::from_static(b"SET"),
                Bytes::from(key),
                Bytes::from_static(b"1"),
            ])
            .await
            .unwrap();
        }
        t.send(&[
            Bytes::from_static(b"FUNCTION"),
            Bytes::from_static(b"LOAD"),
            Bytes::from_static(
                b"#!lua name=lib\nredis.register_function('f', function() return 1 end)",
            ),
        ])
        .await
        .unwrap();
        t.sync().await.unwrap();
        assert_eq!(t.key_count().await.unwrap(), 3);
        t.flush_all().await.unwrap();
        assert_eq!(t.key_count().await.unwrap(), 0);
        // The URL's password works too.
        let mut t2 = LiveTarget::connect(&server.url(), None).await.unwrap();
        assert_eq!(t2.rdb_version().await.unwrap(), 10);
    });
    assert_eq!(
        crate::support::redis_server::value_to_string(&server.cmd(&["FUNCTION", "LIST"])),
        ""
    );
    // A password for a server that has none is not an error (e.g. one set in the
    // environment for other servers).
    let open = RedisServer::start(&[]);
    rt.block_on(async {
        let mut t = LiveTarget::connect(&open.url(), Some("unused".into()))
            .await
            .unwrap();
        assert_eq!(t.key_count().await.unwrap(), 0);
    });
    // Nothing listens: a Connect error with the address.
    let port = crate::support::free_port();
    let err = rt
        .block_on(LiveTarget::connect(
            &format!("redis://127.0.0.1:{port}"),
            None,
        ))
        .unwrap_err();
    assert!(
        matches!(&err, TargetError::Connect { addr, .. } if addr == &format!("127.0.0.1:{port}")),
        "{err:?}"
    );
}

/// `LiveTarget::send` of N small SETs against `redis-cli --pipe` of the same commands (both
/// into an empty server; N from `PITR_BENCH_N`, default 1M). Prints the rates:
/// `cargo test --release --test restore_live -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_against_redis_cli_pipe() {
    let n: usize = std::env::var("PITR_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let server = RedisServer::start(&[]);
    let cmds: Vec<[Bytes; 3]> = (0..n)
        .map(|i| {
            [
                Bytes::from_static(b"SET"),
                Bytes::from(format!("key:{i:08}")),
                Bytes::from(format!("value:{i:08}")),
            ]
        })
        .collect();
    let file = server.dir().join("pipe.resp");
    let mut resp = Vec::new();
    for c in &cmds {
        redis_pitr::replay::cut::encode_args(c, &mut resp);
    }
    std::fs::write(&file, &resp).unwrap();
    let dbsize = || crate::support::redis_server::value_to_string(&server.cmd(&["DBSIZE"]));

    for round in 0..2 {
        for flavor in ["current_thread", "multi_thread"] {
            server.cmd(&["FLUSHALL"]);
            let rt = if flavor == "current_thread" {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            } else {
                runtime()
            };
            let secs = rt.block_on(async {
                let mut t = LiveTarget::connect(&server.url(), None).await.unwrap();
                let start = Instant::now();
                for c in &cmds {
                    t.send(c).await.unwrap();
                }
                t.sync().await.unwrap();
                start.elapsed().as_secs_f64()
            });
            assert_eq!(dbsize(), n.to_string());
            println!(
                "round {round}: LiveTarget ({flavor}): {n} SETs in {secs:.3} s = {:.0}/s",
                n as f64 / secs
            );
        }
        server.cmd(&["FLUSHALL"]);
        let start = Instant::now();
        let out = std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port().to_string(),
                "--pipe",
            ])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(dbsize(), n.to_string());
        println!(
            "round {round}: redis-cli --pipe: {n} SETs in {secs:.3} s = {:.0}/s",
            n as f64 / secs
        );
    }
}

/// A server that accepts the connection and never answers: `pitr restore` used to wait for
/// the handshake's reply for minutes. With `--target-timeout 2s` it exits with code 5
/// (unreachable), naming the address and what it waited for.
#[test]
fn a_target_that_never_answers_times_out_naming_it() {
    use crate::support::archiving::{exec, Archive};
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    master.cmd(&["SET", "k", "v"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["SET", "k2", "v"]));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts every connection and keeps it open, reading nothing, answering nothing.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let url = format!("redis://127.0.0.1:{port}");
    let out = crate::support::run_pitr_timeout(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            "latest",
            "--target",
            &url,
            "--target-timeout",
            "2s",
        ],
        &[],
        std::time::Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("within 2s") && err.contains("PING"), "{err}");
}

/// A target that refuses part-way (here out of memory, `maxmemory` with `noeviction`) keeps
/// what was applied before: the error must say so, how much, and what to do.
#[test]
fn a_restore_refused_part_way_says_the_target_is_partial() {
    use crate::support::archiving::{exec, plain_url, Archive};
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let value = "x".repeat(2000);
    let mut con = master.client();
    for i in 0..4000 {
        exec(&mut con, &["SET", &format!("k{i}"), &value]);
    }
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["SET", "after", "1"]));
    let target = RedisServer::start(&[("maxmemory", "4mb"), ("maxmemory-policy", "noeviction")]);
    let url = plain_url(&target);
    let out = crate::support::run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            "latest",
            "--target",
            &url,
            // A replica ignores maxmemory while it loads: the commands path is the one that
            // can stop part-way.
            "--via",
            "commands",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("OOM"), "{err}");
    assert!(
        err.contains("partial") && err.contains("FLUSHALL") && err.contains("--force"),
        "{err}"
    );
    let applied: u64 = err
        .split(" commands of the snapshot's keys were applied")
        .next()
        .and_then(|s| s.rsplit([' ', '(']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of applied commands: {err}"));
    let keys: u64 = crate::support::redis_server::value_to_string(&target.cmd(&["DBSIZE"]))
        .parse()
        .unwrap();
    assert!(keys > 0 && keys < 4000, "{keys} keys");
    // One RESTORE per key, and a SELECT before them.
    assert!(
        applied >= keys && applied <= keys + 1,
        "{applied} applied, {keys} keys: {err}"
    );
}
