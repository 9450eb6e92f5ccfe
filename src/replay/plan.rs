//! Restore planning, from a listing alone: which generation holds the requested moment, its
//! latest snapshot at or before it, and the segments up to the cut. Pure: `plan(catalog,
//! target)` is tested on synthetic listings; the executor reads only what the plan names.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::archive::catalog::{Catalog, Generation, SnapshotInfo};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName};

/// What `--to` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every command that arrived at or before this time (unix ms).
    Time(u64),
    /// The newest archived state.
    Latest,
    /// The moment the command started: restorable once the archive reaches it (a running
    /// archiver vouches for it within seconds; see `restore::make_plan`).
    Now,
    /// Every command that ends at or before this replication offset.
    Offset(u64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Time(ms) => write!(f, "{}", fmt_ms(*ms)),
            Target::Latest => f.write_str("latest"),
            Target::Now => f.write_str("now"),
            Target::Offset(o) => write!(f, "offset:{o}"),
        }
    }
}

/// The latest moment a time can name, in unix milliseconds: 9999-12-30T22:00:00Z, the latest
/// whole second jiff's timestamps hold (the last day is kept free so that every offset has a
/// civil time).
pub fn max_time_ms() -> u64 {
    jiff::Timestamp::MAX.as_second().unsigned_abs() * 1000
}

/// RFC 3339 with milliseconds, UTC. Every value prints: one past [`max_time_ms`] (from a
/// damaged object name, say) is shown as plain milliseconds.
pub fn fmt_ms(ms: u64) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
    {
        Some(t) => format!("{t:.3}"),
        None => format!("{ms} ms after 1970 (past the year 9999)"),
    }
}

impl Target {
    /// `now` as the time `now_ms`; any other target as it is.
    pub fn resolved(self, now_ms: u64) -> Target {
        match self {
            Target::Now => Target::Time(now_ms),
            t => t,
        }
    }
}

impl FromStr for Target {
    type Err = String;
    /// `latest`, `now`, `offset:<N>`, unix milliseconds, or an RFC 3339 time with any offset
    /// (`2026-11-24T10:15:30.250Z`, `2026-11-24T11:15:30+01:00`). Times must lie between 1970
    /// and [`max_time_ms`].
    fn from_str(s: &str) -> Result<Target, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(Target::Latest);
        }
        if t.eq_ignore_ascii_case("now") {
            return Ok(Target::Now);
        }
        if let Some(o) = t.strip_prefix("offset:") {
            return o
                .parse()
                .map(Target::Offset)
                .map_err(|_| format!("{s:?}: offset:<N> needs a whole number"));
        }
        let ms = if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse::<u64>().unwrap_or(u64::MAX)
        } else {
            parse_rfc3339(t).map_err(|why| format!("{s:?}: {why}"))?
        };
        if ms > max_time_ms() {
            return Err(format!(
                "{s:?}: too late: the latest time pitr handles is {} ({} ms)",
                fmt_ms(max_time_ms()),
                max_time_ms()
            ));
        }
        Ok(Target::Time(ms))
    }
}

/// Parses an RFC 3339 time (`2026-11-24T10:15:30.250Z`, `2026-11-24T11:15:30+01:00`) into unix
/// milliseconds. The date must exist and the offset must be one RFC 3339 allows (hours up to
/// 23, minutes up to 59); the time must not be before 1970. On error, says what is wrong.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected an RFC 3339 time (2026-11-24T10:15:30.250Z or \
                            2026-11-24T11:15:30+01:00), unix milliseconds, latest, now, or offset:<N>";
    // The parser below also takes ISO 8601 and RFC 9557 forms; keep to RFC 3339's shape: a
    // full date, a time with seconds and an optional fraction, and an offset (Z or ±HH:MM).
    let b = s.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !shaped {
        return Err(EXPECTED.into());
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("no digits after the decimal point: {EXPECTED}"));
        }
        i += digits;
    }
    let tz = &b[i..];
    let numeric = |t: &[u8]| {
        t.len() == 6
            && matches!(t[0], b'+' | b'-')
            && t[3] == b':'
            && [1, 2, 4, 5].iter().all(|&k| t[k].is_ascii_digit())
    };
    if !(tz.eq_ignore_ascii_case(b"z") || numeric(tz)) {
        return Err(format!("the offset must be Z or ±HH:MM: {EXPECTED}"));
    }
    let pieces = jiff::fmt::temporal::Pieces::parse(s).map_err(|e| format!("{e}"))?;
    let offset = match pieces.offset() {
        Some(jiff::fmt::temporal::PiecesOffset::Zulu) => jiff::tz::Offset::UTC,
        Some(jiff::fmt::temporal::PiecesOffset::Numeric(n)) => n.offset(),
        _ => return Err(format!("no offset: {EXPECTED}")),
    };
    if offset.seconds().unsigned_abs() >= 24 * 3600 || offset.seconds() % 60 != 0 {
        return Err(format!(
            "offset {offset} is not a valid RFC 3339 offset (±HH:MM, hours 00 to 23)"
        ));
    }
    let time = pieces
        .time()
        .ok_or_else(|| format!("no time of day: {EXPECTED}"))?;
    let ts = pieces
        .date()
        .to_datetime(time)
        .to_zoned(jiff::tz::TimeZone::fixed(offset))
        .map_err(|e| format!("{e}"))?
        .timestamp();
    u64::try_from(ts.as_millisecond()).map_err(|_| "before 1970".to_string())
}

/// A point the archive can restore to.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    #[serde(serialize_with = "ser_gen")]
    pub generation: GenerationId,
    pub offset: u64,
    pub time_ms: u64,
}

fn ser_gen<S: serde::Serializer>(g: &GenerationId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(g)
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (offset {}, generation {})",
            fmt_ms(self.time_ms),
            self.offset,
            self.generation
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the archive is empty")]
    Empty,
    #[error("{target} is outside every restorable window; nearest restorable points: {} (`--to latest` restores the newest archived state)", points(.nearest))]
    Outside { target: String, nearest: Vec<Point> },
    #[error("{target} falls in a gap between generations {after} and {before} (writes there were not archived); nearest restorable points: {}", points(.nearest))]
    InGap {
        target: String,
        after: GenerationId,
        before: GenerationId,
        nearest: Vec<Point>,
    },
    #[error("generation {generation} has no snapshot at or before {target}")]
    NoSnapshot {
        target: String,
        generation: GenerationId,
    },
    #[error("generation {generation} is missing offsets {from}..{to}, which {target} needs (run pitr verify)")]
    Hole {
        target: String,
        generation: GenerationId,
        from: u64,
        to: u64,
    },
    /// An object that starts inside what the objects before it already hold: two chains in
    /// one generation (two archivers, say), not a missing range.
    #[error("generation {generation}: object {object} starts at offset {start}, inside offsets the objects before it hold (up to {held}), which {target} needs: the generation holds more than one chain (run pitr verify)")]
    Overlap {
        target: String,
        generation: GenerationId,
        object: String,
        start: u64,
        held: u64,
    },
}

fn points(p: &[Point]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What to read, and where to stop.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    #[serde(serialize_with = "ser_gen")]
    pub generation: GenerationId,
    pub snapshot: PlannedObject,
    pub segments: Vec<PlannedObject>,
    /// Stop after the last command that arrived at or before this time (`None`: no limit).
    pub cut_time_ms: Option<u64>,
    /// Stop after the last command that ends at or before this offset (`None`: no limit).
    pub cut_offset: Option<u64>,
    /// Stored bytes to read.
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedObject {
    pub name: String,
    pub offset: u64,
    pub end: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes: u64,
    #[serde(skip)]
    pub object: ObjectName,
}

fn planned(o: &crate::archive::store::Listed) -> PlannedObject {
    PlannedObject {
        name: o.name.to_string(),
        offset: o.name.start,
        end: o.name.end,
        first_ms: o.name.first_ms,
        last_ms: o.name.last_ms,
        bytes: o.size,
        object: o.name,
    }
}

fn window_points(g: &Generation) -> [Point; 2] {
    [
        Point {
            generation: g.id,
            offset: g.first_offset,
            time_ms: g.first_time_ms,
        },
        Point {
            generation: g.id,
            offset: g.last_offset,
            time_ms: g.last_time_ms,
        },
    ]
}

/// Plans a restore of `target` from `catalog`.
pub fn plan(catalog: &Catalog, target: Target) -> Result<Plan, PlanError> {
    let gens = &catalog.generations;
    if gens.is_empty() {
        return Err(PlanError::Empty);
    }
    let target = target.resolved(crate::ingest::archiver::now_ms());
    let label = target.to_string();
    let (g, cut_time_ms, cut_offset) = match target {
        Target::Now => unreachable!("resolved above"),
        Target::Latest => (gens.last().expect("non-empty"), None, None),
        Target::Time(t) => {
            match gens
                .iter()
                .rev()
                .find(|g| g.first_time_ms <= t && t <= g.last_time_ms)
            {
                Some(g) => (g, Some(t), None),
                None => return Err(outside_time(catalog, t, label)),
            }
        }
        Target::Offset(o) => {
            match gens
                .iter()
                .rev()
                .find(|g| g.first_offset <= o && o <= g.last_offset)
            {
                Some(g) => (g, None, Some(o)),
                None => {
                    let mut nearest: Vec<Point> = gens.iter().flat_map(window_points).collect();
                    nearest.sort_by_key(|p| p.offset.abs_diff(o));
                    nearest.truncate(2);
                    return Err(PlanError::Outside {
                        target: label,
                        nearest,
                    });
                }
            }
        }
    };
    // The latest snapshot at or before the target (and not past what the stream holds: a
    // scheduled snapshot completes before the archived stream reaches its offset, rarely).
    let snap: Option<&SnapshotInfo> = g
        .snapshots
        .iter()
        .filter(|s| s.offset <= g.last_offset)
        .filter(|s| match target {
            Target::Time(t) => s.time_ms <= t,
            Target::Offset(o) => s.offset <= o,
            Target::Latest | Target::Now => true,
        })
        .max_by_key(|s| (s.offset, s.time_ms));
    let Some(snap) = snap else {
        return Err(PlanError::NoSnapshot {
            target: label,
            generation: g.id,
        });
    };
    let snapshot = g
        .objects
        .iter()
        .find(|o| o.name == snap.name)
        .map(planned)
        .expect("the snapshot is one of the generation's objects");
    // The chain from the segment that holds the snapshot's offset (a scheduled snapshot may
    // sit inside one: the replay starts at its offset, in the middle of it), the highest level
    // that covers each range.
    // An object off the chain that is not covered by a higher level (a fork: each problem
    // names it first) stops the plan where it is needed.
    let forked: std::collections::HashSet<&str> = g
        .problems
        .iter()
        .filter_map(|p| p.objects.first().map(String::as_str))
        .collect();
    let mut segments = Vec::new();
    let mut expected = snap.offset;
    let wanted = g.objects.iter().enumerate().filter(|(i, o)| {
        o.name.kind == ObjectKind::Segment
            && o.name.end > snap.offset
            && (g.on_chain(*i) || forked.contains(o.name.to_string().as_str()))
    });
    for (_, o) in wanted {
        let needed = match (cut_time_ms, cut_offset) {
            (Some(t), _) => o.name.first_ms <= t,
            (_, Some(c)) => o.name.start < c,
            _ => true,
        };
        if !needed {
            break;
        }
        if o.name.start > expected || (segments.is_empty() && o.name.start > snap.offset) {
            return Err(PlanError::Hole {
                target: label,
                generation: g.id,
                from: expected,
                to: o.name.start,
            });
        }
        if (o.name.start < expected && !segments.is_empty())
            || forked.contains(o.name.to_string().as_str())
        {
            return Err(PlanError::Overlap {
                target: label,
                generation: g.id,
                object: o.name.to_string(),
                start: o.name.start,
                held: expected,
            });
        }
        expected = o.name.end;
        segments.push(planned(o));
    }
    let bytes = snapshot.bytes + segments.iter().map(|s| s.bytes).sum::<u64>();
    Ok(Plan {
        generation: g.id,
        snapshot,
        segments,
        cut_time_ms,
        cut_offset,
        bytes,
    })
}

fn outside_time(catalog: &Catalog, t: u64, target: String) -> PlanError {
    let gens = &catalog.generations;
    for w in gens.windows(2) {
        if w[0].last_time_ms < t && t < w[1].first_time_ms {
            return PlanError::InGap {
                target,
                after: w[0].id,
                before: w[1].id,
                nearest: vec![
                    window_points(&w[0])[1].clone(),
                    window_points(&w[1])[0].clone(),
                ],
            };
        }
    }
    let mut nearest: Vec<Point> = gens.iter().flat_map(window_points).collect();
    nearest.sort_by_key(|p| p.time_ms.abs_diff(t));
    nearest.truncate(1);
    PlanError::Outside { target, nearest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::store::{Listed, Listing};

    // One replication id throughout.
    fn seg(g: u64, start: u64, end: u64, t0: u64, t1: u64) -> Listed {
        crate::archive::store::test_listing::seg(g, start, end, t0, t1, 'a')
    }

    fn snap(g: u64, off: u64, t: u64) -> Listed {
        crate::archive::store::test_listing::snap(g, off, t, 'a')
    }

    fn catalog() -> Catalog {
        Catalog::from_listing(&Listing {
            objects: vec![
                snap(1, 0, 1000),
                seg(1, 0, 50, 1100, 1200),
                seg(1, 50, 90, 1300, 1400),
                seg(1, 90, 100, 1500, 1600),
                snap(2, 10, 5000),
                seg(2, 10, 20, 5100, 5200),
            ],
            foreign: vec![],
        })
    }

    #[test]
    fn time_inside_a_window_plans_up_to_the_cut() {
        let p = plan(&catalog(), Target::Time(1350)).unwrap();
        assert_eq!(p.generation, GenerationId(1));
        assert_eq!(p.snapshot.offset, 0);
        let ends: Vec<u64> = p.segments.iter().map(|s| s.end).collect();
        assert_eq!(ends, vec![50, 90]);
        assert_eq!(p.cut_time_ms, Some(1350));
        assert_eq!(p.bytes, 120);
        // Exactly at the snapshot: no segment.
        assert!(plan(&catalog(), Target::Time(1000))
            .unwrap()
            .segments
            .is_empty());
    }

    #[test]
    fn latest_and_offsets() {
        let p = plan(&catalog(), Target::Latest).unwrap();
        assert_eq!((p.generation, p.segments.len()), (GenerationId(2), 1));
        let p = plan(&catalog(), Target::Offset(95)).unwrap();
        assert_eq!(p.generation, GenerationId(1));
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.cut_offset, Some(95));
        // Offsets 10..20 exist in both generations: the newest wins.
        assert_eq!(
            plan(&catalog(), Target::Offset(15)).unwrap().generation,
            GenerationId(2)
        );
    }

    #[test]
    fn outside_and_gaps_name_the_nearest_points() {
        match plan(&catalog(), Target::Time(3000)).unwrap_err() {
            PlanError::InGap {
                after,
                before,
                nearest,
                ..
            } => {
                assert_eq!((after, before), (GenerationId(1), GenerationId(2)));
                assert_eq!(nearest[0].time_ms, 1600);
                assert_eq!(nearest[1].time_ms, 5000);
            }
            e => panic!("{e}"),
        }
        let e = plan(&catalog(), Target::Time(10)).unwrap_err();
        assert!(
            e.to_string().contains("outside every restorable window"),
            "{e}"
        );
        assert!(e.to_string().contains("offset 0"), "{e}");
        let e = plan(&catalog(), Target::Offset(500)).unwrap_err();
        assert!(matches!(e, PlanError::Outside { .. }));
        assert_eq!(
            plan(&Catalog::default(), Target::Latest).unwrap_err(),
            PlanError::Empty
        );
    }

    #[test]
    fn a_hole_before_the_cut_is_an_error() {
        let c = Catalog::from_listing(&Listing {
            objects: vec![
                snap(1, 0, 1000),
                seg(1, 0, 50, 1100, 1200),
                seg(1, 60, 90, 1300, 1400),
            ],
            foreign: vec![],
        });
        assert!(matches!(
            plan(&c, Target::Latest).unwrap_err(),
            PlanError::Hole {
                from: 50,
                to: 60,
                ..
            }
        ));
        // Before the hole it is fine.
        assert_eq!(plan(&c, Target::Time(1150)).unwrap().segments.len(), 1);
        let e = plan(&c, Target::Latest).unwrap_err().to_string();
        assert!(e.contains("missing offsets 50..60"), "{e}");
    }

    #[test]
    fn overlapping_segments_are_not_reported_as_a_reversed_missing_range() {
        // Two chains from offset 0: 0..50 then 0..70 (a second writer).
        let c = Catalog::from_listing(&Listing {
            objects: vec![
                snap(1, 0, 1000),
                seg(1, 0, 50, 1100, 1200),
                seg(1, 0, 70, 1150, 1250),
            ],
            foreign: vec![],
        });
        let e = plan(&c, Target::Latest).unwrap_err();
        assert!(
            matches!(
                e,
                PlanError::Overlap {
                    start: 0,
                    held: 50,
                    ..
                }
            ),
            "{e}"
        );
        let e = e.to_string();
        assert!(!e.contains("missing offsets 50..0"), "{e}");
        assert!(e.contains("more than one chain"), "{e}");
    }

    #[test]
    fn targets_parse() {
        assert_eq!("latest".parse::<Target>().unwrap(), Target::Latest);
        assert_eq!("offset:42".parse::<Target>().unwrap(), Target::Offset(42));
        assert_eq!(
            "1795484172987".parse::<Target>().unwrap(),
            Target::Time(1795484172987)
        );
        assert_eq!(
            "2026-11-24T10:15:30.250Z".parse::<Target>().unwrap(),
            Target::Time(1795515330250)
        );
        assert_eq!(
            "2026-11-24T11:15:30.25+01:00".parse::<Target>().unwrap(),
            Target::Time(1795515330250)
        );
        assert_eq!(
            "1970-01-01T00:00:00Z".parse::<Target>().unwrap(),
            Target::Time(0)
        );
        for bad in [
            "",
            "yesterday",
            "offset:x",
            "2026-13-01T00:00:00Z",
            "2026-11-24T10:15:30",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(fmt_ms(1795515330250), "2026-11-24T10:15:30.250Z");
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00.000Z");
        // Lower-case separators and a space, as RFC 3339 allows; nanoseconds are cut to ms.
        assert_eq!(
            "2026-11-24t10:15:30.250999999z".parse::<Target>().unwrap(),
            Target::Time(1795515330250)
        );
        assert_eq!(
            "2026-11-24 05:15:30-05:00".parse::<Target>().unwrap(),
            Target::Time(1795515330000)
        );
        assert_eq!(
            " Latest ".parse::<Target>().unwrap(),
            Target::Latest,
            "trimmed, any case"
        );
    }

    #[test]
    fn a_date_that_does_not_exist_is_rejected_not_rolled_over() {
        for bad in [
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T12:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:61:00Z",
        ] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.contains(bad), "the error names the value: {e}");
        }
        // 2028 is a leap year.
        assert!("2028-02-29T00:00:00Z".parse::<Target>().is_ok());
    }

    #[test]
    fn an_offset_outside_rfc3339_is_rejected() {
        for bad in [
            "2026-11-24T10:15:30+25:99",
            "2026-11-24T10:15:30+24:00",
            "2026-11-24T10:15:30-25:00",
            "2026-11-24T10:15:30+01:60",
            "2026-11-24T10:15:30+01",
            "2026-11-24T10:15:30+0100",
            "2026-11-24T10:15:30",
            "2026-11-24T10:15:30Z[Europe/Paris]",
        ] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.contains(bad), "the error names the value: {e}");
        }
        assert_eq!(
            "2026-11-24T10:15:30.250-23:59".parse::<Target>().unwrap(),
            Target::Time(1795515330250 + (23 * 60 + 59) * 60_000)
        );
    }

    #[test]
    fn a_time_past_year_9999_is_rejected_and_prints_safely() {
        // One ms past the latest: unix ms and RFC 3339 alike.
        let past = (max_time_ms() + 1).to_string();
        for bad in [
            past.as_str(),
            "253402300800000",
            "18446744073709551615",
            "99999999999999999999999",
            "9999-12-31T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.contains(bad), "the error names the value: {e}");
        }
        let latest = max_time_ms().to_string().parse::<Target>().unwrap();
        assert_eq!(latest.to_string(), "9999-12-30T22:00:00.000Z");
        // Times from object names are not checked by the parser: they print too.
        assert!(fmt_ms(253402300800000).contains("253402300800000"));
        assert!(Target::Time(u64::MAX)
            .to_string()
            .contains(&u64::MAX.to_string()));
        let p = Point {
            generation: GenerationId(1),
            offset: 0,
            time_ms: u64::MAX,
        };
        assert!(p.to_string().contains("offset 0"));
    }
}
