//! Ingest throughput: the archiver's stream path (frame whole commands, stamp, hand to the
//! segmenter, compress, checksum, chain, write to a `file://` store with fsync) next to plain
//! zstd compression of the same bytes at the same level (`format::ZSTD_LEVEL`).
//!
//! The input is ~64 MB of synthetic but realistic replication stream (seeded, so every run
//! compresses the same bytes): RESP arrays of SET/HSET/INCR/XADD/ZADD/… as a Redis 7 master
//! propagates them (`PXAT`, `PEXPIREAT`, explicit stream ids), a few `SELECT`s, `PING`s and
//! `MULTI`/`EXEC` blocks, with values that compress about as well as typical application data.
//!
//! Benchmarks (group `ingest`, throughput counted in raw stream bytes for all of them, so
//! that the figures compare):
//!
//! - `zstd_alone_64MiB_pieces`: `zstd::bulk::compress` of the whole buffer (it is below 64 MiB,
//!   so this is one piece, exactly what one sealed 64 MiB segment costs): the baseline;
//! - `zstd_alone_1MiB_pieces`: the same bytes in 1 MiB pieces;
//! - `scan_only`: `CommandScanner::scan` over 256 KiB reads (the framing alone);
//! - `encode_segment`: `format::encode_segment` of the whole buffer (zstd + header + hashes);
//! - `segment_append`: copying 256 KiB chunks into a growing `BytesMut`, as
//!   `Segmenter::append` does;
//! - `file_put_new`: `Store::put_new` of the encoded segment into a fresh `file://` store;
//! - `archiver_memory`: the archiver's path into a `memory://` store (no file system);
//! - `archiver_file`: the archiver's path into a fresh `file://` directory (fsync on), with
//!   64 MiB segments: **the figure compared with the baseline**;
//! - `archiver_file_8MiB_segments`: the same with `segment_max_bytes` 8 MiB (8 segments);
//!
//! After the group, `ingest/paired` (not a criterion benchmark) times zstd alone and the
//! archiver variants in rotation, round after round, and prints the median of the per-round
//! ratios: a neighbour that loads the machine during one benchmark then skews both sides
//! alike. It runs with `cargo bench` when no filter or a filter containing `paired` is given.
//!
//! `scripts/bench.sh ingest` runs this and prints the ratio archiver_file / zstd_alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{oneshot, Semaphore};

use redis_pitr::archive::format::{self, SegmentHeader, TimeMark, ZSTD_LEVEL};
use redis_pitr::archive::names::{ArchiveName, GenerationId, ReplId};
use redis_pitr::archive::store::Store;
use redis_pitr::ingest::archiver::now_ms;
use redis_pitr::ingest::segment::{Chunk, Msg, Position, Segmenter, SegmenterConfig};
use redis_pitr::resp::scanner::CommandScanner;

/// Size of the generated stream: just below 64 MiB, so that the archiver seals it as one
/// segment at `Finish`, the same single piece that `zstd_alone_64MiB_pieces` compresses.
const STREAM_BYTES: usize = 64_000_000;
/// What one read of the socket returns at most (`link::READ_CHUNK`).
const READ: usize = 256 * 1024;
const SEGMENT_MAX_BYTES: usize = 64 << 20;
/// The archiver's default `--max-buffer`.
const MAX_BUFFER: usize = 512 << 20;
const SEED: u64 = 0x5eed_5717;
const REPLID: &str = "8f3a2c9e1b7d4f60a5c3e2d1b0a9f8e7d6c5b4a3";

/// Appends one command as a master propagates it: an array of bulk strings.
fn resp(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

const WORDS: &[&str] = &[
    "active",
    "pending",
    "shipped",
    "delivered",
    "cancelled",
    "premium",
    "basic",
    "trial",
    "checkout",
    "login",
    "logout",
    "search",
    "view",
    "click",
    "purchase",
    "refund",
    "mobile",
    "desktop",
    "tablet",
    "en-US",
    "de-DE",
    "fr-FR",
    "ja-JP",
    "pt-BR",
    "Berlin",
    "Paris",
    "Tokyo",
    "Lisbon",
    "Austin",
    "Mumbai",
    "blue",
    "green",
    "red",
    "black",
    "small",
    "medium",
    "large",
    "true",
    "false",
    "null",
];
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn token(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

fn word(rng: &mut StdRng) -> &'static str {
    WORDS[rng.gen_range(0..WORDS.len())]
}

/// A JSON document of the kind applications cache: ids, timestamps, enums, a token, a list.
fn json_doc(rng: &mut StdRng, ts: u64) -> String {
    let items: Vec<String> = (0..rng.gen_range(0..6))
        .map(|_| {
            format!(
                r#"{{"sku":"{}-{}","qty":{},"price":{}.{:02}}}"#,
                word(rng),
                rng.gen_range(1000..99999),
                rng.gen_range(1..5),
                rng.gen_range(1..500),
                rng.gen_range(0..100)
            )
        })
        .collect();
    format!(
        r#"{{"id":{},"user":"u{}","status":"{}","plan":"{}","device":"{}","locale":"{}","city":"{}","token":"{}","created":{},"updated":{},"score":{:.4},"items":[{}]}}"#,
        rng.gen_range(1u64..10_000_000_000),
        rng.gen_range(1..5_000_000),
        word(rng),
        word(rng),
        word(rng),
        word(rng),
        word(rng),
        token(rng, 24),
        ts - rng.gen_range(0..86_400_000),
        ts,
        rng.gen::<f64>() * 1000.0,
        items.join(",")
    )
}

/// ~`STREAM_BYTES` of replication stream, always the same for one seed. Ends on a command
/// boundary.
fn generate_stream(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(STREAM_BYTES + (1 << 20));
    let mut ts: u64 = 1_700_000_000_000;
    let mut db = 0u32;
    let mut stream_seq = 0u64;
    resp(&mut out, &[b"SELECT", b"0"]);
    let mut n = 0u64;
    while out.len() < STREAM_BYTES {
        n += 1;
        ts += rng.gen_range(0..3);
        // The master PINGs its replicas every 10 s; at a few MB/s of writes that is rare.
        if n % 50_000 == 0 {
            resp(&mut out, &[b"PING"]);
        }
        // A few database switches.
        if n % 100_000 == 0 {
            db = if db == 0 { rng.gen_range(1..4) } else { 0 };
            resp(&mut out, &[b"SELECT", db.to_string().as_bytes()]);
        }
        let transaction = rng.gen_ratio(1, 50);
        if transaction {
            resp(&mut out, &[b"MULTI"]);
        }
        for _ in 0..if transaction { rng.gen_range(2..5) } else { 1 } {
            let p = rng.gen_range(0..100);
            match p {
                // Cached documents, with an expiry (Redis 7 propagates EX as PXAT).
                0..=29 => {
                    let key = format!("cache:doc:{}", rng.gen_range(0..2_000_000));
                    let v = json_doc(&mut rng, ts);
                    let at = (ts + rng.gen_range(60_000..3_600_000)).to_string();
                    resp(
                        &mut out,
                        &[b"SET", key.as_bytes(), v.as_bytes(), b"PXAT", at.as_bytes()],
                    );
                }
                // Sessions: opaque tokens.
                30..=39 => {
                    let key = format!("session:{}", token(&mut rng, 32));
                    let len = rng.gen_range(40..200);
                    let v = token(&mut rng, len);
                    resp(&mut out, &[b"SET", key.as_bytes(), v.as_bytes()]);
                }
                // Counters.
                40..=54 => {
                    let key = format!("counter:{}:{}", word(&mut rng), rng.gen_range(0..10_000));
                    if rng.gen_bool(0.7) {
                        resp(&mut out, &[b"INCR", key.as_bytes()]);
                    } else {
                        let by = rng.gen_range(1..1000).to_string();
                        resp(&mut out, &[b"INCRBY", key.as_bytes(), by.as_bytes()]);
                    }
                }
                // User profiles as hashes.
                55..=69 => {
                    let key = format!("user:{}", rng.gen_range(0..5_000_000));
                    let email = format!("{}.{}@example.com", word(&mut rng), token(&mut rng, 6));
                    let last = ts.to_string();
                    let visits = rng.gen_range(0..10_000).to_string();
                    resp(
                        &mut out,
                        &[
                            b"HSET",
                            key.as_bytes(),
                            b"email",
                            email.as_bytes(),
                            b"last_seen",
                            last.as_bytes(),
                            b"visits",
                            visits.as_bytes(),
                            b"plan",
                            word(&mut rng).as_bytes(),
                        ],
                    );
                }
                // Event streams (propagated with the id the master chose).
                70..=79 => {
                    stream_seq += 1;
                    let key = format!("events:{}", rng.gen_range(0..16));
                    let id = format!("{ts}-{stream_seq}");
                    let user = format!("u{}", rng.gen_range(1..5_000_000));
                    let path = format!("/{}/{}", word(&mut rng), rng.gen_range(0..100_000));
                    let ms = rng.gen_range(1..2000).to_string();
                    resp(
                        &mut out,
                        &[
                            b"XADD",
                            key.as_bytes(),
                            id.as_bytes(),
                            b"type",
                            word(&mut rng).as_bytes(),
                            b"user",
                            user.as_bytes(),
                            b"path",
                            path.as_bytes(),
                            b"ms",
                            ms.as_bytes(),
                        ],
                    );
                }
                // Leaderboards.
                80..=86 => {
                    let key = format!("leaderboard:{}", rng.gen_range(0..100));
                    let score = rng.gen_range(0..1_000_000).to_string();
                    let member = format!("player:{}", rng.gen_range(0..1_000_000));
                    resp(
                        &mut out,
                        &[b"ZADD", key.as_bytes(), score.as_bytes(), member.as_bytes()],
                    );
                }
                // Queues.
                87..=91 => {
                    let key = format!("queue:{}", word(&mut rng));
                    let job = format!(
                        r#"{{"job":"{}","attempt":{},"enqueued":{ts}}}"#,
                        token(&mut rng, 16),
                        rng.gen_range(0..3)
                    );
                    resp(&mut out, &[b"LPUSH", key.as_bytes(), job.as_bytes()]);
                }
                // Tags.
                92..=94 => {
                    let key = format!("tags:{}", rng.gen_range(0..100_000));
                    resp(
                        &mut out,
                        &[b"SADD", key.as_bytes(), word(&mut rng).as_bytes()],
                    );
                }
                // Expiries (propagated as PEXPIREAT) and deletes.
                95..=97 => {
                    let key = format!("session:{}", token(&mut rng, 32));
                    let at = (ts + 1_800_000).to_string();
                    resp(&mut out, &[b"PEXPIREAT", key.as_bytes(), at.as_bytes()]);
                }
                _ => {
                    let key = format!("cache:doc:{}", rng.gen_range(0..2_000_000));
                    resp(&mut out, &[b"DEL", key.as_bytes()]);
                }
            }
        }
        if transaction {
            resp(&mut out, &[b"EXEC"]);
        }
        // Now and then a large, poorly compressible value (an image thumbnail, a blob).
        if rng.gen_ratio(1, 500) {
            let key = format!("blob:{}", rng.gen_range(0..100_000));
            let len = rng.gen_range(2_000..20_000);
            let v = token(&mut rng, len);
            resp(&mut out, &[b"SET", key.as_bytes(), v.as_bytes()]);
        }
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The archiver's stream path for `data`, as `archive::Archiver::stream` drives it: the link's
/// buffer receives 256 KiB reads, the scanner finds the whole commands, they are split off,
/// stamped with the arrival time and sent to the segmenter under the byte budget; then
/// `Finish` seals and uploads the rest and answers with the durable point. Returns the time
/// from the first read to the answer.
async fn archive_once(data: &[u8], store: Store, segment_max_bytes: usize) -> Duration {
    let (segmenter, tx, durable) = Segmenter::new(
        store,
        SegmenterConfig {
            flush_interval: Duration::from_secs(3600),
            segment_max_bytes,
        },
    );
    let task = tokio::spawn(segmenter.run());
    let replid: ReplId = REPLID.parse().expect("replid");
    let budget = Arc::new(Semaphore::new(MAX_BUFFER));
    let started = Instant::now();
    tx.send(Msg::Start(Position {
        generation: GenerationId(1),
        replid,
        offset: 0,
        db: 0,
        sum: 0,
    }))
    .expect("segmenter alive");
    let mut scanner = CommandScanner::new(0);
    let mut buf = BytesMut::with_capacity(READ);
    let mut offset = 0u64;
    for read in data.chunks(READ) {
        buf.reserve(READ);
        buf.extend_from_slice(read);
        let s = scanner.scan(&buf, offset);
        assert!(s.error.is_none(), "{:?}", s.error);
        if s.consumed == 0 {
            continue;
        }
        let bytes = buf.split_to(s.consumed).freeze();
        offset += s.consumed as u64;
        let permit = budget
            .clone()
            .acquire_many_owned(bytes.len().clamp(1, MAX_BUFFER) as u32)
            .await
            .expect("budget open");
        tx.send(Msg::Chunk(Chunk {
            bytes,
            end: offset,
            ms: now_ms(),
            db_after: scanner.db(),
            getack: s.getack,
            permit: Some(permit),
        }))
        .expect("segmenter alive");
    }
    assert!(buf.is_empty(), "the stream ends on a command boundary");
    let (reply, done) = oneshot::channel();
    tx.send(Msg::Finish(reply)).expect("segmenter alive");
    let d = done.await.expect("finish answered");
    let elapsed = started.elapsed();
    assert_eq!(d.offset, data.len() as u64);
    assert_eq!(*durable.borrow(), d);
    drop(tx);
    task.await.expect("segmenter task").expect("segmenter");
    elapsed
}

/// The header of a segment holding the whole stream.
fn segment_header(len: usize) -> SegmentHeader {
    SegmentHeader {
        generation: GenerationId(1),
        start: 0,
        end: len as u64,
        first_ms: 1,
        last_ms: 2,
        db_start: 0,
        db_end: 0,
        replid: REPLID.parse().expect("replid"),
        link: redis_pitr::archive::format::Link::PrevObject(0),
        level: 0,
        frames: Vec::new(),
        index: vec![TimeMark {
            end: len as u64,
            ms: 2,
        }],
    }
}

/// A `file://` store in a fresh directory under `base` (removed when the directory is dropped).
fn fresh_store(base: &std::path::Path, name: &ArchiveName) -> (tempfile::TempDir, Store) {
    let dir = tempfile::Builder::new()
        .prefix("pitr-bench-ingest-")
        .tempdir_in(base)
        .expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    let store = Store::open(&url, name).expect("file store");
    (dir, store)
}

fn bench_ingest(c: &mut Criterion) {
    let data = input();
    let compressed = zstd::bulk::compress(data, ZSTD_LEVEL).expect("zstd");
    let commands = redis_pitr::resp::scanner::command_ends(data, 0)
        .expect("whole commands")
        .len();
    eprintln!(
        "ingest input: {} bytes of replication stream, {commands} commands, zstd level {ZSTD_LEVEL} ratio {:.2}",
        data.len(),
        data.len() as f64 / compressed.len() as f64
    );
    drop(compressed);
    let rt = runtime();
    let name: ArchiveName = "bench".parse().expect("archive name");
    let tmp_base = std::env::temp_dir();

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(data.len() as u64));

    for (name, piece_len) in [
        ("zstd_alone_64MiB_pieces", 64 << 20),
        ("zstd_alone_1MiB_pieces", 1 << 20),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = 0;
                for piece in data.chunks(piece_len) {
                    out += zstd::bulk::compress(black_box(piece), ZSTD_LEVEL)
                        .expect("zstd")
                        .len();
                }
                out
            })
        });
    }
    g.bench_function("scan_only", |b| {
        b.iter(|| {
            // The link's buffer, without the copy: `data[at..end]` is what was read and not
            // yet consumed; each read adds up to 256 KiB.
            let mut scanner = CommandScanner::new(0);
            let (mut at, mut end) = (0usize, 0usize);
            let mut commands = 0u64;
            while end < data.len() {
                end = (end + READ).min(data.len());
                let s = scanner.scan(black_box(&data[at..end]), at as u64);
                commands += s.commands;
                at += s.consumed;
            }
            assert_eq!(at, data.len());
            commands
        })
    });
    g.bench_function("encode_segment", |b| {
        let header = segment_header(data.len());
        b.iter(|| {
            format::encode_segment(&header, black_box(data))
                .expect("encode")
                .1
        })
    });
    g.bench_function("segment_append", |b| {
        // What `Segmenter::append` does with the chunks of one segment: copy them into a
        // `BytesMut` that starts at 64 KiB and grows (by doubling) to the segment's size.
        let reads: Vec<bytes::Bytes> = data
            .chunks(READ)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        b.iter(|| {
            let mut open = BytesMut::with_capacity(READ.max(64 * 1024));
            for r in &reads {
                open.extend_from_slice(black_box(r));
            }
            open.freeze().len()
        })
    });
    g.bench_function("file_put_new", |b| {
        // Writing the encoded segment (~1/3 of the raw bytes) to a fresh `file://` store:
        // staging file, write, fsync, hard link, directory fsync. Throughput is still counted
        // in raw stream bytes, so that the figures add up.
        let (object, _) =
            format::encode_segment(&segment_header(data.len()), data).expect("encode");
        let object = bytes::Bytes::from(object);
        let seg_name = redis_pitr::archive::names::ObjectName::segment(
            GenerationId(1),
            (0, data.len() as u64),
            (1, 2),
            REPLID.parse().expect("replid"),
        );
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (dir, store) = fresh_store(&tmp_base, &name);
                let started = Instant::now();
                rt.block_on(store.put_new(&seg_name, object.clone()))
                    .expect("put");
                total += started.elapsed();
                drop(dir);
            }
            total
        })
    });
    g.bench_function("archiver_memory", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Store::open("memory://", &name).expect("memory store");
                total += rt.block_on(archive_once(data, store, SEGMENT_MAX_BYTES));
            }
            total
        })
    });
    for (id, segment_max_bytes) in [
        ("archiver_file", SEGMENT_MAX_BYTES),
        ("archiver_file_8MiB_segments", 8 << 20),
    ] {
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh directory each time (its creation and removal are not timed).
                    let (dir, store) = fresh_store(&tmp_base, &name);
                    total += rt.block_on(archive_once(data, store, segment_max_bytes));
                    drop(dir);
                }
                total
            })
        });
    }
    g.finish();
}

/// The generated stream, shared by the criterion group and the paired rounds.
fn input() -> &'static [u8] {
    static INPUT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    INPUT.get_or_init(|| generate_stream(SEED))
}

/// Whether this is a `cargo bench` run that asked for the paired rounds.
fn paired_wanted() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench")
        || args
            .iter()
            .any(|a| a == "--list" || a == "--test" || a == "--profile-time")
    {
        return false;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| f.contains("paired"))
}

/// Times zstd alone and the archiver variants in rotation and prints, for each variant, the
/// median over the rounds of (its throughput / zstd's throughput in the same round).
fn paired() {
    const ROUNDS: usize = 7;
    let data = input();
    let rt = runtime();
    let name: ArchiveName = "bench".parse().expect("archive name");
    let tmp_base = std::env::temp_dir();
    let file = |segment_max_bytes: usize| {
        let (_dir, store) = fresh_store(&tmp_base, &name);
        rt.block_on(archive_once(data, store, segment_max_bytes))
    };
    let variants: [(&str, &dyn Fn() -> Duration); 4] = [
        ("zstd_alone_64MiB_pieces", &|| {
            let started = Instant::now();
            black_box(zstd::bulk::compress(black_box(data), ZSTD_LEVEL).expect("zstd"));
            started.elapsed()
        }),
        ("archiver_memory", &|| {
            let store = Store::open("memory://", &name).expect("memory store");
            rt.block_on(archive_once(data, store, SEGMENT_MAX_BYTES))
        }),
        ("archiver_file", &|| file(SEGMENT_MAX_BYTES)),
        ("archiver_file_8MiB_segments", &|| file(8 << 20)),
    ];
    // One round unmeasured, to warm up caches and the allocator.
    for (_, run) in &variants {
        run();
    }
    let mut times = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for round in 0..ROUNDS {
        // Rotate the order, so that no variant always runs right after another.
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            times[i].push(variants[i].1());
        }
    }
    let mbs = |t: Duration| data.len() as f64 / 1e6 / t.as_secs_f64();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let zstd: Vec<Duration> = times[0].clone();
    println!(
        "ingest/paired: {ROUNDS} rounds; zstd_alone_64MiB_pieces median {:.1} MB/s",
        median(zstd.iter().map(|t| mbs(*t)).collect())
    );
    for (i, (id, _)) in variants.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = times[i]
            .iter()
            .zip(&zstd)
            .map(|(t, z)| z.as_secs_f64() / t.as_secs_f64())
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        println!(
            "ingest/paired: {id} median {:.1} MB/s, ratio to zstd alone: median {:.2} (min {lo:.2}, max {hi:.2})",
            median(times[i].iter().map(|t| mbs(*t)).collect()),
            median(ratios),
        );
    }
}

criterion_group!(benches, bench_ingest);

fn main() {
    benches();
    if paired_wanted() {
        paired();
    }
    Criterion::default().configure_from_args().final_summary();
}
