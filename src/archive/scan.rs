//! Listing by partition: the catalog a reader needs, from LIST requests over the few
//! partitions that hold it rather than over the archive's whole history.
//!
//! The tree (docs/format.md, "Object names"): `<gen>/snapshots/`, and for each level
//! `<gen>/L<k>/<partition>/`, partitions named by UTC time so that they sort in time order.
//! A LIST with delimiter at each level of the tree gives the generations, a generation's
//! levels, and a level's partitions without listing any segment; then only the partitions
//! that hold the wanted range are listed:
//!
//! - the newest objects of a generation (its window's end): at each level, the newest
//!   partition that holds an object;
//! - the objects from a snapshot `S` on, up to a moment `T`: at each level, the partitions
//!   from the one that holds the object covering `S`'s offset (found by going back from the
//!   partition of `S`'s time until an object starts at or before the offset) to the first one
//!   that starts after `T`.
//!
//! Version 1 generations keep every object right under `<gen>/`: they are listed whole.
//!
//! What the catalog then shows is exact for the generation a restore uses from its snapshot
//! on ([`Coverage::FromSnapshot`]); other generations are known by their snapshots and newest
//! objects only ([`Coverage::Ends`]): their windows are right, their holes and counts are not
//! looked at. `pitr verify` and `pitr ls --objects` list everything.

use std::collections::HashMap;

use crate::archive::catalog::{Catalog, Coverage, Generation};
use crate::archive::names::{partition, GenerationId, ObjectKind};
use crate::archive::store::{Dir, Listed, Listing, Store, StoreError};

/// What a reader wants from the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The newest state (and the newest generation's resume point).
    Latest,
    /// The state at a moment (unix ms).
    Time(u64),
    /// The state at a replication offset.
    Offset(u64),
}

impl From<crate::replay::plan::Target> for Want {
    fn from(t: crate::replay::plan::Target) -> Want {
        use crate::replay::plan::Target;
        match t {
            Target::Latest | Target::Now => Want::Latest,
            Target::Time(ms) => Want::Time(ms),
            Target::Offset(o) => Want::Offset(o),
        }
    }
}

/// A generation's layout: its snapshots, and its levels with their partitions.
#[derive(Clone, Debug, Default)]
struct Layout {
    /// Version 1: every object, listed whole.
    v1: Vec<Listed>,
    snapshots: Vec<Listed>,
    /// `(level, partitions sorted)`.
    levels: Vec<(u8, Vec<String>)>,
}

/// Lists what a reader needs, each prefix at most once.
pub struct Scan<'a> {
    store: &'a Store,
    dirs: HashMap<String, Dir>,
    /// LIST requests made (each a LIST with delimiter; a page of 1,000 names or more counts
    /// once here).
    pub lists: u64,
    foreign: Vec<String>,
}

impl<'a> Scan<'a> {
    pub fn new(store: &'a Store) -> Scan<'a> {
        Scan {
            store,
            dirs: HashMap::new(),
            lists: 0,
            foreign: Vec::new(),
        }
    }

    async fn dir(&mut self, rel: &str) -> Result<&Dir, StoreError> {
        if !self.dirs.contains_key(rel) {
            let d = self.store.list_dir(rel).await?;
            self.lists += 1;
            self.dirs.insert(rel.to_string(), d);
        }
        Ok(&self.dirs[rel])
    }

    /// The archive's generations, oldest first.
    pub async fn generations(&mut self) -> Result<Vec<GenerationId>, StoreError> {
        let root = self.dir("").await?.clone();
        self.foreign = root.foreign;
        // Archive objects right under the root would be misplaced; names that are not
        // generations are foreign.
        self.foreign
            .extend(root.objects.iter().map(|o| o.name.to_string()));
        let mut gens = Vec::new();
        for p in root.prefixes {
            match p.parse::<GenerationId>() {
                Ok(g) if g.to_string() == p => gens.push(g),
                _ if p == crate::archive::branch::BRANCHES_DIR => {}
                _ => self.foreign.push(format!("{p}/")),
            }
        }
        gens.sort();
        Ok(gens)
    }

    async fn layout(&mut self, g: GenerationId) -> Result<Layout, StoreError> {
        let top = self.dir(&g.to_string()).await?.clone();
        let mut layout = Layout::default();
        if !top.objects.is_empty() {
            // Version 1 keeps every object here.
            layout.v1 = top.objects;
        }
        for p in &top.prefixes {
            if p == "snapshots" {
                let d = self.dir(&format!("{g}/snapshots")).await?;
                layout.snapshots = d.objects.clone();
            } else if let Some(level) = p
                .strip_prefix('L')
                .and_then(|l| l.parse::<u8>().ok())
                .filter(|l| format!("L{l}") == *p)
            {
                let d = self.dir(&format!("{g}/{p}")).await?;
                layout.levels.push((level, d.prefixes.clone()));
            }
        }
        layout.levels.sort();
        Ok(layout)
    }

    async fn partition(
        &mut self,
        g: GenerationId,
        level: u8,
        part: &str,
    ) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .dir(&format!("{g}/L{level}/{part}"))
            .await?
            .objects
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Segment && o.name.generation == g)
            .cloned()
            .collect())
    }

    /// The newest objects of each level (the newest partition that holds one).
    async fn tail(&mut self, g: GenerationId, layout: &Layout) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for (level, parts) in &layout.levels {
            for p in parts.iter().rev() {
                let objects = self.partition(g, *level, p).await?;
                if !objects.is_empty() {
                    out.extend(objects);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The segments of `g` from the one that holds `offset` (which arrived at about `time_ms`)
    /// to the first that starts after `until` (`None`: to the end), at every level.
    async fn segments_from(
        &mut self,
        g: GenerationId,
        layout: &Layout,
        (offset, time_ms): (u64, u64),
        until: Option<u64>,
    ) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for (level, parts) in &layout.levels {
            let level = *level;
            // Back from the partition of `time_ms` until an object starts at or before
            // `offset` (the one that holds it, or the last before it).
            let at = partition(level, time_ms);
            let mut first = parts.partition_point(|p| *p <= at);
            while first > 0 {
                first -= 1;
                let objects = self.partition(g, level, &parts[first]).await?;
                let found = objects.iter().any(|o| o.name.start <= offset);
                out.extend(objects);
                if found {
                    break;
                }
            }
            // Forward to the first partition that starts after `until`.
            let stop = until.map(|t| partition(level, t));
            let from = parts.partition_point(|p| *p <= at);
            for p in &parts[from..] {
                out.extend(self.partition(g, level, p).await?);
                if stop.as_ref().is_some_and(|s| p > s) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Generation `g` known by its snapshots and newest objects ([`Coverage::Ends`]).
    async fn ends(&mut self, g: GenerationId) -> Result<Option<Generation>, StoreError> {
        let layout = self.layout(g).await?;
        if !layout.v1.is_empty() {
            return Ok(whole(&layout.v1));
        }
        let mut objects = layout.snapshots.clone();
        objects.extend(self.tail(g, &layout).await?);
        Ok(built(objects, Coverage::Ends))
    }

    /// Generation `g` from the newest snapshot that `want` can start from
    /// ([`Coverage::FromSnapshot`]), or `None` when it has none (nor any object).
    async fn listed_from_snapshot(
        &mut self,
        g: GenerationId,
        want: Want,
    ) -> Result<Option<Generation>, StoreError> {
        let layout = self.layout(g).await?;
        if !layout.v1.is_empty() {
            return Ok(whole(&layout.v1));
        }
        let tail = self.tail(g, &layout).await?;
        let end = tail.iter().map(|o| o.name.end).max();
        // A scheduled snapshot may complete before the stream reaches its offset: such a
        // snapshot is no start yet. One at exactly the end is, for a restore; the archiver
        // resumes after a segment (a scheduled snapshot carries no stream sum).
        let usable = |s: &&Listed| match (want, end) {
            (_, None) => s.name.start == layout_first(&layout),
            (Want::Latest, Some(e)) => s.name.start < e || s.name.start == layout_first(&layout),
            (_, Some(e)) => s.name.start <= e,
        };
        let fits = |s: &&Listed| match want {
            Want::Latest => true,
            Want::Time(t) => s.name.first_ms <= t,
            Want::Offset(o) => s.name.start <= o,
        };
        let start = layout
            .snapshots
            .iter()
            .filter(usable)
            .filter(fits)
            .max_by_key(|s| (s.name.start, s.name.first_ms));
        let Some(start) = start.cloned() else {
            // Nothing to start from here: the window as far as it is known.
            let mut objects = layout.snapshots.clone();
            objects.extend(tail);
            return Ok(built(objects, Coverage::Ends));
        };
        let until = match want {
            Want::Time(t) => Some(t),
            _ => None,
        };
        let mut objects: Vec<Listed> = layout
            .snapshots
            .iter()
            .filter(|s| s.name.start >= start.name.start)
            .cloned()
            .collect();
        objects.extend(
            self.segments_from(g, &layout, (start.name.start, start.name.first_ms), until)
                .await?,
        );
        objects.extend(tail);
        objects.sort_by_key(|o| (o.name.sort_key(), o.name.first_ms));
        objects.dedup();
        Ok(built(objects, Coverage::FromSnapshot))
    }

    fn catalog(&self, generations: Vec<Generation>) -> Catalog {
        Catalog::from_generations(generations, self.foreign.clone())
    }
}

/// The offset of a generation's first snapshot.
fn layout_first(layout: &Layout) -> u64 {
    layout
        .snapshots
        .iter()
        .map(|s| s.name.start)
        .min()
        .unwrap_or(0)
}

fn whole(objects: &[Listed]) -> Option<Generation> {
    built(objects.to_vec(), Coverage::Whole)
}

/// One generation's catalog entry from some of its objects.
fn built(objects: Vec<Listed>, coverage: Coverage) -> Option<Generation> {
    let catalog = Catalog::from_listing(&Listing {
        objects,
        foreign: Vec::new(),
    });
    let mut g = catalog.generations.into_iter().next()?;
    g.listed = coverage;
    if coverage == Coverage::Ends {
        // Between the snapshots and the newest objects nothing was listed: what the chain
        // shows there (holes, forks) is not known.
        g.holes.clear();
        g.problems.clear();
        g.chain.clear();
    }
    Some(g)
}

/// The catalog a restore of `want` needs: the generation that holds it, listed from the
/// snapshot the restore starts from, and the newer generations by their ends (for the errors
/// that name the nearest restorable points). Generations are looked at newest first, by their
/// snapshots and newest objects, until one has a snapshot the restore can start from. Returns
/// the catalog and the LIST requests made.
pub async fn for_restore(store: &Store, want: Want) -> Result<(Catalog, u64), StoreError> {
    let mut scan = Scan::new(store);
    let ids = scan.generations().await?;
    let mut gens: Vec<Generation> = Vec::new();
    for &id in ids.iter().rev() {
        let Some(g) = scan.listed_from_snapshot(id, want).await? else {
            continue;
        };
        let starts_here = g.listed != Coverage::Ends;
        gens.push(g);
        if starts_here {
            break;
        }
    }
    gens.reverse();
    let lists = scan.lists;
    Ok((scan.catalog(gens), lists))
}

/// Every generation by its ends: windows and snapshots, no segment counts (`pitr ls`).
pub async fn summary(store: &Store) -> Result<(Catalog, u64), StoreError> {
    let mut scan = Scan::new(store);
    let ids = scan.generations().await?;
    let mut gens = Vec::new();
    for id in ids {
        if let Some(g) = scan.ends(id).await? {
            gens.push(g);
        }
    }
    let lists = scan.lists;
    Ok((scan.catalog(gens), lists))
}

/// What an archiver starting up needs: the newest generation from its newest usable
/// snapshot (its chain to the end, to resume from), and the id the next generation takes
/// (one more than the newest generation's, whatever that holds).
pub async fn newest(store: &Store) -> Result<(Catalog, Option<GenerationId>), StoreError> {
    let mut scan = Scan::new(store);
    let ids = scan.generations().await?;
    let mut gens = Vec::new();
    if let Some(&id) = ids.last() {
        if let Some(g) = scan.listed_from_snapshot(id, Want::Latest).await? {
            gens.push(g);
        }
    }
    Ok((scan.catalog(gens), ids.last().copied()))
}

/// The newest generation's id (one LIST request), if any.
pub async fn newest_generation(store: &Store) -> Result<Option<GenerationId>, StoreError> {
    Ok(Scan::new(store).generations().await?.last().copied())
}

/// Where a listing of an archive's newest objects stands: the newest generation seen and, per
/// generation and level, the newest partition seen (see [`newer`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    pub generation: Option<GenerationId>,
    pub partitions: HashMap<(GenerationId, u8), String>,
}

impl Frontier {
    /// The frontier of a listing: its newest generation and each level's newest partition.
    pub fn of(objects: &[Listed]) -> Frontier {
        let mut f = Frontier::default();
        for o in objects {
            let n = &o.name;
            f.generation = f.generation.max(Some(n.generation));
            if n.kind == ObjectKind::Segment && n.version >= 2 {
                let p = partition(n.level, n.first_ms);
                let e = f.partitions.entry((n.generation, n.level)).or_default();
                if *e < p {
                    *e = p;
                }
            }
        }
        f
    }
}

/// What is new in an archive since `since`, without listing its whole history: the
/// generations (1 LIST), and for each generation from the frontier's on, its snapshots and
/// levels, and at each level the partitions from the frontier's on (a level or generation the
/// frontier does not know is listed whole). Objects written since into older partitions (a
/// compaction of a window that closed long ago) are not seen: a whole listing finds them.
/// Returns the objects listed, in offset order, the new frontier and the LIST requests made.
pub async fn newer(
    store: &Store,
    since: &Frontier,
) -> Result<(Vec<Listed>, Frontier, u64), StoreError> {
    let mut scan = Scan::new(store);
    let ids = scan.generations().await?;
    let mut objects = Vec::new();
    for &g in ids
        .iter()
        .filter(|&&g| since.generation.is_none_or(|f| g >= f))
    {
        let layout = scan.layout(g).await?;
        objects.extend(layout.v1.iter().cloned());
        objects.extend(layout.snapshots.iter().cloned());
        for (level, parts) in &layout.levels {
            let from = since.partitions.get(&(g, *level));
            for p in parts.iter().filter(|p| from.is_none_or(|f| *p >= f)) {
                objects.extend(scan.partition(g, *level, p).await?);
            }
        }
    }
    objects.sort_by_key(|o| (o.name.sort_key(), o.name.first_ms));
    let mut frontier = Frontier::of(&objects);
    frontier.generation = frontier.generation.max(since.generation);
    for (k, p) in &since.partitions {
        let e = frontier.partitions.entry(*k).or_default();
        if *e < *p {
            *e = p.clone();
        }
    }
    Ok((objects, frontier, scan.lists))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::archive::names::{test_replid, ObjectName};
    use crate::replay::plan::{plan, Plan, PlanError, Target};
    use object_store::ObjectStoreExt;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;
    /// 2026-12-01T00:00:00Z.
    const T0: u64 = 1_796_083_200_000;

    fn seg(g: u64, level: u8, (start, end): (u64, u64), (t0, t1): (u64, u64)) -> ObjectName {
        ObjectName::segment(GenerationId(g), (start, end), (t0, t1), test_replid('a')).v2(level)
    }

    fn snap(g: u64, offset: u64, t: u64) -> ObjectName {
        ObjectName::snapshot(GenerationId(g), offset, t, test_replid('a')).v2(0)
    }

    /// Generation 1: three days of one-minute segments (1,000 bytes of stream a minute), the
    /// first two days compacted into day objects (level 2), the third day's first 20 hours
    /// into hour objects (level 1), of which hour 19 still has its minutes beside it (a
    /// compaction stopped before its deletions); the last 4 hours as minutes (level 0).
    /// Scheduled snapshots every 6 hours, 300 bytes into a minute. Generation 2 starts 30
    /// minutes after generation 1 ends, with 90 minutes of level 0.
    fn archive() -> Vec<ObjectName> {
        let minute = |g: u64, base: (u64, u64), m: u64, level: u8| {
            seg(
                g,
                level,
                (base.0 + m * 1000, base.0 + (m + 1) * 1000),
                (base.1 + m * MIN + 5, base.1 + m * MIN + 59_000),
            )
        };
        let run = |g: u64, base: (u64, u64), from: u64, to: u64, level: u8| {
            seg(
                g,
                level,
                (base.0 + from * 1000, base.0 + to * 1000),
                (base.1 + from * MIN + 5, base.1 + (to - 1) * MIN + 59_000),
            )
        };
        let mut out = vec![snap(1, 0, T0)];
        let b1 = (0, T0);
        for day in 0..2 {
            out.push(run(1, b1, day * 1440, (day + 1) * 1440, 2));
        }
        for h in 48..68 {
            out.push(run(1, b1, h * 60, (h + 1) * 60, 1));
        }
        for m in 67 * 60..72 * 60 {
            out.push(minute(1, b1, m, 0));
        }
        for h in (6..72).step_by(6) {
            out.push(snap(1, h * 60 * 1000 + 300, T0 + h * HOUR + 200));
        }
        let b2 = (500_000, T0 + 72 * HOUR + 30 * MIN);
        out.push(snap(2, b2.0, b2.1));
        for m in 0..90 {
            out.push(minute(2, b2, m, 0));
        }
        out
    }

    async fn store_with(names: &[ObjectName]) -> Store {
        let store = Store::open("memory://", &"a".parse().unwrap()).unwrap();
        for n in names {
            store
                .backend()
                .put(&store.path(n), bytes::Bytes::from_static(b"x").into())
                .await
                .unwrap();
        }
        store
    }

    fn same(a: &Result<Plan, PlanError>, b: &Result<Plan, PlanError>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                let names = |p: &Plan| {
                    let mut v = vec![p.snapshot.name.clone()];
                    v.extend(p.segments.iter().map(|s| s.name.clone()));
                    (v, p.cut_time_ms, p.cut_offset)
                };
                names(a) == names(b)
            }
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }

    #[tokio::test]
    async fn partial_listings_plan_every_moment_as_the_whole_listing_does() {
        let names = archive();
        let store = store_with(&names).await;
        let whole = Catalog::from_listing(&store.list().await.unwrap());
        assert!(whole.problems().is_empty(), "{:?}", whole.problems());
        let end2 = T0 + 72 * HOUR + 30 * MIN + 89 * MIN + 59_000;
        let mut targets = vec![Target::Latest, Target::Offset(250_300), Target::Offset(2)];
        // Every 7 minutes and 13 seconds across both generations and beyond, and the edges.
        let mut t = T0 - HOUR;
        while t < end2 + HOUR {
            targets.push(Target::Time(t));
            t += 7 * MIN + 13_000;
        }
        for h in (6..72).step_by(6) {
            let s = T0 + h * HOUR + 200;
            targets.extend([Target::Time(s - 1), Target::Time(s), Target::Time(s + 1)]);
        }
        targets.extend([Target::Time(T0), Target::Time(end2), Target::Time(end2 + 1)]);
        let mut most_lists = 0;
        for target in targets {
            let (partial, lists) = for_restore(&store, Want::from(target)).await.unwrap();
            let want = plan(&whole, target);
            let got = plan(&partial, target);
            assert!(
                same(&want, &got),
                "{target}: whole listing {want:?}\npartial {got:?}"
            );
            most_lists = most_lists.max(lists);
        }
        // The archive has 400 objects; a plan lists a handful of prefixes, never the whole:
        // the root, generation 2 (its directory, snapshots, level and up to 2 partitions),
        // generation 1 (directory, snapshots, 3 levels), the newest partition of each level,
        // and the partitions from a snapshot to the moment (up to 7 hours at level 0, 2 per
        // higher level): 1 + 5 + 5 + 3 + 11 = 25 at most, whatever the history's length.
        assert!(names.len() > 400);
        assert!(most_lists <= 25, "{most_lists} LIST requests");
    }

    #[tokio::test]
    async fn a_summary_has_every_generations_window_and_snapshots() {
        let store = store_with(&archive()).await;
        let whole = Catalog::from_listing(&store.list().await.unwrap());
        let (ends, lists) = summary(&store).await.unwrap();
        assert_eq!(ends.generations.len(), whole.generations.len());
        for (a, b) in whole.generations.iter().zip(&ends.generations) {
            let window = |g: &Generation| {
                (
                    g.id,
                    g.first_offset,
                    g.last_offset,
                    g.first_time_ms,
                    g.last_time_ms,
                    g.snapshots.clone(),
                )
            };
            assert_eq!(window(a), window(b));
            assert_eq!(b.listed, Coverage::Ends);
        }
        assert_eq!(ends.gaps.len(), 1);
        assert!(lists <= 2 + 2 * 7, "{lists}");
    }

    #[tokio::test]
    async fn the_archiver_resumes_after_the_newest_segment_not_a_snapshot() {
        // The newest snapshot sits exactly where the archived stream ends.
        let names = vec![
            snap(1, 0, T0),
            seg(1, 0, (0, 1000), (T0 + 5, T0 + 900)),
            seg(1, 0, (1000, 2000), (T0 + 1000, T0 + 1900)),
            snap(1, 2000, T0 + 1950),
        ];
        let store = store_with(&names).await;
        let (c, newest) = newest(&store).await.unwrap();
        assert_eq!(newest, Some(GenerationId(1)));
        let g = c.last_generation().unwrap();
        assert_eq!(g.last_object().unwrap().name, names[2]);
        assert!(g.problems.is_empty() && g.holes.is_empty(), "{g:?}");
    }

    #[tokio::test]
    async fn a_generation_cut_inside_a_segment_starts_at_its_first_snapshot() {
        // What retention leaves when it cuts at a scheduled snapshot inside a segment: the
        // segment that holds it (and a lower-level object it covers), then the rest.
        let names = vec![
            seg(1, 1, (1000, 3000), (T0 + 1000, T0 + 2900)),
            seg(1, 0, (1000, 2000), (T0 + 1000, T0 + 1900)),
            seg(1, 0, (900, 1000), (T0 + 900, T0 + 990)),
            snap(1, 1500, T0 + 1500),
            seg(1, 0, (3000, 4000), (T0 + 3000, T0 + 3900)),
        ];
        let store = store_with(&names).await;
        let whole = Catalog::from_listing(&store.list().await.unwrap());
        let g = &whole.generations[0];
        assert!(g.is_contiguous(), "{g:?}");
        assert_eq!(
            (g.first_offset, g.last_offset, g.first_time_ms),
            (1500, 4000, T0 + 1500)
        );
        assert_eq!(g.base().unwrap().name, names[3]);
        assert_eq!(g.trimmed.len(), 1);
        let chain: Vec<_> = g.chain_segments().map(|o| o.name).collect();
        assert_eq!(chain, vec![names[0], names[4]]);
        let p = plan(&whole, Target::Time(T0 + 2000)).unwrap();
        assert_eq!(p.snapshot.object, names[3]);
        assert_eq!(p.segments.len(), 1);
        assert!(plan(&whole, Target::Time(T0 + 1400)).is_err());
    }
}
