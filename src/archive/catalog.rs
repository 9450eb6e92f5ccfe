//! The catalog: what an archive holds, worked out from a listing alone (no object is read).
//! Groups objects into generations, computes each generation's restorable window, finds holes
//! inside a generation and the gaps between generations. Pure: tests build synthetic listings.
//!
//! A generation is one chain: its first snapshot, then segments that each start where the one
//! before ended. In format version 2 a generation may also hold scheduled snapshots at later
//! offsets, and objects of several levels over the same range (compaction writes the higher
//! level before it deletes the lower ones): the chain then takes the highest level that covers
//! each range, and the lower-level objects inside it are covered, not forks. Anything else a
//! listing shows (two snapshots at one offset, a segment before the first snapshot, segments of
//! one level that overlap, or of two levels that do not nest: a fork, as two archivers writing
//! one archive make) is a [`ChainProblem`] naming the objects, for `ls` to show and `verify` to
//! report.

use serde::Serialize;

use crate::archive::names::{GenerationId, GenerationsExhausted, ObjectKind, ObjectName, ReplId};
use crate::archive::store::{Listed, Listing};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub offset: u64,
    pub time_ms: u64,
    /// Stored (compressed) bytes.
    pub bytes: u64,
    #[serde(skip)]
    pub name: ObjectName,
}

/// A missing offset range inside a generation (an object lost or deleted).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Hole {
    pub from_offset: u64,
    pub to_offset: u64,
}

/// Objects of a generation that are not on its single chain, seen from the listing alone.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChainProblem {
    /// The objects concerned, the one off the chain first (names relative to the archive).
    pub objects: Vec<String>,
    pub what: String,
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.objects.join(", "), self.what)
    }
}

/// How much of a generation a catalog was built from.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Every object: its counts, holes and problems are the generation's.
    #[default]
    Whole,
    /// The snapshots from one on and the segments from that snapshot's offset (what a restore
    /// of a moment from there needs): counts, holes and problems are of that part only.
    FromSnapshot,
    /// Its snapshots and newest objects only: its window and snapshots are right; segment
    /// counts, holes and problems are not known (`pitr ls --objects` and `pitr verify` list
    /// everything).
    Ends,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    #[serde(serialize_with = "ser_display")]
    pub id: GenerationId,
    /// The replication id of the newest object (a failover continues a generation under a new id).
    #[serde(serialize_with = "ser_display")]
    pub replid: ReplId,
    #[serde(serialize_with = "ser_display_vec")]
    pub replids: Vec<ReplId>,
    pub first_offset: u64,
    /// Offset just past the last archived byte.
    pub last_offset: u64,
    pub first_time_ms: u64,
    /// The arrival of the last archived byte, or later when the archiver vouched that the
    /// master had nothing more until then (`vouched_ms`).
    pub last_time_ms: u64,
    /// The moment up to which the running archiver vouched that the master had nothing beyond
    /// `last_offset` (from its lease), when that is later than the last archived byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouched_ms: Option<u64>,
    pub snapshots: Vec<SnapshotInfo>,
    /// Number of segments, of every level.
    pub segments: usize,
    /// Segments per level (index = level).
    pub segments_by_level: Vec<usize>,
    /// Stored bytes of every object of the generation.
    pub bytes: u64,
    pub holes: Vec<Hole>,
    /// Forks, overlaps and objects off the chain (see [`ChainProblem`]).
    pub problems: Vec<ChainProblem>,
    #[serde(skip)]
    pub objects: Vec<Listed>,
    /// The segments on the chain, in offset order: indexes into `objects`. The others are
    /// covered by a higher level, or off the chain (a problem).
    #[serde(skip)]
    pub chain: Vec<usize>,
    /// Segments that end at or before the first snapshot (see `from_first_snapshot`): on no
    /// chain, needed by no moment, removed by the next prune.
    #[serde(skip)]
    pub trimmed: Vec<Listed>,
    /// How much of the generation the listing covered.
    pub listed: Coverage,
    /// The object that ends furthest so far (while the listing is read).
    #[serde(skip)]
    reach: Option<ObjectName>,
}

impl Generation {
    /// Whether every offset from the first snapshot to `last_offset` is archived, on one chain.
    pub fn is_contiguous(&self) -> bool {
        self.holes.is_empty() && !self.snapshots.is_empty() && self.problems.is_empty()
    }

    /// The generation's base: its first snapshot, when nothing comes before it (and, in
    /// version 1, it is the only one).
    pub fn base(&self) -> Option<&Listed> {
        let first = self.objects.first()?;
        let one_allowed = first.name.version < 2;
        match self.snapshots.as_slice() {
            [s, ..] if first.name == s.name && (!one_allowed || self.snapshots.len() == 1) => {
                Some(first)
            }
            _ => None,
        }
    }

    /// The segments on the chain, in offset order.
    pub fn chain_segments(&self) -> impl Iterator<Item = &Listed> {
        self.chain.iter().map(|&i| &self.objects[i])
    }

    /// Whether the object at `index` of `objects` is a segment on the chain.
    pub fn on_chain(&self, index: usize) -> bool {
        self.chain.binary_search(&index).is_ok()
    }

    /// The object a resuming archiver continues from: the last segment on the chain, or the
    /// base when there is none yet.
    pub fn last_object(&self) -> Option<&Listed> {
        match self.chain.last() {
            Some(&i) => Some(&self.objects[i]),
            None => self.base(),
        }
    }
}

/// The order in which a generation's objects are read: by start offset, a snapshot before the
/// segments that start there, then the highest level first, so that the chain meets the
/// objects that cover a range before those they cover. Ties (a fork: two
/// objects over one range) in a fixed order, whatever the listing's.
fn catalog_order(o: &Listed) -> impl Ord {
    let n = &o.name;
    let kind = match n.kind {
        ObjectKind::Snapshot => 0u8,
        ObjectKind::Segment => 1,
    };
    (
        n.generation,
        n.start,
        kind,
        std::cmp::Reverse(n.level),
        n.end,
        n.first_ms,
        n.last_ms,
        n.replid,
    )
}

/// A break in the history: between the end of one generation and the start of the next,
/// writes were not archived.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    #[serde(serialize_with = "ser_display")]
    pub after_generation: GenerationId,
    #[serde(serialize_with = "ser_display")]
    pub before_generation: GenerationId,
    pub from_offset: u64,
    pub from_time_ms: u64,
    #[serde(serialize_with = "ser_display")]
    pub from_replid: ReplId,
    pub to_offset: u64,
    pub to_time_ms: u64,
    #[serde(serialize_with = "ser_display")]
    pub to_replid: ReplId,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Catalog {
    pub generations: Vec<Generation>,
    pub gaps: Vec<Gap>,
    /// Names under the archive prefix that are not archive objects.
    pub foreign: Vec<String>,
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_display_vec<T: std::fmt::Display, S: serde::Serializer>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.to_string()))
}

impl Catalog {
    pub fn from_listing(listing: &Listing) -> Catalog {
        let mut objects = listing.objects.clone();
        objects.sort_by_key(catalog_order);
        let mut generations: Vec<Generation> = Vec::new();
        for group in objects.chunk_by(|a, b| a.name.generation == b.name.generation) {
            let (head, trimmed) = from_first_snapshot(group);
            let mut head = head.into_iter();
            let Some(first) = head.next() else {
                continue;
            };
            let mut g = Generation::start(first);
            for o in head {
                g.push(o);
            }
            for o in trimmed {
                g.count(&o);
                g.trimmed.push(o);
            }
            generations.push(g);
        }
        Self::from_generations(generations, listing.foreign.clone())
    }

    /// A catalog of generations already built (in id order).
    pub fn from_generations(generations: Vec<Generation>, foreign: Vec<String>) -> Catalog {
        let gaps = generations
            .windows(2)
            .map(|w| Gap {
                after_generation: w[0].id,
                before_generation: w[1].id,
                from_offset: w[0].last_offset,
                from_time_ms: w[0].last_time_ms,
                from_replid: w[0].replid,
                to_offset: w[1].first_offset,
                to_time_ms: w[1].first_time_ms,
                to_replid: w[1].replids[0],
            })
            .collect();
        Catalog {
            generations,
            gaps,
            foreign,
        }
    }

    pub fn last_generation(&self) -> Option<&Generation> {
        self.generations.last()
    }

    /// Extends the newest generation's window to `ms` when the archiver vouched (in its
    /// lease) that at `ms` the master had nothing beyond `offset` of `generation`, and that is
    /// exactly where the listed archive ends: an idle master writes nothing, yet every moment
    /// up to `ms` is restorable. A vouched point at another offset (an older one, or one whose
    /// objects the listing does not show yet) extends nothing.
    pub fn extend_to_vouched(&mut self, generation: GenerationId, offset: u64, ms: u64) {
        if let Some(g) = self.generations.last_mut() {
            if g.id == generation && g.last_offset == offset && ms > g.last_time_ms {
                g.last_time_ms = ms;
                g.vouched_ms = Some(ms);
            }
        }
    }

    /// The id a new generation takes: one more than the newest, which fails when the newest
    /// has the largest id a name can hold.
    pub fn next_generation_id(&self) -> Result<GenerationId, GenerationsExhausted> {
        match self.generations.last() {
            Some(g) => g.id.next(),
            None => Ok(GenerationId(1)),
        }
    }

    /// Every problem the listing shows: chain problems, holes, generations without a snapshot.
    pub fn problems(&self) -> Vec<ChainProblem> {
        let mut out = Vec::new();
        for g in &self.generations {
            if g.snapshots.is_empty() {
                let first = g.objects.first().map(|o| o.name.to_string());
                out.push(ChainProblem {
                    objects: first.into_iter().collect(),
                    what: format!(
                        "generation {} has no snapshot: none of its {} segments can be restored",
                        g.id, g.segments
                    ),
                });
            }
            out.extend(g.problems.iter().cloned());
        }
        out
    }
}

/// A version 2 generation's objects in the order the chain takes them, and those that end at
/// or before its first snapshot (left by a prune that cut inside a segment and was stopped, or
/// outside a partial listing), which no moment from that snapshot on needs.
///
/// Retention may cut a generation at a scheduled snapshot inside a segment: that segment (and
/// those of lower levels it covers) then starts before the first snapshot. The chain starts
/// with the snapshot and goes on with that segment, as a restore from a scheduled snapshot
/// does. Version 1 generations are taken as they are.
fn from_first_snapshot(group: &[Listed]) -> (Vec<Listed>, Vec<Listed>) {
    let first = group
        .iter()
        .filter(|o| o.name.kind == ObjectKind::Snapshot)
        .map(|o| (o.name.start, o.name.version))
        .min();
    let Some((at, 2..)) = first else {
        return (group.to_vec(), Vec::new());
    };
    let is_snapshot_at = |o: &Listed| o.name.kind == ObjectKind::Snapshot && o.name.start == at;
    let mut head: Vec<Listed> = group
        .iter()
        .filter(|o| is_snapshot_at(o))
        .cloned()
        .collect();
    let mut trimmed = Vec::new();
    for o in group.iter().filter(|o| !is_snapshot_at(o)) {
        if o.name.kind == ObjectKind::Segment && o.name.end <= at {
            trimmed.push(o.clone());
        } else {
            // Segments that hold `at` come first (by start, so that a higher level's object
            // comes before those it covers), then everything from `at` on.
            head.push(o.clone());
        }
    }
    (head, trimmed)
}

impl Generation {
    /// Counts an object's size, and a segment in the per-level counts.
    fn count(&mut self, o: &Listed) {
        self.bytes += o.size;
        if o.name.kind == ObjectKind::Segment {
            self.segments += 1;
            let level = usize::from(o.name.level);
            if self.segments_by_level.len() <= level {
                self.segments_by_level.resize(level + 1, 0);
            }
            self.segments_by_level[level] += 1;
        }
    }

    fn start(o: Listed) -> Generation {
        let n = o.name;
        let mut g = Generation {
            id: n.generation,
            replid: n.replid,
            replids: vec![n.replid],
            first_offset: n.start,
            last_offset: n.start,
            first_time_ms: n.first_ms,
            last_time_ms: n.first_ms,
            vouched_ms: None,
            snapshots: Vec::new(),
            segments: 0,
            segments_by_level: Vec::new(),
            bytes: 0,
            holes: Vec::new(),
            problems: Vec::new(),
            objects: Vec::new(),
            chain: Vec::new(),
            trimmed: Vec::new(),
            listed: Coverage::Whole,
            reach: None,
        };
        if n.kind == ObjectKind::Segment {
            // No snapshot before the first segment: everything before it is missing.
            g.holes.push(Hole {
                from_offset: n.start,
                to_offset: n.start,
            });
        }
        g.push(o);
        g
    }

    fn push(&mut self, o: Listed) {
        let n = o.name;
        self.count(&o);
        if self.replid != n.replid {
            self.replid = n.replid;
            self.replids.push(n.replid);
        }
        match n.kind {
            ObjectKind::Snapshot => {
                // Version 2: scheduled snapshots at other offsets are part of the generation.
                let twin = self
                    .snapshots
                    .iter()
                    .find(|s| n.version < 2 || s.name.version < 2 || s.offset == n.start);
                if let Some(first) = twin {
                    self.problems.push(ChainProblem {
                        objects: vec![n.to_string(), first.name.to_string()],
                        what: format!(
                            "a second snapshot in generation {}: the generation forks into two chains (were two archivers writing to this archive?); a restore may build on either",
                            self.id
                        ),
                    });
                } else if let (true, Some(before)) =
                    (self.snapshots.is_empty(), self.objects.first())
                {
                    self.problems.push(ChainProblem {
                        objects: vec![before.name.to_string(), n.to_string()],
                        what: format!(
                            "comes before the snapshot of generation {}, so it is on no chain from it",
                            self.id
                        ),
                    });
                }
                self.snapshots.push(SnapshotInfo {
                    offset: n.start,
                    time_ms: n.first_ms,
                    bytes: o.size,
                    name: n,
                });
            }
            ObjectKind::Segment => {
                // The chain's last segment holds `n.start` when `n` starts before the reach.
                let covering = self.chain.last().map(|&i| self.objects[i].name);
                let covered = covering.is_some_and(|c| {
                    n.version >= 2 && c.level > n.level && c.start <= n.start && n.end <= c.end
                });
                // Version 2: the segment that holds the first snapshot's offset starts the
                // chain (see `from_first_snapshot`).
                let holds_first_snapshot = n.version >= 2
                    && self.chain.is_empty()
                    && n.start < self.last_offset
                    && self.last_offset < n.end
                    && self
                        .objects
                        .iter()
                        .all(|o| o.name.kind == ObjectKind::Snapshot);
                if n.start >= self.last_offset || holds_first_snapshot {
                    self.chain.push(self.objects.len());
                }
                if n.start > self.last_offset {
                    self.holes.push(Hole {
                        from_offset: self.last_offset,
                        to_offset: n.start,
                    });
                } else if n.start < self.last_offset && !covered && !holds_first_snapshot {
                    let other = self.reach.map(|r| r.to_string()).unwrap_or_default();
                    self.problems.push(ChainProblem {
                        objects: vec![n.to_string(), other],
                        what: format!(
                            "offsets {}..{} are in two objects of generation {}: the generation forks into two chains (were two archivers writing to this archive?)",
                            n.start,
                            self.last_offset.min(n.end),
                            self.id
                        ),
                    });
                }
            }
        }
        // A later snapshot (version 2: scheduled) sits inside the stream: it moves nothing.
        let inside = n.kind == ObjectKind::Snapshot && !self.objects.is_empty();
        if !inside && (n.end > self.last_offset || self.reach.is_none()) {
            self.reach = Some(n);
        }
        if !inside {
            self.last_offset = self.last_offset.max(n.end);
        }
        self.last_time_ms = self.last_time_ms.max(n.last_ms);
        self.objects.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::archive::names::test_replid as rid;
    use crate::archive::store::test_listing::{seg, snap};

    #[test]
    fn generations_windows_and_gaps() {
        let listing = Listing {
            // Deliberately out of order: the catalog sorts.
            objects: vec![
                seg(1, 150, 200, 1200, 1300, 'b'),
                seg(2, 5, 9, 2100, 2200, 'c'),
                snap(1, 100, 1000, 'a'),
                seg(1, 100, 150, 1100, 1150, 'a'),
                snap(2, 0, 2000, 'c'),
                seg(2, 0, 5, 2050, 2060, 'c'),
            ],
            foreign: vec![],
        };
        let c = Catalog::from_listing(&listing);
        assert_eq!(c.generations.len(), 2);
        let g1 = &c.generations[0];
        assert_eq!(
            (
                g1.first_offset,
                g1.last_offset,
                g1.first_time_ms,
                g1.last_time_ms
            ),
            (100, 200, 1000, 1300)
        );
        assert_eq!(g1.replid, rid('b'));
        assert_eq!(g1.replids, vec![rid('a'), rid('b')]);
        assert_eq!((g1.segments, g1.bytes), (2, 120));
        assert!(g1.is_contiguous());
        assert_eq!(c.gaps.len(), 1);
        assert_eq!(
            (
                c.gaps[0].from_offset,
                c.gaps[0].to_offset,
                c.gaps[0].to_time_ms
            ),
            (200, 0, 2000)
        );
        assert_eq!(c.next_generation_id(), Ok(GenerationId(3)));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["generations"][0]["id"], "0000000001");
        assert_eq!(json["generations"][1]["snapshots"][0]["offset"], 0);
    }

    #[test]
    fn forks_and_objects_off_the_chain_are_problems_naming_the_objects() {
        let c = |objects: Vec<Listed>| {
            Catalog::from_listing(&Listing {
                objects,
                foreign: vec![],
            })
        };
        // Two archivers started at once: two snapshots at offset 0, whichever the listing
        // shows first.
        for order in [[0, 1], [1, 0]] {
            let snaps = [snap(1, 0, 1000, 'a'), snap(1, 0, 1001, 'a')];
            let mut objects: Vec<Listed> = order.iter().map(|&i| snaps[i].clone()).collect();
            objects.push(seg(1, 0, 10, 1100, 1100, 'a'));
            let cat = c(objects);
            let g = &cat.generations[0];
            assert!(!g.is_contiguous());
            assert!(g.base().is_none());
            assert_eq!(g.problems.len(), 1, "{:?}", g.problems);
            let p = &g.problems[0];
            assert!(p.what.contains("fork"), "{p}");
            assert_eq!(
                p.objects,
                vec![snaps[1].name.to_string(), snaps[0].name.to_string()]
            );
            assert_eq!(cat.problems(), g.problems);
            let json = serde_json::to_value(&cat).unwrap();
            assert!(json["generations"][0]["problems"][0]["what"]
                .as_str()
                .unwrap()
                .contains("fork"));
        }
        // Two chains of segments over the same offsets.
        let a1 = seg(1, 0, 50, 1100, 1150, 'a');
        let b1 = seg(1, 0, 60, 1101, 1160, 'a');
        let a2 = seg(1, 50, 120, 1200, 1250, 'a');
        let g = c(vec![
            snap(1, 0, 1000, 'a'),
            a1.clone(),
            b1.clone(),
            a2.clone(),
        ]);
        let g = &g.generations[0];
        assert!(g.holes.is_empty());
        assert_eq!(g.problems.len(), 2, "{:?}", g.problems);
        assert_eq!(
            g.problems[0].objects,
            vec![b1.name.to_string(), a1.name.to_string()]
        );
        assert!(g.problems[0].what.contains("0..50"), "{}", g.problems[0]);
        assert_eq!(
            g.problems[1].objects,
            vec![a2.name.to_string(), b1.name.to_string()]
        );
        // The same range twice (times differ).
        let g = c(vec![
            snap(1, 0, 1000, 'a'),
            seg(1, 0, 14, 1100, 1100, 'a'),
            seg(1, 0, 14, 1101, 1101, 'a'),
        ]);
        assert_eq!(g.generations[0].problems.len(), 1);
        // A segment before the snapshot is on no chain from it.
        let early = seg(1, 0, 10, 900, 900, 'a');
        let g = c(vec![
            early.clone(),
            snap(1, 10, 1000, 'a'),
            seg(1, 10, 20, 1100, 1100, 'a'),
        ]);
        let g = &g.generations[0];
        assert!(g.base().is_none());
        assert_eq!(g.problems.len(), 1);
        assert_eq!(g.problems[0].objects[0], early.name.to_string());
        // A sound generation has a base and no problem.
        let g = c(vec![snap(1, 0, 1000, 'a'), seg(1, 0, 10, 1100, 1100, 'a')]);
        assert!(g.problems().is_empty());
        assert_eq!(
            g.generations[0].base().unwrap().name.kind,
            ObjectKind::Snapshot
        );
        // A generation without a snapshot is reported.
        let g = c(vec![seg(1, 5, 10, 2, 3, 'a')]);
        assert!(g.problems()[0].what.contains("no snapshot"));
    }

    /// Version 2 objects for the tests: a level `l` segment, a snapshot.
    fn seg2(start: u64, end: u64, t0: u64, t1: u64, l: u8) -> Listed {
        let mut o = seg(1, start, end, t0, t1, 'a');
        o.name = o.name.v2(l);
        o
    }

    fn snap2(off: u64, t: u64) -> Listed {
        let mut o = snap(1, off, t, 'a');
        o.name = o.name.v2(0);
        o
    }

    #[test]
    fn levels_nest_and_the_chain_takes_the_highest() {
        let c = Catalog::from_listing(&Listing {
            objects: vec![
                snap2(0, 1000),
                seg2(0, 10, 1001, 1002, 0),
                seg2(10, 20, 1003, 1004, 0),
                seg2(20, 30, 1005, 1006, 0),
                // Compaction of the last two, before their deletion.
                seg2(10, 30, 1003, 1006, 1),
                seg2(30, 40, 1007, 1008, 0),
            ],
            foreign: vec![],
        });
        let g = &c.generations[0];
        assert!(g.problems.is_empty(), "{:?}", g.problems);
        assert!(g.is_contiguous());
        let chain: Vec<(u64, u64, u8)> = g
            .chain_segments()
            .map(|o| (o.name.start, o.name.end, o.name.level))
            .collect();
        assert_eq!(chain, vec![(0, 10, 0), (10, 30, 1), (30, 40, 0)]);
        assert_eq!(g.segments_by_level, vec![4, 1]);
        assert_eq!(g.last_object().unwrap().name.start, 30);
        assert_eq!(g.last_offset, 40);
        // Levels that do not nest are a fork.
        let c = Catalog::from_listing(&Listing {
            objects: vec![
                snap2(0, 1000),
                seg2(0, 10, 1001, 1002, 0),
                seg2(10, 20, 1003, 1004, 0),
                seg2(5, 20, 1002, 1004, 1),
            ],
            foreign: vec![],
        });
        let p = &c.generations[0].problems;
        assert!(!p.is_empty());
        assert!(p[0].objects[0].contains("/L1/"), "{p:?}");
    }

    #[test]
    fn scheduled_snapshots_sit_inside_the_stream() {
        let c = Catalog::from_listing(&Listing {
            objects: vec![
                snap2(0, 1000),
                seg2(0, 10, 1001, 1002, 0),
                // Taken while the stream was inside the next segment, and one ahead of it.
                snap2(15, 1003),
                seg2(10, 20, 1003, 1004, 0),
                snap2(25, 1006),
            ],
            foreign: vec![],
        });
        let g = &c.generations[0];
        assert!(g.problems.is_empty(), "{:?}", g.problems);
        assert_eq!(g.snapshots.len(), 3);
        assert_eq!(g.last_offset, 20);
        assert_eq!(g.base().unwrap().name.start, 0);
        assert_eq!(g.last_object().unwrap().name.start, 10);
        // Two snapshots at one offset are a fork.
        let c = Catalog::from_listing(&Listing {
            objects: vec![snap2(0, 1000), snap2(0, 1001), seg2(0, 10, 1001, 1002, 0)],
            foreign: vec![],
        });
        assert_eq!(c.generations[0].problems.len(), 1);
    }

    /// The window of the newest generation reaches the vouched moment only when the vouched
    /// offset is where the listing ends.
    #[test]
    fn a_vouched_point_at_the_end_extends_the_window() {
        let listing = Listing {
            objects: vec![snap(1, 0, 1000, 'a'), seg(1, 0, 10, 1100, 1200, 'a')],
            foreign: vec![],
        };
        for (g, offset, ms, want) in [
            (1, 10, 5000, 5000),
            // Older than the last write, another offset, another generation: nothing.
            (1, 10, 1150, 1200),
            (1, 9, 5000, 1200),
            (1, 11, 5000, 1200),
            (2, 10, 5000, 1200),
        ] {
            let mut c = Catalog::from_listing(&listing);
            c.extend_to_vouched(GenerationId(g), offset, ms);
            let gen = &c.generations[0];
            assert_eq!(gen.last_time_ms, want, "{g} {offset} {ms}");
            assert_eq!(gen.vouched_ms.is_some(), want == 5000);
        }
    }

    #[test]
    fn the_last_generation_id_has_no_successor() {
        let c = Catalog::from_listing(&Listing {
            objects: vec![snap(9_999_999_999, 0, 1, 'a')],
            foreign: vec![],
        });
        assert!(c.next_generation_id().is_err());
        assert_eq!(Catalog::default().next_generation_id(), Ok(GenerationId(1)));
    }

    #[test]
    fn holes_are_found() {
        let listing = Listing {
            objects: vec![
                snap(1, 0, 1, 'a'),
                seg(1, 0, 10, 2, 3, 'a'),
                seg(1, 20, 30, 4, 5, 'a'),
            ],
            foreign: vec![],
        };
        let c = Catalog::from_listing(&listing);
        assert_eq!(
            c.generations[0].holes,
            vec![Hole {
                from_offset: 10,
                to_offset: 20
            }]
        );
        assert!(!c.generations[0].is_contiguous());
        let no_snap = Catalog::from_listing(&Listing {
            objects: vec![seg(1, 5, 10, 2, 3, 'a')],
            foreign: vec![],
        });
        assert!(!no_snap.generations[0].is_contiguous());
    }
}
