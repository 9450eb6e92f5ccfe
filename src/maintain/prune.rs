//! Retention: removes what no moment of the retained window needs (`--retain`,
//! `--retain-snapshots`, `pitr prune`). Without a policy nothing is removed.
//!
//! Plan, then act: [`plan_prune`] is a pure function of the catalog, the time and the policy;
//! [`apply`] deletes what the plan names, holding the lease. The plan finds the *kept point*:
//! a generation and a snapshot in it from which everything is kept (that snapshot, the later
//! ones, the segments from its offset on, and every later generation). It is the oldest of:
//!
//! - for `--retain R`: the snapshot a restore to `T0 = now - R` starts from (the newest at or
//!   before `T0` in the generation holding `T0`, or in the first one after it; the oldest of
//!   that generation when none is before `T0`), so that every moment of `[T0, now]` stays
//!   restorable;
//! - for `--retain-snapshots N`: the oldest of the `N` newest snapshots;
//! - always: the newest snapshot of the newest generation that has one.
//!
//! A snapshot inside a segment (a scheduled one usually is) is a cut point like any other: the
//! segment that holds its offset stays, and the generation then starts with the snapshot and
//! goes on in the middle of that segment (the catalog reads it so).
//!
//! Older generations go whole; in the kept point's generation, the snapshots before it and the
//! segments (of any level, on the chain or covered, and those the catalog already set aside as
//! before the first snapshot) that end at or before its offset go. A generation with problems
//! (a fork) is left alone and reported. Deletion goes oldest generation first. A generation
//! that goes whole loses its segments first, then its snapshots, so that a crash leaves its
//! first snapshot and a hole after it (which `ls --objects` shows and the next prune removes),
//! never segments without a snapshot. In the kept point's generation the snapshots before it
//! go first, then the segments, each oldest first: a crash leaves segments that end before the
//! generation's first snapshot, which no moment needs and the catalog sets aside; the kept
//! snapshot is never touched.

use std::time::Duration;

use serde::Serialize;

use crate::archive::catalog::{Catalog, Generation, SnapshotInfo};
use crate::archive::lease::{LeaseError, LeaseGuard};
use crate::archive::names::{GenerationId, ObjectKind};
use crate::archive::store::{Listed, Store, StoreError};

/// How often the archiver prunes, when it has a policy.
pub const PASS_INTERVAL: Duration = Duration::from_secs(600);

/// What to keep. The default keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep every moment of the last `retain`.
    pub retain: Option<Duration>,
    /// Keep at least this many of the newest snapshots (and what follows them).
    pub retain_snapshots: Option<usize>,
}

impl Policy {
    /// Whether it removes nothing, whatever the archive holds.
    pub fn keeps_everything(&self) -> bool {
        self.retain.is_none() && self.retain_snapshots.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lease is gone: nothing more is deleted.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What a plan removes from one generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationPrune {
    pub generation: GenerationId,
    /// The whole generation goes.
    pub whole: bool,
    pub objects: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// In deletion order.
    pub delete: Vec<Listed>,
}

impl GenerationPrune {
    /// The deletions by kind and level: segments level by level (lowest first), then
    /// snapshots; `first` and `last` in deletion order.
    pub fn kinds(&self) -> Vec<KindPrune> {
        let mut out: Vec<KindPrune> = Vec::new();
        let group = |o: &Listed| match o.name.kind {
            ObjectKind::Segment => (0u8, Some(o.name.level)),
            ObjectKind::Snapshot => (1u8, None),
        };
        let mut keys: Vec<(u8, Option<u8>)> = self.delete.iter().map(group).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let mut of = self.delete.iter().filter(|o| group(o) == key);
            let Some(first) = of.next() else { continue };
            let held = |o: &Listed| (o.name.first_ms, o.name.last_ms.max(o.name.first_ms));
            let mut k = KindPrune {
                kind: if key.0 == 0 { "segment" } else { "snapshot" },
                level: key.1,
                objects: 1,
                bytes: first.size,
                first: first.name.to_string(),
                last: first.name.to_string(),
                from_ms: held(first).0,
                to_ms: held(first).1,
            };
            for o in of {
                k.objects += 1;
                k.bytes += o.size;
                k.last = o.name.to_string();
                k.from_ms = k.from_ms.min(held(o).0);
                k.to_ms = k.to_ms.max(held(o).1);
            }
            out.push(k);
        }
        out
    }
}

/// What a plan removes of one kind (and level) from one generation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KindPrune {
    /// `segment` or `snapshot`.
    pub kind: &'static str,
    /// A segment's compaction level (0 = as archived); `None` for snapshots.
    pub level: Option<u8>,
    pub objects: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// The first and last object deleted (the same when there is one).
    pub first: String,
    pub last: String,
    /// The oldest and newest moment these objects hold.
    pub from_ms: u64,
    pub to_ms: u64,
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Why the kept point is where it is: the policy terms whose cut point it is (the oldest
/// wins; several when they agree).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum KeptBecause {
    /// `--retain`: a restore to the retained window's first moment starts from it.
    Retain,
    /// `--retain-snapshots N`: the oldest of the N newest snapshots.
    RetainSnapshots,
    /// Always: the newest snapshot of the newest generation that has one.
    NewestSnapshot,
}

impl KeptBecause {
    pub fn describe(self) -> &'static str {
        match self {
            KeptBecause::Retain => "a restore to the retained window's first moment starts here",
            KeptBecause::RetainSnapshots => "the oldest of the snapshots --retain-snapshots keeps",
            KeptBecause::NewestSnapshot => "the newest snapshot always stays",
        }
    }
}

/// Where the kept part of the archive starts.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeptPoint {
    #[serde(serialize_with = "ser_display")]
    pub generation: GenerationId,
    /// The kept snapshot's offset and time.
    pub offset: u64,
    pub time_ms: u64,
    #[serde(serialize_with = "ser_display")]
    pub snapshot: crate::archive::names::ObjectName,
    /// The policy terms that put it here.
    pub because: Vec<KeptBecause>,
}

/// A restorable stretch of time: from the oldest generation's first moment to the newest
/// one's last (gaps between generations included).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// What [`plan_prune`] decided.
#[derive(Clone, Debug, Default)]
pub struct PrunePlan {
    /// The retained window's start asked for (`now - retain`), if any.
    pub retain_from_ms: Option<u64>,
    /// The first snapshot kept; `None` when nothing is removed.
    pub kept: Option<KeptPoint>,
    /// The oldest restorable moment once the plan is applied.
    pub new_window_start_ms: Option<u64>,
    /// The archive's window before and after the plan (`None`: an empty archive).
    pub window_before: Option<Window>,
    pub window_after: Option<Window>,
    /// Per generation, oldest first.
    pub generations: Vec<GenerationPrune>,
    /// Generations left alone, with why.
    pub problems: Vec<String>,
}

impl PrunePlan {
    pub fn objects(&self) -> u64 {
        self.generations.iter().map(|g| g.objects).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.generations.iter().map(|g| g.bytes).sum()
    }

    /// Every object to delete, in deletion order.
    pub fn deletions(&self) -> impl Iterator<Item = &Listed> {
        self.generations.iter().flat_map(|g| g.delete.iter())
    }

    /// The plan as `pitr prune --json` prints it: a summary per generation and per kind, and
    /// every object's name only with `list_objects`.
    pub fn report(&self, list_objects: bool) -> PlanReport<'_> {
        PlanReport {
            retain_from_ms: self.retain_from_ms,
            kept: self.kept.as_ref(),
            new_window_start_ms: self.new_window_start_ms,
            window_before: self.window_before,
            window_after: self.window_after,
            objects: self.objects(),
            bytes: self.bytes(),
            generations: self
                .generations
                .iter()
                .map(|g| GenerationReport {
                    generation: g.generation.to_string(),
                    whole: g.whole,
                    objects: g.objects,
                    bytes: g.bytes,
                    kinds: g.kinds(),
                    delete: list_objects
                        .then(|| g.delete.iter().map(|o| o.name.to_string()).collect()),
                })
                .collect(),
            problems: &self.problems,
        }
    }
}

/// [`PrunePlan::report`]: the plan's JSON form (documented in the README, kept stable).
#[derive(Debug, Serialize)]
pub struct PlanReport<'a> {
    pub retain_from_ms: Option<u64>,
    pub kept: Option<&'a KeptPoint>,
    pub new_window_start_ms: Option<u64>,
    pub window_before: Option<Window>,
    pub window_after: Option<Window>,
    pub objects: u64,
    pub bytes: u64,
    pub generations: Vec<GenerationReport>,
    pub problems: &'a [String],
}

/// One generation in a [`PlanReport`].
#[derive(Debug, Serialize)]
pub struct GenerationReport {
    pub generation: String,
    pub whole: bool,
    pub objects: u64,
    pub bytes: u64,
    pub kinds: Vec<KindPrune>,
    /// Every object, in deletion order: only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<Vec<String>>,
}

/// The snapshots a restore may start from: those the stream reaches.
fn usable(g: &Generation) -> impl Iterator<Item = &SnapshotInfo> {
    g.snapshots
        .iter()
        .filter(move |s| s.offset <= g.last_offset)
}

/// The snapshot a restore to `t0` starts from, in the generation holding `t0` or the first
/// one after it: `(generation index, snapshot)`, or `None` when `t0` is after every
/// generation. A generation without a usable snapshot is kept whole: `(index, None)`.
fn for_moment(c: &Catalog, t0: u64) -> Option<(usize, Option<&SnapshotInfo>)> {
    let (i, g) = c
        .generations
        .iter()
        .enumerate()
        .find(|(_, g)| t0 <= g.last_time_ms)?;
    let before = usable(g)
        .filter(|s| s.time_ms <= t0)
        .max_by_key(|s| (s.offset, s.time_ms));
    let s = before.or_else(|| usable(g).min_by_key(|s| (s.offset, s.time_ms)));
    Some((i, s))
}

/// The plan: what to delete so that `policy` holds at `now_ms`. Pure.
pub fn plan_prune(catalog: &Catalog, now_ms: u64, policy: &Policy) -> PrunePlan {
    let mut plan = decide(catalog, now_ms, policy);
    let gens = &catalog.generations;
    let to_ms = gens.last().map(|g| g.last_time_ms);
    plan.window_before = gens.first().zip(to_ms).map(|(g, to_ms)| Window {
        from_ms: g.first_time_ms,
        to_ms,
    });
    let gone_whole = |g: &Generation| {
        plan.generations
            .iter()
            .any(|p| p.whole && p.generation == g.id)
    };
    plan.window_after = gens
        .iter()
        .find(|g| !gone_whole(g))
        .zip(to_ms)
        .map(|(g, to_ms)| {
            let cut = plan
                .generations
                .iter()
                .any(|p| !p.whole && p.generation == g.id);
            let from_ms = match &plan.kept {
                Some(k) if cut && k.generation == g.id => k.time_ms,
                _ => g.first_time_ms,
            };
            Window { from_ms, to_ms }
        });
    plan
}

/// [`plan_prune`] but the windows.
fn decide(catalog: &Catalog, now_ms: u64, policy: &Policy) -> PrunePlan {
    let mut plan = PrunePlan {
        retain_from_ms: policy
            .retain
            .map(|r| now_ms.saturating_sub(r.as_millis() as u64)),
        ..Default::default()
    };
    let gens = &catalog.generations;
    if policy.keeps_everything() || gens.is_empty() {
        return plan;
    }
    // Candidates for the kept point: (generation index, snapshot or none = the whole
    // generation). The oldest wins.
    let mut candidates: Vec<(usize, Option<&SnapshotInfo>, KeptBecause)> = Vec::new();
    // Always: the newest snapshot of the newest generation that has one.
    match gens.iter().enumerate().rev().find_map(|(i, g)| {
        usable(g)
            .max_by_key(|s| (s.offset, s.time_ms))
            .map(|s| (i, s))
    }) {
        Some((i, s)) => candidates.push((i, Some(s), KeptBecause::NewestSnapshot)),
        None => return plan,
    }
    if let Some(t0) = plan.retain_from_ms {
        if let Some((i, s)) = for_moment(catalog, t0) {
            candidates.push((i, s, KeptBecause::Retain));
        }
    }
    if let Some(n) = policy.retain_snapshots {
        let all: Vec<(usize, &SnapshotInfo)> = gens
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                let mut s: Vec<&SnapshotInfo> = usable(g).collect();
                s.sort_by_key(|s| (s.offset, s.time_ms));
                s.into_iter().map(move |s| (i, s))
            })
            .collect();
        match all.len().checked_sub(n.max(1)) {
            Some(k) => candidates.push((all[k].0, Some(all[k].1), KeptBecause::RetainSnapshots)),
            // Fewer snapshots than asked for: keep everything.
            None => candidates.push((0, None, KeptBecause::RetainSnapshots)),
        }
    }
    // The oldest candidate is the cut: (generation index, snapshot or none), with why.
    let key = |i: usize, s: Option<&SnapshotInfo>| (i, s.map(|s| (s.offset, s.time_ms)));
    let Some((gi, snap)) = candidates
        .iter()
        .map(|&(i, s, _)| (i, s))
        .min_by_key(|&(i, s)| key(i, s))
    else {
        return plan;
    };
    let mut because: Vec<KeptBecause> = candidates
        .iter()
        .filter(|c| key(c.0, c.1) == key(gi, snap))
        .map(|c| c.2)
        .collect();
    because.sort();
    because.dedup();
    let Some(snap) = snap else {
        // The kept point is the start of generation `gi`.
        plan.new_window_start_ms = Some(gens[gi].first_time_ms);
        plan_older(gens, gi, &mut plan);
        return plan;
    };
    plan.kept = Some(KeptPoint {
        generation: gens[gi].id,
        offset: snap.offset,
        time_ms: snap.time_ms,
        snapshot: snap.name,
        because,
    });
    plan.new_window_start_ms = Some(snap.time_ms);
    plan_older(gens, gi, &mut plan);
    let g = &gens[gi];
    if !g.problems.is_empty() {
        plan.problems.push(problem(g));
        return plan;
    }
    let segments: Vec<Listed> = g
        .objects
        .iter()
        .chain(&g.trimmed)
        .filter(|o| o.name.kind == ObjectKind::Segment && o.name.end <= snap.offset)
        .cloned()
        .collect();
    let snapshots: Vec<Listed> = g
        .objects
        .iter()
        .filter(|o| o.name.kind == ObjectKind::Snapshot && o.name.start < snap.offset)
        .cloned()
        .collect();
    if segments.is_empty() && snapshots.is_empty() {
        return plan;
    }
    // The snapshots first (see the module documentation).
    plan.generations
        .push(generation_prune(g.id, false, snapshots, segments));
    plan
}

/// What goes of generation `generation`: `first` then `then`, each oldest first (snapshots
/// by offset and time, segments by range and level).
fn generation_prune(
    generation: GenerationId,
    whole: bool,
    first: Vec<Listed>,
    then: Vec<Listed>,
) -> GenerationPrune {
    let oldest_first = |mut v: Vec<Listed>| {
        v.sort_by_key(|o| (o.name.start, o.name.end, o.name.level, o.name.first_ms));
        v
    };
    let mut delete = oldest_first(first);
    delete.extend(oldest_first(then));
    GenerationPrune {
        generation,
        whole,
        objects: delete.len() as u64,
        bytes: delete.iter().map(|o| o.size).sum(),
        delete,
    }
}

fn problem(g: &Generation) -> String {
    let first = g
        .problems
        .first()
        .map(|p| p.to_string())
        .unwrap_or_default();
    format!(
        "generation {} has problems, left alone (run pitr verify): {first}",
        g.id
    )
}

/// Every generation before `gi` goes whole, except those with problems.
fn plan_older(gens: &[Generation], gi: usize, plan: &mut PrunePlan) {
    for g in &gens[..gi] {
        if !g.problems.is_empty() {
            plan.problems.push(problem(g));
            continue;
        }
        let mut segments: Vec<Listed> = Vec::new();
        let mut snapshots: Vec<Listed> = Vec::new();
        for o in g.objects.iter().chain(&g.trimmed) {
            match o.name.kind {
                ObjectKind::Segment => segments.push(o.clone()),
                ObjectKind::Snapshot => snapshots.push(o.clone()),
            }
        }
        plan.generations
            .push(generation_prune(g.id, true, segments, snapshots));
    }
}

/// What [`apply`] deleted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Applied {
    pub objects_deleted: u64,
    pub bytes_deleted: u64,
}

/// Deletes what `plan` names, in its order, checking the lease before each delete. An object
/// already gone counts as deleted. Stops at the first store or lease error (what was deleted
/// until then is in the error's log line; the next pass plans again from a listing).
pub async fn apply(
    store: &Store,
    plan: &PrunePlan,
    lease: &LeaseGuard,
) -> Result<Applied, PruneError> {
    let mut done = Applied::default();
    for o in plan.deletions() {
        if plan.kept.as_ref().is_some_and(|k| k.snapshot == o.name) {
            // Never: the plan keeps it by construction.
            continue;
        }
        lease
            .wait_valid(&format!("the deletion of {} (retention)", o.name))
            .await?;
        match store.delete(&o.name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        done.objects_deleted += 1;
        done.bytes_deleted += o.size;
    }
    Ok(done)
}

/// Retention inside `pitr archive`: lists, plans and applies, for the archiver's loop.
pub async fn prune_pass(
    store: &Store,
    policy: &Policy,
    lease: &LeaseGuard,
    now_ms: u64,
) -> Result<(PrunePlan, Applied), PruneError> {
    let listing = store.list().await?;
    let catalog = Catalog::from_listing(&listing);
    let plan = plan_prune(&catalog, now_ms, policy);
    let done = apply(store, &plan, lease).await?;
    Ok((plan, done))
}

/// What a bucket lifecycle rule that expires objects by age may take without breaking the
/// retained window, at the time of the plan.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LifecycleAdvice {
    /// The oldest moment a kept object holds (its `last_ms`, or the snapshot's time): an
    /// object is stored no earlier than that, so a rule that takes only objects created
    /// before it takes no kept object.
    pub oldest_kept_ms: u64,
    /// The newest object a rule may take (by the time it holds), if any.
    pub newest_takeable: Option<String>,
    pub newest_takeable_ms: Option<u64>,
    /// Whole days: a rule "expire after this many days" is safe now.
    pub safe_days: u64,
}

/// [`LifecycleAdvice`] for `plan` over `catalog` at `now_ms`; `None` when nothing may go.
pub fn lifecycle(catalog: &Catalog, plan: &PrunePlan, now_ms: u64) -> Option<LifecycleAdvice> {
    let deleted: std::collections::HashSet<String> =
        plan.deletions().map(|o| o.name.to_string()).collect();
    let held = |o: &Listed| o.name.last_ms.max(o.name.first_ms);
    let oldest_kept = catalog
        .generations
        .iter()
        .flat_map(|g| g.objects.iter())
        .filter(|o| !deleted.contains(&o.name.to_string()))
        .map(held)
        .min()?;
    let newest = plan
        .deletions()
        .filter(|o| held(o) < oldest_kept)
        .max_by_key(|o| held(o))?;
    let day = 86_400_000u64;
    Some(LifecycleAdvice {
        oldest_kept_ms: oldest_kept,
        newest_takeable: Some(newest.name.to_string()),
        newest_takeable_ms: Some(held(newest)),
        safe_days: now_ms.saturating_sub(oldest_kept).div_ceil(day).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::store::test_listing::{seg, snap};
    use crate::archive::store::Listing;

    fn v2(mut o: Listed, level: u8) -> Listed {
        o.name = o.name.v2(level);
        o
    }

    fn seg2(g: u64, start: u64, end: u64, t0: u64, t1: u64) -> Listed {
        v2(seg(g, start, end, t0, t1, 'a'), 0)
    }

    fn seg2l(g: u64, start: u64, end: u64, t0: u64, t1: u64, l: u8) -> Listed {
        v2(seg(g, start, end, t0, t1, 'a'), l)
    }

    fn snap2(g: u64, off: u64, t: u64) -> Listed {
        v2(snap(g, off, t, 'a'), 0)
    }

    fn catalog(objects: Vec<Listed>) -> Catalog {
        Catalog::from_listing(&Listing {
            objects,
            foreign: vec![],
        })
    }

    fn retain(ms: u64) -> Policy {
        Policy {
            retain: Some(Duration::from_millis(ms)),
            retain_snapshots: None,
        }
    }

    fn names(plan: &PrunePlan) -> Vec<String> {
        plan.deletions().map(|o| o.name.to_string()).collect()
    }

    /// Generation 1: snapshot at 0 (t 1000), segments 0..10 (1001–1100), 10..20 (1101–1200),
    /// snapshot at 20 (t 1200, on a boundary), 20..30 (1201–1300), snapshot at 25 (t 1250,
    /// inside 20..30), 30..40 (1301–1400).
    fn one_generation() -> Vec<Listed> {
        vec![
            snap2(1, 0, 1000),
            seg2(1, 0, 10, 1001, 1100),
            seg2(1, 10, 20, 1101, 1200),
            snap2(1, 20, 1200),
            seg2(1, 20, 30, 1201, 1300),
            snap2(1, 25, 1250),
            seg2(1, 30, 40, 1301, 1400),
        ]
    }

    /// The restore plans of the moments `from..=to` (every ms) all succeed on the catalog left
    /// after the plan.
    fn restorable_after(objects: &[Listed], plan: &PrunePlan, from: u64, to: u64) -> Catalog {
        let gone: Vec<_> = plan.deletions().map(|o| o.name).collect();
        let left: Vec<Listed> = objects
            .iter()
            .filter(|o| !gone.contains(&o.name))
            .cloned()
            .collect();
        let c = catalog(left);
        for t in from..=to {
            crate::replay::plan::plan(&c, crate::replay::plan::Target::Time(t))
                .unwrap_or_else(|e| panic!("moment {t}: {e}"));
        }
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c
    }

    #[test]
    fn no_policy_removes_nothing() {
        let objects = one_generation();
        let p = plan_prune(&catalog(objects), 5000, &Policy::default());
        assert_eq!(p.objects(), 0);
        assert!(p.kept.is_none());
    }

    #[test]
    fn a_moment_exactly_at_the_window_start_stays_restorable() {
        let objects = one_generation();
        // T0 = 1200: the snapshot at 20 (t 1200) is at or before it.
        let p = plan_prune(&catalog(objects.clone()), 1400, &retain(200));
        assert_eq!(p.retain_from_ms, Some(1200));
        let k = p.kept.clone().unwrap();
        assert_eq!((k.offset, k.time_ms), (20, 1200));
        // The window asks for 20; the newest snapshot (25) is later.
        assert_eq!(k.because, [KeptBecause::Retain]);
        assert_eq!(p.new_window_start_ms, Some(1200));
        let w = |from_ms, to_ms| Some(Window { from_ms, to_ms });
        assert_eq!(p.window_before, w(1000, 1400));
        assert_eq!(p.window_after, w(1200, 1400));
        // The snapshot before the kept one first, then the segments.
        assert_eq!(
            names(&p),
            vec![
                objects[0].name.to_string(),
                objects[1].name.to_string(),
                objects[2].name.to_string()
            ]
        );
        let c = restorable_after(&objects, &p, 1200, 1400);
        assert_eq!(c.generations[0].base().unwrap().name, objects[3].name);
        // One ms earlier: the snapshot at 20 is after T0, so the base stays.
        let p = plan_prune(&catalog(objects.clone()), 1400, &retain(201));
        assert_eq!(p.objects(), 0);
        assert_eq!(p.kept.clone().unwrap().offset, 0);
        assert_eq!(p.window_after, p.window_before);
        assert_eq!(p.window_after, w(1000, 1400));
    }

    #[test]
    fn a_snapshot_inside_a_segment_is_a_cut_point() {
        let objects = one_generation();
        // T0 = 1260: the newest snapshot before it is at 25, inside 20..30: the cut is there,
        // the segment 20..30 stays and the generation starts at 25.
        let p = plan_prune(&catalog(objects.clone()), 1400, &retain(140));
        let kept = p.kept.clone().unwrap();
        assert_eq!((kept.offset, kept.time_ms), (25, 1250));
        assert_eq!(
            kept.because,
            [KeptBecause::Retain, KeptBecause::NewestSnapshot]
        );
        assert_eq!(p.new_window_start_ms, Some(1250));
        let c = restorable_after(&objects, &p, 1250, 1400);
        let g = &c.generations[0];
        assert_eq!((g.first_offset, g.first_time_ms), (25, 1250));
        assert!(g.chain_segments().next().unwrap().name.start == 20);
        // T0 past everything: the newest snapshot (25) is kept.
        let p = plan_prune(&catalog(objects.clone()), 100_000, &retain(1));
        assert_eq!(p.kept.clone().unwrap().offset, 25);
        assert_eq!(p.objects(), 4);
        // A crash at any point of that plan leaves no problem, and every moment from the
        // kept snapshot on restorable.
        let all: Vec<Listed> = p.deletions().cloned().collect();
        for done in 0..=all.len() {
            let left: Vec<Listed> = objects
                .iter()
                .filter(|o| !all[..done].contains(o))
                .cloned()
                .collect();
            let c = catalog(left);
            assert!(c.problems().is_empty(), "after {done}: {:?}", c.problems());
            for t in 1250..=1400 {
                crate::replay::plan::plan(&c, crate::replay::plan::Target::Time(t))
                    .unwrap_or_else(|e| panic!("after {done}, moment {t}: {e}"));
            }
        }
    }

    #[test]
    fn old_generations_go_whole_and_one_snapshot_always_stays() {
        let mut objects = one_generation();
        objects.extend([
            snap2(2, 0, 5000),
            seg2(2, 0, 10, 5001, 5100),
            seg2(2, 10, 20, 5101, 5200),
        ]);
        // The window starts inside generation 2: all of generation 1 goes, segments first.
        let p = plan_prune(&catalog(objects.clone()), 5200, &retain(150));
        assert_eq!(p.generations.len(), 1);
        let g = &p.generations[0];
        assert!(g.whole);
        assert_eq!(g.objects, 7);
        assert_eq!(g.delete[0].name.kind, ObjectKind::Segment);
        assert_eq!(g.delete[4].name, objects[0].name);
        assert_eq!(p.kept.clone().unwrap().generation, GenerationId(2));
        restorable_after(&objects, &p, 5050, 5200);
        // The window starts in the gap between the generations: the first one after it.
        let p = plan_prune(&catalog(objects.clone()), 5200, &retain(2000));
        assert_eq!(p.kept.clone().unwrap().generation, GenerationId(2));
        assert_eq!(p.objects(), 7);
        // A window of 1 ms long after the last write: still the newest snapshot and after.
        let p = plan_prune(&catalog(objects.clone()), 1_000_000, &retain(1));
        let k = p.kept.clone().unwrap();
        assert_eq!((k.generation, k.offset), (GenerationId(2), 0));
        let c = restorable_after(&objects, &p, 5000, 5200);
        assert_eq!(c.generations.len(), 1);
        // The window holding everything: nothing goes.
        let p = plan_prune(&catalog(objects.clone()), 5200, &retain(5000));
        assert_eq!(p.objects(), 0);
    }

    #[test]
    fn retain_snapshots_keeps_the_newest_n_and_the_more_conservative_wins() {
        let mut objects = one_generation();
        objects.extend([snap2(2, 0, 5000), seg2(2, 0, 10, 5001, 5100)]);
        let n = |n: usize| Policy {
            retain: None,
            retain_snapshots: Some(n),
        };
        // 1 snapshot: the one of generation 2, which is also the newest.
        let p = plan_prune(&catalog(objects.clone()), 6000, &n(1));
        let k = p.kept.clone().unwrap();
        assert_eq!(k.generation, GenerationId(2));
        assert_eq!(
            k.because,
            [KeptBecause::RetainSnapshots, KeptBecause::NewestSnapshot]
        );
        assert_eq!(p.objects(), 7);
        assert_eq!(p.window_before.unwrap().from_ms, 1000);
        assert_eq!(p.window_after.unwrap().from_ms, 5000);
        // 3: generation 2's, 25 and 20: the oldest is 20.
        let p = plan_prune(&catalog(objects.clone()), 6000, &n(3));
        let k = p.kept.clone().unwrap();
        assert_eq!((k.generation, k.offset), (GenerationId(1), 20));
        assert_eq!(k.because, [KeptBecause::RetainSnapshots]);
        restorable_after(&objects, &p, 1200, 1400);
        restorable_after(&objects, &p, 5000, 5100);
        // More than there are: everything stays.
        let p = plan_prune(&catalog(objects.clone()), 6000, &n(10));
        assert_eq!(p.objects(), 0);
        // With --retain: the older of the two.
        let both = Policy {
            retain: Some(Duration::from_millis(100)),
            retain_snapshots: Some(3),
        };
        let p = plan_prune(&catalog(objects.clone()), 5100, &both);
        assert_eq!(p.kept.clone().unwrap().offset, 20);
        let both = Policy {
            retain: Some(Duration::from_millis(4000)),
            retain_snapshots: Some(1),
        };
        let p = plan_prune(&catalog(objects.clone()), 5100, &both);
        assert_eq!(p.kept.clone().unwrap().offset, 0);
        assert_eq!(p.objects(), 0);
    }

    #[test]
    fn forked_generations_are_left_alone_and_reported() {
        let objects = vec![
            snap2(1, 0, 1000),
            snap2(1, 0, 1001),
            seg2(1, 0, 10, 1002, 1100),
            snap2(2, 0, 5000),
            seg2(2, 0, 10, 5001, 5100),
        ];
        let p = plan_prune(&catalog(objects.clone()), 6000, &retain(1));
        assert_eq!(p.objects(), 0);
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].contains("generation 0000000001"),
            "{:?}",
            p.problems
        );
        // A fork in the kept point's generation: nothing of it goes either.
        let objects = vec![
            snap2(1, 0, 1000),
            seg2(1, 0, 10, 1001, 1100),
            seg2(1, 0, 12, 1001, 1100),
            snap2(1, 10, 1150),
            seg2(1, 12, 20, 1101, 1200),
        ];
        let p = plan_prune(&catalog(objects), 6000, &retain(1));
        assert_eq!(p.objects(), 0);
        assert_eq!(p.problems.len(), 1);
    }

    #[test]
    fn covered_lower_levels_before_the_kept_point_go_too() {
        let objects = vec![
            snap2(1, 0, 1000),
            seg2l(1, 0, 20, 1001, 1200, 1),
            // Left by an interrupted compaction: covered by the level 1 object.
            seg2(1, 10, 20, 1101, 1200),
            snap2(1, 20, 1200),
            seg2(1, 20, 30, 1201, 1300),
            seg2l(1, 20, 40, 1201, 1400, 1),
            seg2(1, 30, 40, 1301, 1400),
        ];
        let p = plan_prune(&catalog(objects.clone()), 1400, &retain(150));
        assert_eq!(p.kept.clone().unwrap().offset, 20);
        assert_eq!(p.objects(), 3);
        restorable_after(&objects, &p, 1200, 1400);
    }

    #[test]
    fn the_report_sums_up_by_kind_and_level_and_lists_objects_only_when_asked() {
        let objects = vec![
            snap2(1, 0, 1000),
            seg2l(1, 0, 20, 1001, 1200, 1),
            seg2(1, 10, 20, 1101, 1200),
            snap2(1, 20, 1200),
            seg2(1, 20, 30, 1201, 1300),
            snap2(2, 0, 5000),
            seg2(2, 0, 10, 5001, 5100),
        ];
        let p = plan_prune(&catalog(objects.clone()), 5100, &retain(50));
        assert_eq!(p.objects(), 5);
        let kinds = p.generations[0].kinds();
        let summary: Vec<_> = kinds
            .iter()
            .map(|k| (k.kind, k.level, k.objects, k.first.clone(), k.last.clone()))
            .collect();
        let n = |i: usize| objects[i].name.to_string();
        assert_eq!(
            summary,
            [
                ("segment", Some(0), 2, n(2), n(4)),
                ("segment", Some(1), 1, n(1), n(1)),
                ("snapshot", None, 2, n(0), n(3)),
            ]
        );
        assert_eq!((kinds[0].from_ms, kinds[0].to_ms), (1101, 1300));
        assert_eq!((kinds[2].from_ms, kinds[2].to_ms), (1000, 1200));
        assert_eq!(kinds.iter().map(|k| k.objects).sum::<u64>(), p.objects());
        assert_eq!(kinds.iter().map(|k| k.bytes).sum::<u64>(), p.bytes());

        let short = serde_json::to_value(p.report(false)).unwrap();
        let g = &short["generations"][0];
        assert!(g.get("delete").is_none(), "{short:#}");
        assert_eq!(g["kinds"].as_array().unwrap().len(), 3, "{short:#}");
        assert_eq!(g["kinds"][2]["level"], serde_json::Value::Null);
        assert_eq!(short["objects"], 5);
        assert_eq!(short["kept"]["because"][0], "retain", "{short:#}");
        assert_eq!(short["window_before"]["from_ms"], 1000);
        assert_eq!(short["window_after"]["from_ms"], 5000);
        let long = serde_json::to_value(p.report(true)).unwrap();
        let listed: Vec<String> =
            serde_json::from_value(long["generations"][0]["delete"].clone()).unwrap();
        assert_eq!(listed, names(&p));
    }

    #[test]
    fn a_crash_midway_leaves_a_base_and_a_hole_never_a_fork() {
        let objects = one_generation();
        let p = plan_prune(&catalog(objects.clone()), 1400, &retain(200));
        let all: Vec<Listed> = p.deletions().cloned().collect();
        for done in 0..all.len() {
            let left: Vec<Listed> = objects
                .iter()
                .filter(|o| !all[..done].contains(o))
                .cloned()
                .collect();
            let c = catalog(left);
            assert!(c.problems().is_empty(), "after {done}: {:?}", c.problems());
            assert!(c.generations[0].base().is_some(), "after {done}");
            for t in 1200..=1400 {
                crate::replay::plan::plan(&c, crate::replay::plan::Target::Time(t))
                    .unwrap_or_else(|e| panic!("after {done}, moment {t}: {e}"));
            }
        }
    }

    #[test]
    fn lifecycle_advice_names_the_newest_object_a_rule_may_take() {
        let objects = one_generation();
        let c = catalog(objects.clone());
        let p = plan_prune(&c, 1400, &retain(200));
        let a = lifecycle(&c, &p, 1400).unwrap();
        assert_eq!(a.oldest_kept_ms, 1200);
        assert_eq!(a.newest_takeable.unwrap(), objects[1].name.to_string());
        assert_eq!(a.safe_days, 1);
        assert!(lifecycle(&c, &plan_prune(&c, 1400, &Policy::default()), 1400).is_none());
    }
}
