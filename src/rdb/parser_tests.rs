//! Parser tests on synthetic RDBs: the types, opcodes and limits the server-written fixtures do
//! not cover, every split point of each file, and bounded memory on large values.

use bytes::Bytes;

use super::containers::tests::{lp_encode, zl_encode, LpIn};
use super::logical::{LogicalState, Value};
use super::*;

/// Writes RDB bytes the way `rdb.c` does.
struct W(Vec<u8>);

impl W {
    fn redis(version: u32) -> W {
        W(format!("REDIS{version:04}").into_bytes())
    }

    fn valkey() -> W {
        W(b"VALKEY080".to_vec())
    }

    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn len(&mut self, n: u64) -> &mut Self {
        write_len(&mut self.0, n);
        self
    }

    fn s(&mut self, s: &[u8]) -> &mut Self {
        write_string(&mut self.0, s);
        self
    }

    fn key(&mut self, t: u8, k: &[u8]) -> &mut Self {
        self.b(&[t]).s(k)
    }

    fn end(&mut self, with_crc: bool) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.push(0xff);
        if with_crc {
            let c = crc64(0, &v);
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }
}

fn cfg(max_chunk: usize) -> ParserConfig {
    ParserConfig {
        max_chunk,
        max_raw_value: 1 << 20,
        max_lzf: 1 << 20,
        max_blob: 1 << 20,
    }
}

fn parse(data: &[u8], c: ParserConfig) -> Result<Vec<Event>, RdbError> {
    let mut p = Parser::new(c);
    let mut ev = Vec::new();
    p.feed(data, &mut ev)?;
    p.finish()?;
    Ok(ev)
}

/// Parse whole, then at every split point and byte by byte, and require the same events.
fn parse_everywhere(data: &[u8], c: ParserConfig) -> Vec<Event> {
    let whole = parse(data, c).unwrap();
    for cut in 0..=data.len() {
        let mut p = Parser::new(c);
        let mut ev = Vec::new();
        p.feed(&data[..cut], &mut ev).unwrap();
        p.feed(&data[cut..], &mut ev).unwrap();
        p.finish().unwrap();
        assert!(ev == whole, "split at {cut}");
    }
    let mut p = Parser::new(c);
    let mut ev = Vec::new();
    for b in data {
        p.feed(std::slice::from_ref(b), &mut ev).unwrap();
    }
    p.finish().unwrap();
    assert!(ev == whole, "byte by byte");
    whole
}

fn logical(events: &[Event]) -> LogicalState {
    LogicalState::from_events(events, 0)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn old_types_opcodes_and_metadata() {
    let mut w = W::redis(8);
    w.b(b"\xfa").s(b"redis-ver").s(b"4.0.9");
    w.b(b"\xfe").len(3);
    w.b(b"\xfb").len(5).len(1);
    // EXPIRETIME (seconds), IDLE, then a legacy list with 64-bit length encodings.
    w.b(b"\xfd").b(&1_000_000i32.to_le_bytes());
    w.b(b"\xf8").len(300);
    w.key(1, b"list")
        .len(3)
        .s(b"a")
        .b(&[0xc0, 0xfe])
        .b(&[0xc2, 0x15, 0xcd, 0x5b, 0x07]);
    // FREQ, a set, a zset with ASCII scores.
    w.b(b"\xf9\x07");
    w.key(2, b"set").len(2).s(b"x").s(b"y");
    w.key(3, b"zset")
        .len(4)
        .s(b"a")
        .b(b"\x031.5")
        .s(b"b")
        .b(b"\xfe")
        .s(b"c")
        .b(b"\xff")
        .s(b"d")
        .b(b"\x06-1e-10");
    w.key(4, b"hash").len(1).s(b"f").s(b"v");
    w.key(5, b"zset2").len(1).s(b"m").b(&0.25f64.to_le_bytes());
    // SLOT_INFO is read and ignored.
    w.b(b"\xf4").len(1).len(2).len(3);
    // An intset, a ziplist list, a ziplist zset and hash, a zipmap hash.
    let mut intset = vec![2, 0, 0, 0, 2, 0, 0, 0];
    intset.extend_from_slice(&(-5i16).to_le_bytes());
    intset.extend_from_slice(&7i16.to_le_bytes());
    w.key(11, b"intset").s(&intset);
    w.key(10, b"zl")
        .s(&zl_encode(&[LpIn::S(b"a"), LpIn::I(-300)]));
    w.key(12, b"zlz").s(&zl_encode(&[
        LpIn::S(b"m"),
        LpIn::S(b"2.5"),
        LpIn::S(b"n"),
        LpIn::I(3),
    ]));
    w.key(13, b"zlh")
        .s(&zl_encode(&[LpIn::S(b"f"), LpIn::I(1)]));
    w.key(9, b"zm").s(b"\x01\x01k\x01\x00v\xff");
    // A quicklist of ziplists, with an empty node (skipped by servers).
    w.key(14, b"ql")
        .len(2)
        .s(&zl_encode(&[LpIn::S(b"q1"), LpIn::S(b"q2")]))
        .s(&zl_encode(&[]));
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(4));
    assert_eq!(
        ev[0],
        Event::Header {
            magic: Magic::Redis,
            version: 8
        }
    );
    assert!(ev.contains(&Event::SelectDb(3)));
    assert!(ev.contains(&Event::ResizeDb {
        db_size: 5,
        expires_size: 1
    }));
    assert!(ev.contains(&Event::KeyStart {
        db: 3,
        key: b("list"),
        type_id: 1,
        kind: ValueKind::List,
        expire_ms: Some(1_000_000_000),
        idle: Some(300),
        freq: None,
    }));
    assert!(ev.contains(&Event::KeyStart {
        db: 3,
        key: b("set"),
        type_id: 2,
        kind: ValueKind::Set,
        expire_ms: None,
        idle: None,
        freq: Some(7),
    }));
    let st = logical(&ev);
    let get = |k: &str| {
        st.keys
            .iter()
            .find(|r| r.key == k.as_bytes())
            .map(|r| r.value.clone())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(
        get("list"),
        Value::List(vec![b("a"), b("-2"), b("123456789")])
    );
    assert_eq!(get("set"), Value::Set(vec![b("x"), b("y")]));
    assert_eq!(
        get("zset"),
        Value::ZSet(vec![
            (b("a"), 1.5),
            (b("b"), f64::INFINITY),
            (b("c"), f64::NEG_INFINITY),
            (b("d"), -1e-10)
        ])
    );
    assert_eq!(get("hash"), Value::Hash(vec![(b("f"), b("v"), None)]));
    assert_eq!(get("zset2"), Value::ZSet(vec![(b("m"), 0.25)]));
    assert_eq!(get("intset"), Value::Set(vec![b("-5"), b("7")]));
    assert_eq!(get("zl"), Value::List(vec![b("a"), b("-300")]));
    assert_eq!(get("zlz"), Value::ZSet(vec![(b("m"), 2.5), (b("n"), 3.0)]));
    assert_eq!(get("zlh"), Value::Hash(vec![(b("f"), b("1"), None)]));
    assert_eq!(get("zm"), Value::Hash(vec![(b("k"), b("v"), None)]));
    assert_eq!(get("ql"), Value::List(vec![b("q1"), b("q2")]));
    let s = parse(&data, cfg(4)).map(|_| ()).and_then(|_| {
        let mut p = Parser::new(cfg(4));
        p.feed(&data, &mut Vec::new())?;
        p.finish()
    });
    let s = s.unwrap();
    assert_eq!(s.keys, 11);
    assert_eq!(s.keys_per_db.get(&3), Some(&11));
    assert_eq!(s.keys_with_expiry, 1);
    assert_eq!(s.aux_fields, 1);
}

#[test]
fn rdb_before_version_5_has_no_checksum() {
    let mut w = W::redis(4);
    w.key(0, b"k").s(b"v");
    let data = w.end(false);
    let ev = parse_everywhere(&data, cfg(16));
    assert_eq!(ev.last(), Some(&Event::Eof { checksum: None }));
}

#[test]
fn checksum_zero_is_not_checked_and_a_wrong_one_is_named() {
    let mut w = W::redis(9);
    w.key(0, b"k").s(b"v");
    let mut data = w.end(false);
    data.extend_from_slice(&[0; 8]);
    let ev = parse(&data, cfg(16)).unwrap();
    assert_eq!(ev.last(), Some(&Event::Eof { checksum: None }));
    let n = data.len();
    data[n - 8] = 1;
    match parse(&data, cfg(16)) {
        Err(RdbError::CrcMismatch {
            expected, offset, ..
        }) => {
            assert_eq!(expected, 1);
            assert_eq!(offset, n as u64 - 8);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_strings_and_elements_come_in_pieces() {
    let long: Vec<u8> = (0..25u8).collect();
    let mut w = W::redis(9);
    w.key(0, b"str").s(&long);
    w.key(1, b"list").len(2).s(&long).s(b"short");
    w.key(4, b"hash").len(2).s(&long).s(&long).s(b"f").s(&long);
    w.key(5, b"zset").len(1).s(&long).b(&2.0f64.to_le_bytes());
    // Quicklist 2 with a PLAIN node holding a long element, and a packed node.
    w.key(18, b"ql2")
        .len(2)
        .len(1)
        .s(&long)
        .len(2)
        .s(&lp_encode(&[LpIn::S(b"p"), LpIn::I(9)]));
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(10));
    // The string value: pieces of 10, 10 and 5 bytes.
    let chunks: Vec<&Bytes> = ev
        .iter()
        .filter_map(|e| match e {
            Event::StringChunk(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(
        chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
        [10, 10, 5]
    );
    // Hash with a long field and a long value: field pieces, then value pieces, then the item.
    let start = ev
        .iter()
        .position(|e| matches!(e, Event::KeyStart { type_id: 4, .. }))
        .unwrap();
    let slots: Vec<Slot> = ev[start + 1..start + 5]
        .iter()
        .map(|e| match e {
            Event::ElementChunk { slot, .. } => *slot,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(slots, [Slot::Field, Slot::Field, Slot::Value, Slot::Value]);
    assert_eq!(
        ev[start + 5],
        Event::HashField {
            field: Bytes::copy_from_slice(&long[20..]),
            value: Bytes::copy_from_slice(&long[20..]),
            expire_ms: None
        }
    );
    let st = logical(&ev);
    let long = Bytes::from(long);
    let get = |k: &str| {
        st.keys
            .iter()
            .find(|r| r.key == k.as_bytes())
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(get("str"), Value::String(long.clone()));
    assert_eq!(get("list"), Value::List(vec![long.clone(), b("short")]));
    assert_eq!(
        get("hash"),
        Value::Hash(vec![
            (long.clone(), long.clone(), None),
            (b("f"), long.clone(), None)
        ])
    );
    assert_eq!(get("zset"), Value::ZSet(vec![(long.clone(), 2.0)]));
    assert_eq!(get("ql2"), Value::List(vec![long, b("p"), b("9")]));
    // Raw bytes cover the whole value even when it came in pieces.
    let raws: Vec<&Bytes> = ev
        .iter()
        .filter_map(|e| match e {
            Event::KeyEnd { raw } => raw.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(raws.len(), 5);
    assert_eq!(raws[0][0], 0);
    assert_eq!(raws[0].len(), 1 + 1 + 25);
}

#[test]
fn lzf_strings_are_decompressed_and_bounded() {
    // "aaaaaa" compressed; and as a value longer than max_chunk it is reported in pieces.
    let mut w = W::redis(9);
    w.key(0, b"k")
        .b(&[0xc3, 0x04, 0x06, 0x00, b'a', 0x60, 0x00]);
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(4));
    assert!(ev.contains(&Event::StringChunk(b("aaaa"))));
    assert!(ev.contains(&Event::StringChunk(b("aa"))));
    // Longer than max_chunk, it is decompressed in pieces: max_lzf (the bound on what is held
    // whole) does not apply.
    let small = ParserConfig {
        max_lzf: 5,
        ..cfg(4)
    };
    assert!(parse(&data, small).is_ok());
    // Within max_chunk it is held whole, and bounded.
    let small = ParserConfig {
        max_lzf: 5,
        ..cfg(16)
    };
    match parse(&data, small) {
        Err(RdbError::LimitExceeded {
            size,
            limit,
            offset,
            ..
        }) => {
            assert_eq!((size, limit), (6, 5));
            assert_eq!(offset, 9 + 1 + 2);
        }
        other => panic!("{other:?}"),
    }
    // Corrupt, streamed: a back reference before the start, and a declared length too long.
    for (body, what) in [
        (&[0xc3, 0x02, 0x06, 0x20, 0x00][..], "before the start"),
        (
            &[0xc3, 0x04, 0x07, 0x00, b'a', 0x60, 0x00][..],
            "declares 7",
        ),
    ] {
        let mut w = W::redis(9);
        w.key(0, b"k").b(body);
        match parse(&w.end(true), cfg(4)) {
            Err(RdbError::Corrupt { what: w, offset }) => {
                assert!(w.contains(what), "{w}");
                // The compressed bytes start after the magic, type, key and LZF header.
                assert_eq!(offset, 9 + 1 + 2 + 3);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn hashes_with_field_ttls_in_every_form() {
    // Redis 7.4 RC forms: type 22 (absolute TTL as a length) and 23 (listpack triples).
    let mut w = W::redis(12);
    w.key(22, b"h22")
        .len(2)
        .len(0)
        .s(b"a")
        .s(b"1")
        .len(4_102_444_800_000)
        .s(b"b")
        .s(b"2");
    w.key(23, b"h23").s(&lp_encode(&[
        LpIn::S(b"x"),
        LpIn::S(b"1"),
        LpIn::I(0),
        LpIn::S(b"y"),
        LpIn::S(b"2"),
        LpIn::I(4_102_444_800_123),
    ]));
    // Type 24: minExpire, then TTL relative to it plus one.
    w.key(24, b"h24")
        .b(&4_102_444_800_000u64.to_le_bytes())
        .len(2)
        .len(1)
        .s(b"m")
        .s(b"v")
        .len(0)
        .s(b"n")
        .s(b"w");
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(64));
    let st = logical(&ev);
    assert_eq!(
        st.keys[0].value,
        Value::Hash(vec![
            (b("a"), b("1"), None),
            (b("b"), b("2"), Some(4_102_444_800_000))
        ])
    );
    assert_eq!(
        st.keys[1].value,
        Value::Hash(vec![
            (b("x"), b("1"), None),
            (b("y"), b("2"), Some(4_102_444_800_123))
        ])
    );
    assert_eq!(
        st.keys[2].value,
        Value::Hash(vec![
            (b("m"), b("v"), Some(4_102_444_800_000)),
            (b("n"), b("w"), None)
        ])
    );
    let j = st.keys_json();
    assert_eq!(
        j[2]["field_expire_ms"],
        serde_json::json!([["m", 4_102_444_800_000i64]])
    );
    // A field expiry out of range is corrupt.
    let mut w = W::redis(12);
    w.key(22, b"h").len(1).len(1 << 50).s(b"a").s(b"1");
    assert!(matches!(
        parse(&w.end(true), cfg(64)),
        Err(RdbError::Corrupt { .. })
    ));
}

#[test]
fn valkey_9_magic_hash_2_and_slot_import() {
    let mut w = W::valkey();
    w.b(b"\xfa").s(b"valkey-ver").s(b"9.0.0");
    w.b(b"\xf3")
        .s(&[b'n'; 40])
        .len(2)
        .len(0)
        .len(100)
        .len(200)
        .len(16383);
    w.b(b"\xfe").len(0);
    w.key(22, b"h")
        .len(2)
        .s(b"a")
        .s(b"1")
        .b(&(-1i64).to_le_bytes())
        .s(b"b")
        .s(b"2")
        .b(&4_102_444_800_000i64.to_le_bytes());
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(64));
    assert_eq!(
        ev[0],
        Event::Header {
            magic: Magic::Valkey,
            version: 80
        }
    );
    assert!(ev.contains(&Event::SlotImport {
        job_name: Bytes::from(vec![b'n'; 40]),
        ranges: vec![(0, 100), (200, 16383)]
    }));
    assert_eq!(
        logical(&ev).keys[0].value,
        Value::Hash(vec![
            (b("a"), b("1"), None),
            (b("b"), b("2"), Some(4_102_444_800_000))
        ])
    );
    // Types 23-25 are Redis-only: foreign to a Valkey file.
    let mut w = W::valkey();
    w.key(25, b"h");
    match parse(&w.end(true), cfg(64)) {
        Err(RdbError::UnknownType { type_id, offset }) => assert_eq!((type_id, offset), (25, 9)),
        other => panic!("{other:?}"),
    }
    // And 0xF3 is not an opcode Redis files may use here.
    let mut w = W::redis(12);
    w.b(b"\xf3");
    assert!(matches!(
        parse(&w.end(true), cfg(64)),
        Err(RdbError::UnknownOpcode {
            opcode: 0xf3,
            offset: 9
        })
    ));
}

#[test]
fn module_values_and_module_aux_are_walked_and_reported() {
    // Module id: name "mymodule1" (9 chars from the charset), encver 3.
    const CSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id = b"mymodule1".iter().fold(0u64, |acc, c| {
        (acc << 6) | CSET.iter().position(|x| x == c).unwrap() as u64
    });
    let id = (id << 10) | 3;
    let long = vec![b'z'; 50];
    let mut w = W::redis(9);
    w.b(b"\xf7").len(id).len(2).len(1);
    w.len(2).len(77).len(5).s(b"aux").len(0);
    w.key(7, b"mod").len(id);
    w.len(1).len(5); // SINT
    w.len(2).len(1 << 40); // UINT
    w.len(3).b(&1.5f32.to_le_bytes()); // FLOAT
    w.len(4).b(&2.5f64.to_le_bytes()); // DOUBLE
    w.len(5).s(&long); // STRING, longer than max_chunk: skipped piecewise
    w.len(5).b(&[0xc3, 0x04, 0x06, 0x00, b'a', 0x60, 0x00]); // LZF STRING
    w.len(5).b(&[0xc1, 0x01, 0x02]); // INT STRING
    w.len(0); // EOF
    w.key(0, b"after").s(b"x");
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(16));
    assert!(ev.contains(&Event::ModuleAux {
        module_id: id,
        module_name: "mymodule1".into(),
        when: 1
    }));
    assert!(ev.contains(&Event::Module {
        module_id: id,
        module_name: "mymodule1".into(),
        encver: 3
    }));
    let st = logical(&ev);
    assert_eq!(
        st.keys[1].value,
        Value::Module {
            module_type: "mymodule1".into()
        }
    );
    assert_eq!(st.keys_json()[1]["module_type"], "mymodule1");
    assert_eq!(st.keys_json()[1]["value"], serde_json::Value::Null);
    assert_eq!(st.keys[0].value, Value::String(b("x")));
    // The raw value spans the whole opcode walk.
    let raw = ev
        .iter()
        .find_map(|e| match e {
            Event::KeyEnd { raw: Some(r) } if r[0] == 7 => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let start = data.windows(4).position(|w| w == b"\x03mod").unwrap() + 4;
    let end = data
        .windows(8)
        .position(|w| w == b"\x00\x00\x05after")
        .unwrap()
        + 1;
    assert_eq!(&raw[1..], &data[start..end]);
    // Unknown module opcode; bad MODULE_AUX header; pre-GA module type.
    let mut w = W::redis(9);
    w.key(7, b"m").len(id).len(9);
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { .. })
    ));
    let mut w = W::redis(9);
    w.b(b"\xf7").len(id).len(1).len(1);
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { .. })
    ));
    let mut w = W::redis(9);
    w.key(6, b"m");
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Unsupported { offset: 9, .. })
    ));
}

/// A stream node: master entry with fields `f`, then entries `(ms delta, value)` using the
/// master fields, one of them deleted.
fn stream_node() -> Vec<u8> {
    lp_encode(&[
        LpIn::I(2),
        LpIn::I(1),
        LpIn::I(1),
        LpIn::S(b"f"),
        LpIn::I(0),
        LpIn::I(2),
        LpIn::I(0),
        LpIn::I(0),
        LpIn::S(b"v1"),
        LpIn::I(4),
        LpIn::I(3),
        LpIn::I(0),
        LpIn::I(1),
        LpIn::S(b"gone"),
        LpIn::I(4),
        LpIn::I(2),
        LpIn::I(5),
        LpIn::I(0),
        LpIn::S(b"v3"),
        LpIn::I(4),
    ])
}

#[test]
fn streams_v1_with_groups_and_derived_counters() {
    let master = StreamId { ms: 100, seq: 0 };
    let mut w = W::redis(9);
    w.key(15, b"s")
        .len(1)
        .s(&master.to_be_bytes())
        .s(&stream_node());
    w.len(2).len(105).len(0); // length, last id
    w.len(2); // groups
              // Group "g1" at the first entry, one pending entry owned by "alice".
    w.s(b"g1").len(100).len(0).len(1);
    w.b(&StreamId { ms: 100, seq: 0 }.to_be_bytes())
        .b(&7u64.to_le_bytes())
        .len(2);
    w.len(2).s(b"bob").b(&1u64.to_le_bytes()).len(0);
    w.s(b"alice")
        .b(&1u64.to_le_bytes())
        .len(1)
        .b(&StreamId { ms: 100, seq: 0 }.to_be_bytes());
    // Group "g0" in the middle: entries_read unknown.
    w.s(b"g0").len(102).len(0).len(0).len(0);
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(16));
    assert!(ev.contains(&Event::StreamMeta {
        length: 2,
        last_id: StreamId { ms: 105, seq: 0 },
        first_id: None,
        max_deleted_id: None,
        entries_added: None
    }));
    let st = logical(&ev);
    let Value::Stream(s) = &st.keys[0].value else {
        panic!()
    };
    assert_eq!(
        s.entries,
        vec![
            (StreamId { ms: 100, seq: 0 }, vec![(b("f"), b("v1"))]),
            (StreamId { ms: 105, seq: 0 }, vec![(b("f"), b("v3"))])
        ]
    );
    assert_eq!(s.entries_added, 2);
    assert_eq!(s.groups.len(), 2);
    assert_eq!(s.groups[0].name, b("g0"));
    assert_eq!(s.groups[0].entries_read, None);
    assert_eq!(s.groups[1].entries_read, Some(1));
    assert_eq!(
        s.groups[1].pending,
        vec![(StreamId { ms: 100, seq: 0 }, b("alice"), 2)]
    );
    assert_eq!(s.groups[1].consumers, vec![b("alice"), b("bob")]);
    let j = st.keys_json();
    assert_eq!(
        j[0]["value"]["groups"][1]["pending"],
        serde_json::json!([["100-0", "alice", 2]])
    );
    assert_eq!(j[0]["value"]["max_deleted_id"], "0-0");
}

#[test]
fn streams_v3_consumers_have_active_times() {
    let master = StreamId { ms: 100, seq: 0 };
    let mut w = W::redis(11);
    w.key(21, b"s")
        .len(1)
        .s(&master.to_be_bytes())
        .s(&stream_node());
    w.len(2)
        .len(105)
        .len(0)
        .len(100)
        .len(0)
        .len(103)
        .len(0)
        .len(3);
    w.len(1).s(b"g").len(105).len(0).len(u64::MAX).len(0);
    w.len(1)
        .s(b"c")
        .b(&5u64.to_le_bytes())
        .b(&6u64.to_le_bytes())
        .len(0);
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(16));
    assert!(ev.contains(&Event::StreamGroup {
        name: b("g"),
        last_id: StreamId { ms: 105, seq: 0 },
        entries_read: None,
        pending: 0
    }));
    assert!(ev.contains(&Event::StreamConsumer {
        name: b("c"),
        seen_time_ms: 5,
        active_time_ms: Some(6),
        pending: 0
    }));
    // A node id that is not 16 bytes.
    let mut w = W::redis(11);
    w.key(21, b"s").len(1).s(b"short").s(&stream_node());
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { .. })
    ));
}

#[test]
fn header_errors() {
    for (data, want) in [
        (&b"RIDIS0009"[..], "bad"),
        (b"REDIS00x9", "bad"),
        (b"VALKEY0x0", "bad"),
        (b"REDIS0013", "version"),
        (b"REDIS0000", "version"),
        (b"VALKEY081", "version"),
        (b"GET / HTTP/1.1", "bad"),
    ] {
        let r = parse(data, cfg(16));
        match (want, r) {
            ("bad", Err(RdbError::BadMagic { .. })) => {}
            ("version", Err(RdbError::UnsupportedVersion { .. })) => {}
            (_, other) => panic!("{:?}: {other:?}", String::from_utf8_lossy(data)),
        }
    }
    // A wrong prefix fails before 9 bytes arrive.
    let mut p = Parser::new(cfg(16));
    assert!(matches!(
        p.feed(b"HT", &mut Vec::new()),
        Err(RdbError::BadMagic { .. })
    ));
    // Regression (found by fuzzing): a short file with a bad magic gives the same error at every
    // split, not a truncation when its first piece happened to look right.
    let short = b"REDXS00";
    for cut in 0..=short.len() {
        let mut p = Parser::new(cfg(16));
        let mut ev = Vec::new();
        let r = p
            .feed(&short[..cut], &mut ev)
            .and_then(|_| p.feed(&short[cut..], &mut ev))
            .and_then(|_| p.finish());
        assert!(
            matches!(r, Err(RdbError::BadMagic { .. })),
            "cut {cut}: {r:?}"
        );
    }
    // A right prefix waits.
    let mut p = Parser::new(cfg(16));
    p.feed(b"VALK", &mut Vec::new()).unwrap();
    match p.finish() {
        Err(RdbError::Truncated {
            offset: 0,
            expected,
        }) => assert!(expected.contains("magic")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_the_offset_of_the_bad_item() {
    // Unknown type after a key.
    let mut w = W::redis(9);
    w.key(0, b"k").s(b"v");
    w.b(&[8]);
    match parse(&w.end(true), cfg(16)) {
        Err(RdbError::UnknownType { type_id: 8, offset }) => assert_eq!(offset, 9 + 5),
        other => panic!("{other:?}"),
    }
    // A pre-GA function whose name is not a string.
    let mut w = W::redis(10);
    w.b(b"\xf6");
    let err = parse(&w.end(true), cfg(16)).unwrap_err();
    assert_eq!(err.offset(), Some(10), "{err}");
    // A NaN score.
    let mut w = W::redis(9);
    w.key(5, b"z").len(1).s(b"m").b(&f64::NAN.to_le_bytes());
    match parse(&w.end(true), cfg(16)) {
        Err(RdbError::Corrupt { offset, what }) => {
            assert_eq!(offset, 9 + 3 + 1 + 2, "{what}")
        }
        other => panic!("{other:?}"),
    }
    let mut w = W::redis(9);
    w.key(3, b"z").len(1).s(b"m").b(&[253]);
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { .. })
    ));
    // A corrupt listpack names its blob's offset.
    let mut w = W::redis(9);
    w.key(16, b"h").s(b"\x07\x00\x00\x00\x02\x00\xff");
    match parse(&w.end(true), cfg(16)) {
        Err(RdbError::Corrupt { offset, what }) => {
            assert_eq!(offset, 9 + 3, "{what}");
            assert!(what.contains("hash listpack (type 16)"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    // Quicklist container 3.
    let mut w = W::redis(9);
    w.key(18, b"l").len(1).len(3);
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { offset: 13, .. })
    ));
    // A length where a string encoding byte is.
    let mut w = W::redis(9);
    w.key(1, b"l").b(&[0xc0]);
    assert!(matches!(
        parse(&w.end(true), cfg(16)),
        Err(RdbError::Corrupt { offset: 12, .. })
    ));
    // After an error the parser stays failed.
    let mut p = Parser::new(cfg(16));
    let mut w = W::redis(9);
    w.b(&[8]);
    let data = w.end(true);
    let e = p.feed(&data, &mut Vec::new()).unwrap_err();
    assert_eq!(p.feed(b"more", &mut Vec::new()).unwrap_err(), e);
    assert_eq!(p.finish().unwrap_err(), e);
}

#[test]
fn forged_sizes_neither_allocate_nor_wait_forever() {
    // A key claiming 1 TiB: refused at once.
    let mut w = W::redis(9);
    w.b(&[0]).len(1 << 40);
    match parse(&w.end(false), cfg(16)) {
        Err(RdbError::LimitExceeded { size, offset, .. }) => {
            assert_eq!((size, offset), (1 << 40, 10))
        }
        other => panic!("{other:?}"),
    }
    // A string value claiming 1 TiB, a list claiming 2^62 elements: streamed until the input
    // ends, then a truncation naming the key.
    for w in [
        W::redis(9).key(0, b"big").len(1 << 40).b(b"abc").0.clone(),
        W::redis(9)
            .key(1, b"big")
            .len(1 << 62)
            .s(b"a")
            .s(b"b")
            .0
            .clone(),
    ] {
        let mut p = Parser::new(cfg(16));
        let mut ev = Vec::new();
        p.feed(&w, &mut ev).unwrap();
        assert!(p.buffered() < 64);
        match p.finish() {
            Err(RdbError::Truncated { expected, .. }) => {
                assert!(expected.contains("\"big\""), "{expected}")
            }
            other => panic!("{other:?}"),
        }
    }
    // An encoded container claiming 1 GiB: over max_blob, refused at once.
    let data = W::redis(9).key(11, b"big").len(1 << 30).0.clone();
    match parse(&data, cfg(16)) {
        Err(RdbError::LimitExceeded {
            what, size, offset, ..
        }) => {
            assert_eq!((size, offset), (1 << 30, 14));
            assert!(what.contains("intset"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_stays_bounded_on_large_values() {
    // A 24 MB string and a list of 200k elements, fed in 64 KiB blocks: the parser never holds
    // more than a block plus one piece.
    let c = ParserConfig {
        max_chunk: 64 << 10,
        max_raw_value: 1 << 20,
        ..ParserConfig::default()
    };
    let big = vec![b'x'; 24 << 20];
    let mut w = W::redis(9);
    w.key(0, b"bigstring").s(&big);
    w.key(1, b"biglist").len(200_000);
    for i in 0..200_000u32 {
        w.s(format!("element-{i}").as_bytes());
    }
    let data = w.end(true);
    let mut p = Parser::new(c);
    let mut ev = Vec::new();
    let (mut bytes, mut items, mut max_buffered) = (0usize, 0usize, 0usize);
    let mut raws = Vec::new();
    for block in data.chunks(64 << 10) {
        ev.clear();
        p.feed(block, &mut ev).unwrap();
        max_buffered = max_buffered.max(p.buffered());
        for e in &ev {
            match e {
                Event::StringChunk(c) => {
                    assert!(c.len() <= 64 << 10);
                    bytes += c.len();
                }
                Event::ListItem(_) => items += 1,
                Event::KeyEnd { raw } => raws.push(raw.is_some()),
                _ => {}
            }
        }
    }
    p.finish().unwrap();
    assert_eq!(bytes, big.len());
    assert_eq!(items, 200_000);
    assert!(max_buffered <= 64 << 10, "{max_buffered}");
    // Both values are over max_raw_value: no raw bytes kept.
    assert_eq!(raws, [false, false]);
}

#[test]
fn empty_collections_are_left_out_of_the_logical_state() {
    let mut w = W::redis(9);
    w.key(1, b"l").len(0);
    w.key(2, b"s").len(0);
    w.key(16, b"h").s(&lp_encode(&[]));
    w.key(0, b"e").s(b"");
    let data = w.end(true);
    let ev = parse_everywhere(&data, cfg(16));
    let st = logical(&ev);
    assert_eq!(st.keys.len(), 1);
    assert_eq!(st.keys[0].value, Value::String(Bytes::new()));
    assert!(ev.contains(&Event::StringChunk(Bytes::new())));
}

#[test]
fn expired_keys_and_fields_are_left_out_after_a_cutoff() {
    let mut w = W::redis(12);
    w.b(b"\xfc").b(&1000i64.to_le_bytes());
    w.key(0, b"old").s(b"v");
    w.b(b"\xfc").b(&3000i64.to_le_bytes());
    w.key(0, b"new").s(b"v");
    w.key(22, b"h")
        .len(2)
        .len(1000)
        .s(b"a")
        .s(b"1")
        .len(3000)
        .s(b"b")
        .s(b"2");
    w.key(22, b"gone").len(1).len(1000).s(b"a").s(b"1");
    let data = w.end(true);
    let ev = parse(&data, cfg(16)).unwrap();
    let st = LogicalState::from_events(&ev, 2000);
    let names: Vec<&[u8]> = st.keys.iter().map(|k| &k.key[..]).collect();
    assert_eq!(names, [&b"h"[..], b"new"]);
    assert_eq!(
        st.keys[0].value,
        Value::Hash(vec![(b("b"), b("2"), Some(3000))])
    );
    assert_eq!(LogicalState::from_events(&ev, 0).keys.len(), 4);
}

#[test]
fn the_parser_reports_its_position() {
    let mut w = W::redis(9);
    w.key(0, b"k").s(b"value");
    let data = w.end(true);
    let mut p = Parser::new(cfg(16));
    let mut ev = Vec::new();
    p.feed(&data[..12], &mut ev).unwrap();
    assert_eq!(p.offset(), 9);
    assert_eq!(p.buffered(), 3);
    p.feed(&data[12..], &mut ev).unwrap();
    assert_eq!(p.offset(), data.len() as u64);
    assert!(p.is_done());
    assert_eq!(p.version(), 9);
    assert_eq!(p.magic(), Magic::Redis);
    assert_eq!(p.finish().unwrap().bytes, data.len() as u64);
}

/// Counting only (`LzfStrings::Skip`) gives the summary a full parse gives, on every fixture.
#[test]
fn counting_only_gives_the_same_summary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("redis-assets")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rdb"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut checked = 0;
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let run = |skip: bool| {
            let mut parser = Parser::new(ParserConfig::default());
            if skip {
                parser.set_lzf_strings(crate::rdb::LzfStrings::Skip);
            }
            let mut events = Vec::new();
            if skip {
                // By value, in pieces of 1 to 300 bytes: held items are completed, the rest of
                // each piece is parsed in place.
                let all = Bytes::from(data.clone());
                let (mut at, mut n) = (0, 1);
                while at < all.len() {
                    let e = (at + n).min(all.len());
                    parser.feed_bytes(all.slice(at..e), &mut events)?;
                    at = e;
                    n = n % 300 + 37;
                }
            } else {
                for piece in data.chunks(7) {
                    parser.feed(piece, &mut events)?;
                }
            }
            let keys = events
                .iter()
                .filter(|e| matches!(e, Event::KeyStart { .. }))
                .count();
            parser.finish().map(|s| (s, keys))
        };
        let Ok((full, starts)) = run(false) else {
            continue; // A fixture this parser refuses (a module type, say): covered elsewhere.
        };
        let (counted, none) = run(true).unwrap();
        assert_eq!(counted, full, "{}", p.display());
        assert_eq!((starts as u64, none), (full.keys, 0), "{}", p.display());
        checked += 1;
    }
    assert!(checked >= 5, "{checked}");
}

/// The function format of Redis 7.0 release candidates 1 and 2 (opcode 0xf6), which 7.0.x
/// still loads: name, engine, description flag and description, code. It comes out as the
/// library source the server makes of it (rdb.c `rdbFunctionLoad`), beside a FUNCTION2 one.
#[test]
fn pre_ga_function_libraries_are_read() {
    let code = "redis.register_function('f', function() return 1 end)";
    let data = W::redis(10)
        .b(&[0xf6])
        .s(b"old")
        .s(b"LUA")
        .len(1)
        .s(b"a description")
        .s(code.as_bytes())
        .b(&[0xf6])
        .s(b"nodesc")
        .s(b"LUA")
        .len(0)
        .s(code.as_bytes())
        .b(&[0xf5])
        .s(format!("#!lua name=new\n{code}").as_bytes())
        .b(&[0xfe])
        .len(0)
        .key(0, b"k")
        .s(b"v")
        .end(true);
    let events = parse_everywhere(&data, cfg(1 << 20));
    let functions: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Function { code } => Some(String::from_utf8_lossy(code).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        functions,
        [
            format!("#!LUA name=old\n{code}"),
            format!("#!LUA name=nodesc\n{code}"),
            format!("#!lua name=new\n{code}"),
        ]
    );
    let state = logical(&events);
    let names: Vec<&[u8]> = state.functions.iter().map(|f| f.name.as_ref()).collect();
    assert_eq!(names, [&b"new"[..], b"nodesc", b"old"]);
    assert_eq!(state.keys.len(), 1);
    // Cut short inside the code: more input is needed, not an error.
    let mut p = Parser::new(cfg(1 << 20));
    let mut ev = Vec::new();
    p.feed(&data[..20], &mut ev).unwrap();
    assert!(p.finish().is_err());
}
