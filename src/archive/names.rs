//! Positions and names as types: replication ids, generation ids and the names of archived
//! objects. Every name has a `Display` and a `FromStr` that round-trip, so that a listing of the
//! store alone is enough to plan a restore (see `docs/format.md`).
//!
//! Object names, relative to the archive's `<name>/` prefix:
//!
//! ```text
//! <gen:010>/<start:020>-<end:020>-<first_ms:013>-<last_ms:013>-<replid>.segment
//! <gen:010>/<offset:020>-<offset:020>-<time_ms:013>-<time_ms:013>-<replid>.snapshot
//! ```
//!
//! A snapshot is named like an empty range at its offset, so within a generation plain byte
//! order of the names is offset order, with the snapshot before the segment that follows it.

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
        }
    }

    /// Whether every field fits its width in the name, so that the name parses back.
    pub fn fits(&self) -> bool {
        const MAX_MS: u64 = 9_999_999_999_999;
        self.generation.fits() && self.first_ms <= MAX_MS && self.last_ms <= MAX_MS
    }

    /// The sort key that puts a generation's objects in offset order, snapshot first.
    pub fn sort_key(&self) -> (GenerationId, u64, u64, u8) {
        let kind = match self.kind {
            ObjectKind::Snapshot => 0,
            ObjectKind::Segment => 1,
        };
        (self.generation, self.start, self.end, kind)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
