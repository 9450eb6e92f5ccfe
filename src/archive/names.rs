//! Positions and names as types: replication ids, generation ids and the names of archived
//! objects. Every name has a `Display` and a `FromStr` that round-trip, so that a listing of the
//! store alone is enough to plan a restore (see `docs/format.md`).
//!
//! Object names, relative to the archive's `<name>/` prefix. Format version 2:
//!
//! ```text
//! <gen:010>/snapshots/<offset:020>-<time_ms:013>-<replid>.snapshot
//! <gen:010>/L<k>/<partition>/<start:020>-<end:020>-<first_ms:013>-<last_ms:013>-<replid>.segment
//! ```
//!
//! where the partition is `first_ms` in UTC, truncated by level ([`partition`]). Version 1
//! (read only):
//!
//! ```text
//! <gen:010>/<start:020>-<end:020>-<first_ms:013>-<last_ms:013>-<replid>.segment
//! <gen:010>/<offset:020>-<offset:020>-<time_ms:013>-<time_ms:013>-<replid>.snapshot
//! ```
//!
//! In version 1 a snapshot is named like an empty range at its offset, so within a generation
//! plain byte order of the names is offset order, with the snapshot before the segment that
//! follows it.

use std::fmt;
use std::str::FromStr;

/// A parse failure of a name, with the text that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {text:?}")]
pub struct NameError {
    pub what: &'static str,
    pub text: String,
}

fn err(what: &'static str, text: &str) -> NameError {
    NameError {
        what,
        text: text.to_string(),
    }
}

/// A replication id: 40 lower-case hex characters, as the master sends it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplId([u8; 40]);

impl ReplId {
    pub fn as_str(&self) -> &str {
        // Only ever built from validated ASCII hex.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8; 40] {
        &self.0
    }

    pub fn from_bytes(b: &[u8]) -> Result<ReplId, NameError> {
        let text = String::from_utf8_lossy(b);
        if b.len() != 40 || !b.iter().all(|c| c.is_ascii_hexdigit()) {
            return Err(err("replication id", &text));
        }
        let mut id = [0u8; 40];
        for (d, s) in id.iter_mut().zip(b) {
            *d = s.to_ascii_lowercase();
        }
        Ok(ReplId(id))
    }
}

impl fmt::Display for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplId({})", self.as_str())
    }
}

impl FromStr for ReplId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<ReplId, NameError> {
        ReplId::from_bytes(s.as_bytes())
    }
}

/// One unbroken history: a base snapshot and the contiguous stream after it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct GenerationId(pub u64);

/// There is no generation after [`GenerationId::MAX`]: its successor would not fit the
/// 10 digits of an object name, and every reader would take its objects for foreign ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("generation {0} is the last id that object names allow (10 digits), so no generation can follow it: move the objects of generation {0} out of the archive (run pitr verify), or archive under another --name")]
pub struct GenerationsExhausted(pub GenerationId);

impl GenerationId {
    /// The largest id a name can hold (10 digits).
    pub const MAX: GenerationId = GenerationId(9_999_999_999);

    /// The id of the generation after this one, if the name format can hold it.
    pub fn next(self) -> Result<GenerationId, GenerationsExhausted> {
        if self >= GenerationId::MAX {
            return Err(GenerationsExhausted(self));
        }
        Ok(GenerationId(self.0 + 1))
    }

    /// Whether this id fits the 10 digits of an object name.
    pub fn fits(self) -> bool {
        self <= GenerationId::MAX
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

impl FromStr for GenerationId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<GenerationId, NameError> {
        if s.len() != 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err("generation id", s));
        }
        s.parse()
            .map(GenerationId)
            .map_err(|_| err("generation id", s))
    }
}

/// What an archived object holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Snapshot,
    Segment,
}

impl ObjectKind {
    fn extension(self) -> &'static str {
        match self {
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Segment => "segment",
        }
    }
}

/// The name of one archived object, relative to the archive prefix. For a snapshot,
/// `start == end` (its offset) and `first_ms == last_ms` (the arrival of `+FULLRESYNC`).
/// For a segment, `[start, end)` is the range of replication offsets it holds: `start` is the
/// master's `master_repl_offset` before its first byte, `end` after its last.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ObjectName {
    pub kind: ObjectKind,
    pub generation: GenerationId,
    pub start: u64,
    pub end: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub replid: ReplId,
    /// The format version the name is written in (1 or 2); the object's bytes are in the same.
    pub version: u16,
    /// The level of a version 2 segment (0 = as archived, 1.. = compacted); 0 otherwise.
    pub level: u8,
}

/// The highest level a name can carry.
pub const MAX_LEVEL: u8 = 9;

/// The partition of a version 2 segment of `level` whose first byte arrived at `first_ms`:
/// that time in UTC truncated to the hour at level 0, the day at level 1, the month at level
/// 2 and the year above, so that each partition holds a listing page or a few of objects at
/// the default levels. Times past year 9999 are written as 9999.
pub fn partition(level: u8, first_ms: u64) -> String {
    let t = jiff::Timestamp::from_millisecond(first_ms.min(i64::MAX as u64) as i64)
        .unwrap_or(jiff::Timestamp::MAX);
    let d = t.to_zoned(jiff::tz::TimeZone::UTC);
    let (y, m, day, h) = (d.year(), d.month(), d.day(), d.hour());
    match level {
        0 => format!("{y:04}-{m:02}-{day:02}T{h:02}"),
        1 => format!("{y:04}-{m:02}-{day:02}"),
        2 => format!("{y:04}-{m:02}"),
        _ => format!("{y:04}"),
    }
}

impl ObjectName {
    pub fn segment(
        generation: GenerationId,
        (start, end): (u64, u64),
        (first_ms, last_ms): (u64, u64),
        replid: ReplId,
    ) -> Self {
        ObjectName {
            kind: ObjectKind::Segment,
            generation,
            start,
            end,
            first_ms,
            last_ms,
            replid,
            version: 1,
            level: 0,
        }
    }

    pub fn snapshot(generation: GenerationId, offset: u64, time_ms: u64, replid: ReplId) -> Self {
        ObjectName {
            kind: ObjectKind::Snapshot,
            generation,
            start: offset,
            end: offset,
            first_ms: time_ms,
            last_ms: time_ms,
            replid,
            version: 1,
            level: 0,
        }
    }

    /// The same object named in format version 2, at `level` (ignored for a snapshot).
    pub fn v2(self, level: u8) -> Self {
        ObjectName {
            version: 2,
            level: match self.kind {
                ObjectKind::Snapshot => 0,
                ObjectKind::Segment => level.min(MAX_LEVEL),
            },
            ..self
        }
    }

    /// Whether every field fits its width in the name, so that the name parses back.
    pub fn fits(&self) -> bool {
        const MAX_MS: u64 = 9_999_999_999_999;
        self.generation.fits()
            && self.first_ms <= MAX_MS
            && self.last_ms <= MAX_MS
            && self.level <= MAX_LEVEL
    }

    /// The sort key that puts a generation's objects in offset order, snapshot first, and
    /// of two objects over the same range the lower level first.
    pub fn sort_key(&self) -> (GenerationId, u64, u64, u8, u8) {
        let kind = match self.kind {
            ObjectKind::Snapshot => 0,
            ObjectKind::Segment => 1,
        };
        (self.generation, self.start, self.end, kind, self.level)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version >= 2 {
            return match self.kind {
                ObjectKind::Snapshot => write!(
                    f,
                    "{}/snapshots/{:020}-{:013}-{}.snapshot",
                    self.generation, self.start, self.first_ms, self.replid
                ),
                ObjectKind::Segment => write!(
                    f,
                    "{}/L{}/{}/{:020}-{:020}-{:013}-{:013}-{}.segment",
                    self.generation,
                    self.level,
                    partition(self.level, self.first_ms),
                    self.start,
                    self.end,
                    self.first_ms,
                    self.last_ms,
                    self.replid
                ),
            };
        }
        write!(
            f,
            "{}/{:020}-{:020}-{:013}-{:013}-{}.{}",
            self.generation,
            self.start,
            self.end,
            self.first_ms,
            self.last_ms,
            self.replid,
            self.kind.extension()
        )
    }
}

impl FromStr for ObjectName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<ObjectName, NameError> {
        let bad = || err("object name", s);
        let (gen, rest) = s.split_once('/').ok_or_else(bad)?;
        let generation: GenerationId = gen.parse().map_err(|_| bad())?;
        if rest.contains('/') {
            return parse_v2(s, generation, rest);
        }
        let (stem, ext) = rest.rsplit_once('.').ok_or_else(bad)?;
        let kind = match ext {
            "snapshot" => ObjectKind::Snapshot,
            "segment" => ObjectKind::Segment,
            _ => return Err(bad()),
        };
        let parts: Vec<&str> = stem.split('-').collect();
        let [start, end, first, last, replid] = parts[..] else {
            return Err(bad());
        };
        let num = |t: &str, width: usize| -> Result<u64, NameError> {
            if t.len() != width || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let name = ObjectName {
            kind,
            generation,
            start: num(start, 20)?,
            end: num(end, 20)?,
            first_ms: num(first, 13)?,
            last_ms: num(last, 13)?,
            replid: replid.parse().map_err(|_| bad())?,
            version: 1,
            level: 0,
        };
        let consistent = match kind {
            ObjectKind::Snapshot => name.start == name.end && name.first_ms == name.last_ms,
            ObjectKind::Segment => name.start < name.end && name.first_ms <= name.last_ms,
        };
        if !consistent {
            return Err(bad());
        }
        Ok(name)
    }
}

/// A fixed-width decimal field of a name.
fn number(t: &str, width: usize) -> Option<u64> {
    if t.len() != width || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// A version 2 name, after its generation: `snapshots/…` or `L<k>/<partition>/…`. The
/// partition must be the one the level and the first arrival time give.
fn parse_v2(s: &str, generation: GenerationId, rest: &str) -> Result<ObjectName, NameError> {
    let bad = || err("object name", s);
    let parts: Vec<&str> = rest.split('/').collect();
    let name = match parts[..] {
        ["snapshots", file] => {
            let stem = file.strip_suffix(".snapshot").ok_or_else(bad)?;
            let [offset, time, replid] = stem.split('-').collect::<Vec<_>>()[..] else {
                return Err(bad());
            };
            let offset = number(offset, 20).ok_or_else(bad)?;
            let time = number(time, 13).ok_or_else(bad)?;
            let replid = replid.parse().map_err(|_| bad())?;
            ObjectName::snapshot(generation, offset, time, replid).v2(0)
        }
        [level, part, file] => {
            let level = level
                .strip_prefix('L')
                .filter(|l| l.len() == 1)
                .and_then(|l| l.parse::<u8>().ok())
                .ok_or_else(bad)?;
            let stem = file.strip_suffix(".segment").ok_or_else(bad)?;
            let [start, end, first, last, replid] = stem.split('-').collect::<Vec<_>>()[..] else {
                return Err(bad());
            };
            let n = |t, w| number(t, w).ok_or_else(bad);
            let name = ObjectName::segment(
                generation,
                (n(start, 20)?, n(end, 20)?),
                (n(first, 13)?, n(last, 13)?),
                replid.parse().map_err(|_| bad())?,
            )
            .v2(level);
            if name.start >= name.end
                || name.first_ms > name.last_ms
                || part != partition(level, name.first_ms)
            {
                return Err(bad());
            }
            name
        }
        _ => return Err(bad()),
    };
    Ok(name)
}

/// An archive name (`--name`): keeps several masters apart in one store.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArchiveName(String);

impl ArchiveName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArchiveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ArchiveName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<ArchiveName, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if ok {
            Ok(ArchiveName(s.to_string()))
        } else {
            Err(err(
                "archive name (letters, digits, '-', '_', '.'; at most 128)",
                s,
            ))
        }
    }
}

/// A replication id of 40 times `c` (a hex digit), for tests.
#[cfg(test)]
pub(crate) fn test_replid(c: char) -> ReplId {
    std::iter::repeat_n(c, 40)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_replid as rid;

    #[test]
    fn segment_name_round_trips() {
        let n = ObjectName::segment(
            GenerationId(3),
            (17, u64::MAX),
            (1_700_000_000_000, 1_700_000_000_999),
            rid('a'),
        );
        let s = n.to_string();
        assert_eq!(
            s,
            "0000000003/00000000000000000017-18446744073709551615-1700000000000-1700000000999-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.segment"
        );
        assert_eq!(s.parse::<ObjectName>().unwrap(), n);
    }

    #[test]
    fn version_2_names_round_trip_with_their_partition() {
        // 2023-11-14T22:13:20Z
        let t = 1_700_000_000_000;
        let seg =
            |level| ObjectName::segment(GenerationId(3), (17, 99), (t, t + 5), rid('a')).v2(level);
        let expect = [
            (0, "L0/2023-11-14T22"),
            (1, "L1/2023-11-14"),
            (2, "L2/2023-11"),
            (3, "L3/2023"),
            (9, "L9/2023"),
        ];
        for (level, dir) in expect {
            let n = seg(level);
            let s = n.to_string();
            assert_eq!(
                s,
                format!("0000000003/{dir}/00000000000000000017-00000000000000000099-1700000000000-1700000000005-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.segment")
            );
            assert_eq!(s.parse::<ObjectName>().unwrap(), n);
        }
        let snap = ObjectName::snapshot(GenerationId(3), 17, t, rid('b')).v2(4);
        assert_eq!(snap.level, 0);
        let s = snap.to_string();
        assert_eq!(
            s,
            "0000000003/snapshots/00000000000000000017-1700000000000-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.snapshot"
        );
        assert_eq!(s.parse::<ObjectName>().unwrap(), snap);
        // Of two objects over one range, the lower level sorts first.
        assert!(seg(0).sort_key() < seg(1).sort_key());
        assert!(ObjectName::segment(GenerationId(1), (1, 2), (t, t), rid('a')).version == 1);
    }

    #[test]
    fn version_2_names_in_the_wrong_place_are_not_names() {
        let good = "0000000003/L1/2023-11-14/00000000000000000017-00000000000000000099-1700000000000-1700000000005-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.segment";
        assert!(good.parse::<ObjectName>().is_ok());
        for bad in [
            // The partition of another day, or of another level's form.
            good.replace("2023-11-14/", "2023-11-15/"),
            good.replace("L1/2023-11-14/", "L1/2023-11-14T22/"),
            good.replace("L1/", "L10/"),
            good.replace("L1/", "X1/"),
            good.replace(".segment", ".snapshot"),
            // A segment under snapshots/, an empty range, a missing partition.
            "0000000003/snapshots/00000000000000000017-1700000000000-aa.snapshot".into(),
            good.replace("00000000000000000099", "00000000000000000017"),
            good.replace("L1/2023-11-14/", "L1/"),
            "0000000003/lease".into(),
            "snapshot-request".into(),
            "0000000003/snapshot-request".into(),
        ] {
            assert!(bad.parse::<ObjectName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_name_round_trips_and_sorts_first() {
        let snap = ObjectName::snapshot(GenerationId(1), 500, 42, rid('b'));
        assert_eq!(snap.to_string().parse::<ObjectName>().unwrap(), snap);
        let seg = ObjectName::segment(GenerationId(1), (500, 501), (43, 43), rid('b'));
        assert!(snap.to_string() < seg.to_string());
        assert!(snap.sort_key() < seg.sort_key());
    }

    #[test]
    fn names_sort_in_offset_order() {
        let mk = |start, end| ObjectName::segment(GenerationId(1), (start, end), (1, 2), rid('c'));
        let a = mk(9, 10).to_string();
        let b = mk(10, 100).to_string();
        let c = mk(100, 1000).to_string();
        assert!(a < b && b < c);
    }

    #[test]
    fn generation_ids_never_overflow_the_name_format() {
        let last = GenerationId(9_999_999_999);
        assert_eq!(GenerationId::MAX, last);
        assert_eq!(GenerationId(9_999_999_998).next(), Ok(last));
        assert_eq!(GenerationId(1).next(), Ok(GenerationId(2)));
        let e = last.next().unwrap_err();
        assert_eq!(e, GenerationsExhausted(last));
        assert!(e.to_string().contains("9999999999"), "{e}");
        assert!(GenerationId(u64::MAX).next().is_err());
        // The last id round-trips; one more digit is not an id.
        assert_eq!("9999999999".parse::<GenerationId>().unwrap(), last);
        assert!("10000000000".parse::<GenerationId>().is_err());
        let n = ObjectName::snapshot(last, 7, 1_700_000_000_000, rid('d'));
        assert!(n.fits());
        assert_eq!(n.to_string().parse::<ObjectName>().unwrap(), n);
        // A name that would not fit is known not to, and does not parse back.
        for n in [
            ObjectName::snapshot(GenerationId(10_000_000_000), 7, 1, rid('d')),
            ObjectName::segment(GenerationId(1), (0, 1), (1, 10_000_000_000_000), rid('d')),
        ] {
            assert!(!n.fits(), "{n}");
            assert!(n.to_string().parse::<ObjectName>().is_err(), "{n}");
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for s in [
            "",
            "x/y",
            "0000000001/1-2-3-4-aaaa.segment",
            "0000000001/00000000000000000017-00000000000000000017-1700000000000-1700000000999-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.segment",
            "0000000001/00000000000000000017-00000000000000000018-1700000000000-1700000000999-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.snapshot",
            "0000000001/00000000000000000017-00000000000000000018-1700000000000-1700000000999-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.tmp",
            "0000000001/00000000000000000017-00000000000000000018-1700000000000-1700000000999-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.segment",
        ] {
            assert!(s.parse::<ObjectName>().is_err(), "{s}");
        }
        assert!("a/b".parse::<ArchiveName>().is_err());
        assert!("".parse::<ArchiveName>().is_err());
        assert!("prod-cache.eu_1".parse::<ArchiveName>().is_ok());
        assert!("12345".parse::<GenerationId>().is_err());
        assert_eq!(
            "0000000012".parse::<GenerationId>().unwrap(),
            GenerationId(12)
        );
    }
}
