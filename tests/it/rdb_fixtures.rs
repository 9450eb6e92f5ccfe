//! The RDB parser against RDB files written by real servers (`tests/fixtures/rdb/`, a copy of
//! `shared/fixtures/rdb/`): logical content equal to each file's `.json`, the same events at
//! every split of the input, named errors (never panics) for corrupt, truncated and damaged
//! files.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use redis_pitr::rdb::logical::{self, LogicalState};
use redis_pitr::rdb::{self, Event, Parser, ParserConfig, RdbError, ValueKind};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The fixtures' digest of a `{"functions", "keys"}` JSON value: the SHA-256 (hex) of its
/// canonical JSON.
fn digest_of(v: &Json) -> String {
    Sha256::digest(logical::canonical_json(v).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of a parsed state, as a fixture's `digest` field holds it.
fn digest(state: &LogicalState) -> String {
    digest_of(&state.to_json())
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb")
}

/// Every `.rdb` fixture, with its `.json` when it has one.
fn fixtures() -> Vec<(String, Vec<u8>, Option<Json>)> {
    let mut out = Vec::new();
    for dir in [fixture_dir(), fixture_dir().join("redis-assets")] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rdb"))
            .collect();
        names.sort();
        for p in names {
            let data = std::fs::read(&p).unwrap();
            let json = std::fs::read_to_string(p.with_extension("json"))
                .ok()
                .map(|s| serde_json::from_str(&s).unwrap());
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                data,
                json,
            ));
        }
    }
    assert!(out.len() >= 11, "fixtures missing: {}", out.len());
    out
}

fn parse_all(data: &[u8], cfg: ParserConfig) -> Result<Vec<Event>, RdbError> {
    let mut p = Parser::new(cfg);
    let mut ev = Vec::new();
    p.feed(data, &mut ev)?;
    p.finish()?;
    Ok(ev)
}

fn parse_split(data: &[u8], cfg: ParserConfig, cuts: &[usize]) -> Result<Vec<Event>, RdbError> {
    let mut p = Parser::new(cfg);
    let mut ev = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        p.feed(&data[last..c], &mut ev)?;
        last = c;
    }
    p.finish()?;
    Ok(ev)
}

fn small_cfg() -> ParserConfig {
    ParserConfig {
        max_chunk: 7,
        max_raw_value: 64,
        max_lzf: 1 << 20,
        max_blob: 1 << 20,
    }
}

/// Compare a parsed state with a fixture's `.json`, key by key for a readable failure.
fn assert_logical_eq(name: &str, got: &LogicalState, want: &Json) {
    assert_eq!(got.functions_json(), want["functions"], "{name}: functions");
    let got_keys = got.keys_json();
    let (g, w) = (
        got_keys.as_array().unwrap(),
        want["keys"].as_array().unwrap(),
    );
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a, b, "{name}: key {} differs", b["key"]);
    }
    assert_eq!(g.len(), w.len(), "{name}: number of keys");
    assert_eq!(
        digest(got),
        want["digest"].as_str().unwrap(),
        "{name}: digest"
    );
}

#[test]
fn logical_state_equals_every_fixture_json() {
    let mut checked = 0;
    for (name, data, json) in fixtures() {
        let Some(json) = json else { continue };
        let cutoff = json["meta"]["expiry_cutoff_ms"].as_i64().unwrap_or(0);
        // Default bounds, and tiny ones that stream every string longer than 7 bytes.
        for cfg in [ParserConfig::default(), small_cfg()] {
            let events = parse_all(&data, cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let state = LogicalState::from_events(&events, cutoff);
            assert_logical_eq(&name, &state, &json);
        }
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn the_empty_state_has_the_digest_of_the_fixtures_with_no_keys() {
    assert_eq!(
        digest(&LogicalState::default()),
        "aba09e1c464e2c2d51d545bb0492c3220378a583caeeb63ede651837aac162ee"
    );
}

#[test]
fn fixture_digests_are_reproduced_from_their_own_json() {
    // Checks the canonical JSON and SHA-256 independently of the parser.
    for (name, _, json) in fixtures() {
        let Some(json) = json else { continue };
        let v = serde_json::json!({"functions": json["functions"], "keys": json["keys"]});
        assert_eq!(digest_of(&v), json["digest"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn corrupt_ziplist_is_a_named_error() {
    let data = std::fs::read(fixture_dir().join("redis-assets/corrupt_ziplist.rdb")).unwrap();
    let err = parse_all(&data, ParserConfig::default()).unwrap_err();
    match &err {
        RdbError::Corrupt { what, offset } => {
            assert!(what.contains("ziplist"), "{err}");
            // The bad value is a hash ziplist ("xxxxx") of key "key:000000000091".
            let key_at = data
                .windows(16)
                .position(|w| w == b"key:000000000091")
                .unwrap() as u64;
            assert_eq!(*offset, key_at + 16, "{err}");
        }
        other => panic!("expected a corrupt ziplist, got {other}"),
    }
    // The same error at every split of the input.
    for cut in 0..data.len() {
        assert_eq!(
            parse_split(&data, ParserConfig::default(), &[cut]).unwrap_err(),
            err
        );
    }
}

#[test]
fn summaries_count_keys_and_functions() {
    for (name, data, json) in fixtures() {
        let Some(json) = json else { continue };
        let summary = rdb::check(std::io::Cursor::new(&data)).unwrap();
        assert_eq!(summary.bytes, data.len() as u64, "{name}");
        assert!(summary.complete);
        let functions = json["functions"].as_array().unwrap().len() as u64;
        assert_eq!(summary.functions, functions, "{name}");
        let keys = json["keys"].as_array().unwrap().len() as u64;
        if name.starts_with("corrupt_empty_keys") {
            // Nine empty collections: in the file, not in a loaded server.
            assert_eq!(summary.keys, 9, "{name}");
        } else {
            assert_eq!(summary.keys, keys, "{name}");
        }
        let per_db: u64 = summary.keys_per_db.values().sum();
        assert_eq!(per_db, summary.keys);
        let version = data[5..9]
            .iter()
            .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
        assert_eq!(summary.version, version);
        if version >= 5 {
            let stored = u64::from_le_bytes(data[data.len() - 8..].try_into().unwrap());
            assert_eq!(summary.checksum, (stored != 0).then_some(stored), "{name}");
            assert_eq!(rdb::crc64(0, &data[..data.len() - 8]), stored, "{name}");
        }
    }
}

/// A ~10 KB RDB of real-server value bytes: keys of every type from the Redis 7.4+ fixture
/// (whose raw values are small), re-framed with their expiries, plus its functions.
fn ten_kb_file() -> Vec<u8> {
    let data = std::fs::read(fixture_dir().join("redis-unstable-rdb12-public.rdb")).unwrap();
    let events = parse_all(&data, ParserConfig::default()).unwrap();
    let mut body = b"REDIS0012".to_vec();
    body.extend_from_slice(b"\xfa\x09redis-ver\x0b255.255.255");
    let mut db = u64::MAX;
    let mut key: Option<(u64, Bytes, Option<i64>, ValueKind)> = None;
    let mut kinds = std::collections::BTreeSet::new();
    for ev in &events {
        match ev {
            Event::Function { code } if code.len() < 200 => {
                body.push(0xf5);
                rdb::write_string(&mut body, code);
            }
            Event::KeyStart {
                db: d,
                key: k,
                expire_ms,
                kind,
                ..
            } => key = Some((*d, k.clone(), *expire_ms, *kind)),
            Event::KeyEnd { raw: Some(raw) } => {
                let (d, k, exp, kind) = key.take().unwrap();
                if raw.len() > 3000 || body.len() > 10_000 {
                    continue;
                }
                kinds.insert(raw[0]);
                let _ = kind;
                if d != db {
                    body.push(0xfe);
                    body.push(d as u8);
                    db = d;
                }
                if let Some(e) = exp {
                    body.push(0xfc);
                    body.extend_from_slice(&e.to_le_bytes());
                }
                body.push(raw[0]);
                rdb::write_string(&mut body, &k);
                body.extend_from_slice(&raw[1..]);
            }
            _ => {}
        }
    }
    body.push(0xff);
    let crc = rdb::crc64(0, &body);
    body.extend_from_slice(&crc.to_le_bytes());
    // Strings, lists, sets (intset, listpack, plain), zsets, hashes (with TTLs), streams.
    for t in [0u8, 2, 4, 5, 11, 16, 17, 18, 20, 21, 25] {
        assert!(
            kinds.contains(&t),
            "type {t} missing from the 10 KB file: {kinds:?}"
        );
    }
    body
}

#[test]
fn every_split_point_of_a_10kb_file_gives_the_same_events() {
    let data = ten_kb_file();
    assert!((8_000..14_000).contains(&data.len()), "{}", data.len());
    for cfg in [ParserConfig::default(), small_cfg()] {
        let whole = parse_all(&data, cfg).unwrap();
        for cut in 0..=data.len() {
            let split = parse_split(&data, cfg, &[cut]).unwrap();
            assert!(split == whole, "split at {cut} differs");
        }
    }
}

#[test]
fn every_split_point_of_the_small_fixtures_gives_the_same_events() {
    for (name, data, _) in fixtures() {
        if data.len() > 2000 || name.starts_with("corrupt_ziplist") {
            continue;
        }
        for cfg in [ParserConfig::default(), small_cfg()] {
            let whole = parse_all(&data, cfg).unwrap();
            for a in 0..=data.len() {
                assert!(
                    parse_split(&data, cfg, &[a]).unwrap() == whole,
                    "{name} split {a}"
                );
            }
            // And every pair of split points.
            for a in 0..=data.len() {
                for b in (a..=data.len()).step_by(7) {
                    assert!(
                        parse_split(&data, cfg, &[a, b]).unwrap() == whole,
                        "{name} splits {a} {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn big_fixtures_at_sampled_split_points_and_byte_by_byte() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (name, data, json) in fixtures() {
        if json.is_none() {
            continue;
        }
        for cfg in [ParserConfig::default(), small_cfg()] {
            let whole = parse_all(&data, cfg).unwrap();
            for _ in 0..40 {
                let a = rng.gen_range(0..=data.len());
                assert!(
                    parse_split(&data, cfg, &[a]).unwrap() == whole,
                    "{name} split {a}"
                );
            }
            let cuts: Vec<usize> = (1..data.len()).collect();
            assert!(
                parse_split(&data, cfg, &cuts).unwrap() == whole,
                "{name} byte by byte"
            );
            // Random block sizes through feed_bytes (zero-copy path).
            let mut p = Parser::new(cfg);
            let mut ev = Vec::new();
            let all = Bytes::from(data.clone());
            let mut at = 0;
            while at < all.len() {
                let n = rng.gen_range(1..5000).min(all.len() - at);
                p.feed_bytes(all.slice(at..at + n), &mut ev).unwrap();
                at += n;
            }
            p.finish().unwrap();
            assert!(ev == whole, "{name} feed_bytes");
        }
    }
}

#[test]
fn truncations_are_errors_naming_the_offset() {
    for (name, data, _) in fixtures() {
        if name.starts_with("corrupt_ziplist") {
            continue;
        }
        let step = (data.len() / 300).max(1);
        for cut in (0..data.len()).step_by(step).chain([data.len() - 1]) {
            let mut p = Parser::new(ParserConfig::default());
            let mut ev = Vec::new();
            p.feed(&data[..cut], &mut ev)
                .unwrap_or_else(|e| panic!("{name}: a prefix of {cut} bytes failed: {e}"));
            match p.finish() {
                Err(RdbError::Truncated { offset, expected }) => {
                    assert!(offset <= cut as u64, "{name} cut {cut}: offset {offset}");
                    assert_eq!(offset, p.offset());
                    assert!(!expected.is_empty());
                }
                other => panic!("{name} cut {cut}: {other:?}"),
            }
        }
    }
}

fn random_cuts(rng: &mut impl Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.gen_range(1..20))
        .map(|_| rng.gen_range(0..=len))
        .collect();
    cuts.sort_unstable();
    cuts
}

/// A parse result to compare: the events, or the error's kind and offset.
fn outcome(r: &Result<Vec<Event>, RdbError>) -> Result<&Vec<Event>, (String, Option<u64>)> {
    match r {
        Ok(ev) => Ok(ev),
        Err(e) => Err((
            format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string(),
            e.offset(),
        )),
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut outcomes = [0usize; 3]; // error, different, same
    for (name, data, _) in fixtures() {
        let whole = parse_all(&data, ParserConfig::default());
        let tries = if data.len() > 10_000 { 150 } else { 300 };
        for _ in 0..tries {
            let mut bad = data.clone();
            let flips = rng.gen_range(1..4);
            for _ in 0..flips {
                let i = rng.gen_range(0..bad.len());
                bad[i] ^= 1 << rng.gen_range(0..8);
            }
            // With checksums off as well, so the damage reaches the value decoders.
            let len = bad.len();
            let mut unchecked = bad.clone();
            unchecked[len - 8..].copy_from_slice(&[0; 8]);
            for input in [&bad, &unchecked] {
                let r = std::panic::catch_unwind(|| parse_all(input, small_cfg()));
                let r = r.unwrap_or_else(|_| panic!("{name}: panic on a damaged file"));
                // Fed in random blocks, the same outcome.
                let cuts = random_cuts(&mut rng, input.len());
                let s = std::panic::catch_unwind(|| parse_split(input, small_cfg(), &cuts));
                let s = s.unwrap_or_else(|_| panic!("{name}: panic on a damaged file (split)"));
                assert_eq!(outcome(&r), outcome(&s), "{name}: split {cuts:?}");
                match (&r, &whole) {
                    (Err(_), _) => outcomes[0] += 1,
                    (Ok(a), Ok(b)) if a != b => outcomes[1] += 1,
                    _ => outcomes[2] += 1,
                }
            }
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

/// A longer run of the damage test: `cargo test --release --test rdb_fixtures -- --ignored`.
#[test]
#[ignore]
fn long_fuzz_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    );
    let files = fixtures();
    let mut n = 0u64;
    for _ in 0..20_000 {
        let (name, data, _) = &files[rng.gen_range(0..files.len())];
        let mut bad = data.clone();
        match rng.gen_range(0..4) {
            0 => {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..bad.len());
                    bad[i] = rng.gen();
                }
            }
            1 => {
                let i = rng.gen_range(0..bad.len());
                let j = (i + rng.gen_range(1..64)).min(bad.len());
                bad.drain(i..j);
            }
            2 => {
                let i = rng.gen_range(0..bad.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                bad.splice(i..i, junk);
            }
            _ => {
                // A length prefix made huge.
                let i = rng.gen_range(9..bad.len());
                bad[i] = [0x80u8, 0x81, 0xbf, 0x7f][rng.gen_range(0..4)];
            }
        }
        let len = bad.len();
        if len > 8 && rng.gen_bool(0.5) {
            bad[len - 8..].copy_from_slice(&[0; 8]);
        }
        let cfg = if rng.gen_bool(0.5) {
            small_cfg()
        } else {
            ParserConfig::default()
        };
        let r = std::panic::catch_unwind(|| parse_all(&bad, cfg))
            .unwrap_or_else(|_| panic!("{name}: panic"));
        let cuts = random_cuts(&mut rng, bad.len());
        let s = std::panic::catch_unwind(|| parse_split(&bad, cfg, &cuts))
            .unwrap_or_else(|_| panic!("{name}: panic (split)"));
        assert_eq!(outcome(&r), outcome(&s), "{name}");
        if let Ok(ev) = &r {
            let _ = digest(&LogicalState::from_events(ev, 0));
        }
        n += 1;
    }
    assert_eq!(n, 20_000);
}

#[test]
fn a_flipped_byte_in_a_value_is_a_crc_mismatch() {
    for (name, data, _) in fixtures() {
        let version = data[5..9]
            .iter()
            .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
        if version < 5 || name.starts_with("corrupt_ziplist") {
            continue;
        }
        // The last byte of the first AUX value written as a plain string, or of a key name.
        let Some(at) = data
            .windows(9)
            .position(|w| w == b"redis-ver")
            .map(|p| p + 10 + 2)
        else {
            continue;
        };
        let mut bad = data.clone();
        bad[at] ^= 0x01;
        match parse_all(&bad, ParserConfig::default()) {
            Err(RdbError::CrcMismatch {
                expected,
                actual,
                offset,
            }) => {
                assert_ne!(expected, actual);
                assert_eq!(offset, data.len() as u64 - 8, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let data = std::fs::read(fixture_dir().join("redis-assets/hash-ziplist.rdb")).unwrap();
    let mut more = data.clone();
    more.push(0);
    match parse_all(&more, ParserConfig::default()) {
        Err(RdbError::TrailingBytes { offset }) => assert_eq!(offset, data.len() as u64),
        other => panic!("{other:?}"),
    }
    // Also when the extra bytes come in a later feed.
    let mut p = Parser::new(ParserConfig::default());
    let mut ev = Vec::new();
    p.feed(&data, &mut ev).unwrap();
    assert!(p.is_done());
    assert!(matches!(
        p.feed(b"x", &mut ev),
        Err(RdbError::TrailingBytes { .. })
    ));
}

#[test]
fn raw_values_rebuild_dump_payloads_that_parse_back() {
    let data = std::fs::read(fixture_dir().join("redis-7.0.15-rdb10-public.rdb")).unwrap();
    let events = parse_all(&data, ParserConfig::default()).unwrap();
    let mut raws = 0;
    for ev in &events {
        if let Event::KeyEnd { raw: Some(raw) } = ev {
            let payload = rdb::dump_payload(raw, 10);
            assert_eq!(&payload[..raw.len()], &raw[..]);
            assert_eq!(&payload[raw.len()..raw.len() + 2], &[10, 0]);
            assert_eq!(rdb::crc64(0, &payload), 0);
            raws += 1;
        }
    }
    let keys = events
        .iter()
        .filter(|e| matches!(e, Event::KeyStart { .. }))
        .count();
    assert_eq!(raws, keys, "every key of this file is under 8 MiB");
    // With raw capture off, no raw.
    let events = parse_all(
        &data,
        ParserConfig {
            max_raw_value: 0,
            ..ParserConfig::default()
        },
    )
    .unwrap();
    assert!(events
        .iter()
        .all(|e| !matches!(e, Event::KeyEnd { raw: Some(_) })));
}

#[test]
fn raw_values_are_the_same_at_every_chunk_size() {
    // Streamed values (capture across steps and input blocks) give the bytes a whole parse
    // gives.
    let data = std::fs::read(fixture_dir().join("redis-unstable-rdb12-public.rdb")).unwrap();
    let raws = |cfg: ParserConfig, block: usize| -> Vec<Option<Bytes>> {
        let mut p = Parser::new(cfg);
        let mut ev = Vec::new();
        for c in data.chunks(block) {
            p.feed(c, &mut ev).unwrap();
        }
        p.finish().unwrap();
        ev.into_iter()
            .filter_map(|e| match e {
                Event::KeyEnd { raw } => Some(raw),
                _ => None,
            })
            .collect()
    };
    let big = ParserConfig {
        max_raw_value: 1 << 20,
        ..ParserConfig::default()
    };
    let want = raws(big, data.len());
    assert!(want.iter().all(Option::is_some));
    for (chunk, block) in [(7, 1000), (100, 3), (1 << 20, 1), (3, 65536)] {
        let cfg = ParserConfig {
            max_chunk: chunk,
            ..big
        };
        assert_eq!(raws(cfg, block), want, "max_chunk {chunk} block {block}");
    }
}
