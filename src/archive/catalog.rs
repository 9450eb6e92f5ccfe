//! The catalog: what an archive holds, worked out from a listing alone (no object is read).
//! Groups objects into generations, computes each generation's restorable window, finds holes
//! inside a generation and the gaps between generations. Pure: tests build synthetic listings.

use serde::Serialize;

use crate::archive::names::{GenerationId, ObjectKind, ObjectName, ReplId};
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
    pub last_time_ms: u64,
    pub snapshots: Vec<SnapshotInfo>,
    /// Number of segments.
    pub segments: usize,
    /// Stored bytes of every object of the generation.
    pub bytes: u64,
    pub holes: Vec<Hole>,
    #[serde(skip)]
    pub objects: Vec<Listed>,
}

impl Generation {
    /// Whether every offset from the first snapshot to `last_offset` is archived.
    pub fn is_contiguous(&self) -> bool {
        self.holes.is_empty() && !self.snapshots.is_empty()
    }

    /// The segments, in offset order.
    pub fn segment_objects(&self) -> impl Iterator<Item = &Listed> {
        self.objects
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Segment)
    }

    /// The newest object (the one a resuming archiver continues from).
    pub fn last_object(&self) -> Option<&Listed> {
        self.objects.last()
    }
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
        objects.sort_by_key(|o| o.name.sort_key());
        let mut generations: Vec<Generation> = Vec::new();
        for o in objects {
            match generations.last_mut() {
                Some(g) if g.id == o.name.generation => g.push(o),
                _ => generations.push(Generation::start(o)),
            }
        }
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
            foreign: listing.foreign.clone(),
        }
    }

    pub fn last_generation(&self) -> Option<&Generation> {
        self.generations.last()
    }

    pub fn next_generation_id(&self) -> GenerationId {
        self.generations
            .last()
            .map(|g| g.id.next())
            .unwrap_or(GenerationId(1))
    }
}

impl Generation {
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
            snapshots: Vec::new(),
            segments: 0,
            bytes: 0,
            holes: Vec::new(),
            objects: Vec::new(),
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
        self.bytes += o.size;
        if self.replid != n.replid {
            self.replid = n.replid;
            self.replids.push(n.replid);
        }
        match n.kind {
            ObjectKind::Snapshot => self.snapshots.push(SnapshotInfo {
                offset: n.start,
                time_ms: n.first_ms,
                bytes: o.size,
                name: n,
            }),
            ObjectKind::Segment => {
                self.segments += 1;
                if n.start > self.last_offset {
                    self.holes.push(Hole {
                        from_offset: self.last_offset,
                        to_offset: n.start,
                    });
                }
            }
        }
        self.last_offset = self.last_offset.max(n.end);
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
        assert_eq!(c.next_generation_id(), GenerationId(3));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["generations"][0]["id"], "0000000001");
        assert_eq!(json["generations"][1]["snapshots"][0]["offset"], 0);
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
