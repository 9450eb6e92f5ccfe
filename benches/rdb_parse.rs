//! RDB parse throughput (MB/s) over synthetic RDBs built in memory: one of mixed types (strings,
//! integers, listpack hashes, intsets, quicklists, plain hashes and sorted sets), and one of
//! plain strings only. Run with `cargo bench --bench rdb_parse`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use redis_pitr::rdb::{self, Event, Parser, ParserConfig};

/// A listpack of short strings (< 64 bytes each).
fn listpack(items: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for s in items {
        body.push(0x80 | s.len() as u8);
        body.extend_from_slice(s);
        body.push(1 + s.len() as u8);
    }
    let total = 6 + body.len() + 1;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(items.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xff);
    out
}

fn word(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.gen_range(b'a'..=b'z')).collect()
}

fn finish(mut body: Vec<u8>) -> Bytes {
    body.push(0xff);
    let crc = rdb::crc64(0, &body);
    body.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(body)
}

fn header() -> Vec<u8> {
    let mut b = b"REDIS0011".to_vec();
    b.push(0xfa);
    rdb::write_string(&mut b, b"redis-ver");
    rdb::write_string(&mut b, b"7.2.0");
    b.extend_from_slice(&[0xfe, 0x00]);
    b
}

fn mixed_rdb(target: usize) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut b = header();
    let mut i = 0u64;
    while b.len() < target {
        let key = format!("key:{i:010}");
        i += 1;
        if rng.gen_bool(0.1) {
            b.push(0xfc);
            b.extend_from_slice(&4_102_444_800_000i64.to_le_bytes());
        }
        match i % 10 {
            0..=3 => {
                b.push(0);
                rdb::write_string(&mut b, key.as_bytes());
                let n = rng.gen_range(10..200);
                rdb::write_string(&mut b, &word(&mut rng, n));
            }
            4 => {
                b.push(0);
                rdb::write_string(&mut b, key.as_bytes());
                b.push(0xc2);
                b.extend_from_slice(&rng.gen::<i32>().to_le_bytes());
            }
            5 => {
                b.push(0);
                rdb::write_string(&mut b, key.as_bytes());
                let n = rng.gen_range(1000..4000);
                rdb::write_string(&mut b, &word(&mut rng, n));
            }
            6 => {
                // Listpack hash of 10 fields.
                b.push(16);
                rdb::write_string(&mut b, key.as_bytes());
                let items: Vec<Vec<u8>> = (0..20)
                    .map(|j| {
                        if j % 2 == 0 {
                            format!("field{j}").into_bytes()
                        } else {
                            word(&mut rng, 12)
                        }
                    })
                    .collect();
                rdb::write_string(&mut b, &listpack(&items));
            }
            7 => {
                // Intset of 50 members.
                b.push(11);
                rdb::write_string(&mut b, key.as_bytes());
                let mut set = Vec::new();
                set.extend_from_slice(&4u32.to_le_bytes());
                set.extend_from_slice(&50u32.to_le_bytes());
                for k in 0..50i32 {
                    set.extend_from_slice(&(k * 1000 + rng.gen_range(0..999)).to_le_bytes());
                }
                rdb::write_string(&mut b, &set);
            }
            8 => {
                // Quicklist of 4 listpack nodes of 30 elements.
                b.push(18);
                rdb::write_string(&mut b, key.as_bytes());
                rdb::write_len(&mut b, 4);
                for _ in 0..4 {
                    rdb::write_len(&mut b, 2);
                    let items: Vec<Vec<u8>> = (0..30).map(|_| word(&mut rng, 16)).collect();
                    rdb::write_string(&mut b, &listpack(&items));
                }
            }
            _ => {
                if i % 20 == 9 {
                    // Plain hash of 200 fields.
                    b.push(4);
                    rdb::write_string(&mut b, key.as_bytes());
                    rdb::write_len(&mut b, 200);
                    for j in 0..200 {
                        rdb::write_string(&mut b, format!("f{j}").as_bytes());
                        rdb::write_string(&mut b, &word(&mut rng, 20));
                    }
                } else {
                    // Skiplist zset of 200 members.
                    b.push(5);
                    rdb::write_string(&mut b, key.as_bytes());
                    rdb::write_len(&mut b, 200);
                    for j in 0..200 {
                        rdb::write_string(&mut b, format!("member{j}").as_bytes());
                        b.extend_from_slice(&rng.gen::<f64>().to_le_bytes());
                    }
                }
            }
        }
    }
    finish(b)
}

fn strings_rdb(target: usize) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut b = header();
    let mut i = 0u64;
    while b.len() < target {
        b.push(0);
        rdb::write_string(&mut b, format!("string:{i:010}").as_bytes());
        i += 1;
        let n = rng.gen_range(100..1000);
        rdb::write_string(&mut b, &word(&mut rng, n));
    }
    finish(b)
}

/// Small strings like DEBUG POPULATE's: `key:N` and 100-byte values.
fn populate_rdb(target: usize) -> Bytes {
    let mut b = header();
    let mut i = 0u64;
    while b.len() < target {
        b.push(0);
        rdb::write_string(&mut b, format!("key:{i}").as_bytes());
        let mut v = format!("value:{i}").into_bytes();
        v.resize(100, 0);
        rdb::write_string(&mut b, &v);
        i += 1;
    }
    finish(b)
}

/// Counts keys only (what `--output-dir` does beside copying), in 1 MiB blocks.
fn count(data: &Bytes) -> u64 {
    let mut p = Parser::new(ParserConfig {
        max_raw_value: 0,
        ..ParserConfig::default()
    });
    p.set_lzf_strings(rdb::LzfStrings::Skip);
    let mut ev: Vec<Event> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + (1 << 20)).min(data.len());
        ev.clear();
        p.feed_bytes(data.slice(at..end), &mut ev).unwrap();
        at = end;
    }
    p.finish().unwrap().keys
}

/// Parse `data` in 64 KiB blocks; returns the number of events (to keep the work observable).
fn parse(data: &Bytes, cfg: ParserConfig) -> usize {
    let mut p = Parser::new(cfg);
    let mut ev: Vec<Event> = Vec::with_capacity(4096);
    let mut n = 0;
    let mut at = 0;
    while at < data.len() {
        let end = (at + (64 << 10)).min(data.len());
        ev.clear();
        p.feed_bytes(data.slice(at..end), &mut ev).unwrap();
        n += ev.len();
        at = end;
    }
    p.finish().unwrap();
    n
}

fn bench(c: &mut Criterion) {
    let size = 64 << 20;
    let mixed = mixed_rdb(size);
    let strings = strings_rdb(size);
    let no_raw = ParserConfig {
        max_raw_value: 0,
        ..ParserConfig::default()
    };

    let mut g = c.benchmark_group("rdb_parse");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(mixed.len() as u64));
    g.bench_function("mixed_types", |b| {
        b.iter(|| parse(&mixed, ParserConfig::default()))
    });
    g.bench_function("mixed_types_no_raw", |b| b.iter(|| parse(&mixed, no_raw)));
    g.bench_function("mixed_types_check", |b| {
        b.iter(|| rdb::check(std::io::Cursor::new(&mixed[..])).unwrap())
    });
    g.throughput(Throughput::Bytes(strings.len() as u64));
    g.bench_function("plain_strings", |b| {
        b.iter(|| parse(&strings, ParserConfig::default()))
    });
    g.bench_function("plain_strings_no_raw", |b| {
        b.iter(|| parse(&strings, no_raw))
    });
    let populate = populate_rdb(size);
    g.throughput(Throughput::Bytes(populate.len() as u64));
    g.bench_function("small_strings_count_only", |b| b.iter(|| count(&populate)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
