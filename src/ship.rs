//! `pitr ship`: copies an archive into another store (another region, another provider), so
//! that the copy restores exactly as the original does.
//!
//! A pass lists the source and the destination and copies every object the destination lacks:
//! oldest generation first; in a generation its snapshots, then its segments in offset order
//! (for one range the highest level first). Segments covered by a higher level on the source
//! (a compaction's grace) and segments that end before their generation's first snapshot (an
//! interrupted prune's leftovers) are needed by no restore and are not copied. Each object is
//! written, read back from the destination and checked with the code `pitr verify` uses
//! before the next one of its generation is written, so the destination always holds, per
//! generation, a contiguous prefix of the source's chain: a restore from it at any time during
//! the copy finds no hole, only a window that ends earlier. Reads from the source (and the
//! check of a segment's source bytes) run up to `parallel` ahead of the writes.
//!
//! An object already on the destination with the same name and size counts as shipped once it
//! was checked: by this process (it remembers what it wrote and checked), or at its first
//! sight by a read back: whole, and checked as a copy is, when it is at most
//! [`SMALL_OBJECT`] bytes (one GET either way); otherwise its header (with its header check)
//! and trailer by ranged GETs (see docs/format.md, "Shipping").
//!
//! Writes hold the destination's lease (as `ship`); the source is only read. With
//! `mirror_deletes`, objects gone from the source are deleted from the destination once what
//! replaces them is shipped and checked, or when they are older than the source's window.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::archive::catalog::Catalog;
use crate::archive::format::{self, Kind, SegmentHeader, SnapshotHeader};
use crate::archive::lease::{Lease, LeaseCommand, LeaseConfig, LeaseError, LeaseGuard};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName};
use crate::archive::scan::{self, Frontier};
use crate::archive::store::{Listed, Store, StoreError};
use crate::maintain::verify::{check_segment, Problem};

/// Objects read ahead of the writes by default.
pub const DEFAULT_PARALLEL: usize = 8;
/// Seconds between two rounds of `--follow` by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Every this many rounds of `--follow`, both archives are listed whole (the rounds between
/// list the source's newest partitions only).
pub const FULL_EVERY: u64 = 60;
/// Objects up to this size found on the destination unchecked are read back whole and checked
/// fully; larger ones by their header and trailer.
pub const SMALL_OBJECT: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// Objects read (and segments checked) from the source ahead of the writes.
    pub parallel: usize,
    /// Bytes per second over all copies (token bucket); `None`: no limit.
    pub max_rate: Option<u64>,
    /// Delete from the destination what the source no longer has (see the module).
    pub mirror_deletes: bool,
    /// How long a part of a large object's upload may keep failing.
    pub part_patience: Duration,
    /// Stop a pass after this many copies (tests: the destination of a pass cut short).
    pub max_copies: Option<u64>,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            parallel: DEFAULT_PARALLEL,
            max_rate: None,
            mirror_deletes: false,
            part_patience: Duration::from_secs(60),
            max_copies: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Lease(#[from] LeaseError),
}

/// How far the destination is behind the source, as of the end of a round.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Lag {
    /// Objects (and their stored bytes) listed on the source and not yet on the destination.
    pub objects: u64,
    pub bytes: u64,
    /// The newest source segment's last arrival minus the destination's, in seconds (0 when
    /// the destination has it).
    pub seconds: f64,
    pub source_newest_ms: Option<u64>,
    pub destination_newest_ms: Option<u64>,
}

/// Something that keeps an object from being shipped: a check that failed, naming the object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShipProblem {
    pub object: String,
    pub what: String,
}

impl std::fmt::Display for ShipProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What a pass (or a run of passes) did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShipReport {
    pub rounds: u64,
    /// Objects written to the destination (read back and checked).
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Objects already on the destination.
    pub objects_skipped: u64,
    pub bytes_skipped: u64,
    /// Objects read back from the destination and checked: every copy, and those found there
    /// that this process had not checked yet.
    pub objects_checked: u64,
    pub bytes_checked: u64,
    /// Objects deleted from the destination (`--mirror-deletes`).
    pub objects_deleted: u64,
    pub bytes_deleted: u64,
    pub errors: Vec<ShipProblem>,
    pub seconds: f64,
    pub lag: Lag,
}

impl ShipReport {
    fn add(&mut self, r: &ShipReport) {
        self.rounds += r.rounds;
        self.objects_copied += r.objects_copied;
        self.bytes_copied += r.bytes_copied;
        self.objects_skipped += r.objects_skipped;
        self.bytes_skipped += r.bytes_skipped;
        self.objects_checked += r.objects_checked;
        self.bytes_checked += r.bytes_checked;
        self.objects_deleted += r.objects_deleted;
        self.bytes_deleted += r.bytes_deleted;
        self.errors.extend(r.errors.iter().cloned());
        self.lag = r.lag;
    }
}

/// A token bucket of bytes per second, shared by every copy.
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` bytes: waits until the bucket holds them (or is full, for a take larger than
    /// its capacity of one second), then goes into debt for the rest.
    async fn take(&self, n: u64) {
        let n = n as f64;
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
                s.1 = now;
                let need = n.min(self.rate);
                if s.0 >= need {
                    s.0 -= n;
                    return;
                }
                (need - s.0) / self.rate
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.001))).await;
        }
    }
}

async fn take(bucket: &Option<Arc<Bucket>>, n: u64) {
    if let Some(b) = bucket {
        b.take(n).await;
    }
}

/// A source object read ahead of its write.
enum Ahead {
    /// A segment's bytes, checked.
    Segment(bytes::Bytes),
    /// A segment whose source bytes fail their check.
    Bad(Problem),
    /// A snapshot: streamed when it is its turn.
    Snapshot,
}

/// Ships one archive into another, pass after pass, remembering what it checked.
pub struct Shipper {
    src: Store,
    dst: Store,
    cfg: ShipConfig,
    bucket: Option<Arc<Bucket>>,
    /// What the destination holds (name → stored size), as listed and as this process changed it.
    dest: HashMap<String, (ObjectName, u64)>,
    dest_listed: bool,
    /// Objects on the destination this process checked.
    checked: HashSet<String>,
    frontier: Frontier,
    /// Source generations whose listing shows problems (forks, no snapshot): not shipped.
    bad_generations: HashSet<GenerationId>,
}

impl Shipper {
    pub fn new(src: Store, dst: Store, cfg: ShipConfig) -> Shipper {
        Shipper {
            bucket: cfg.max_rate.map(|r| Arc::new(Bucket::new(r))),
            src,
            dst,
            cfg,
            dest: HashMap::new(),
            dest_listed: false,
            checked: HashSet::new(),
            frontier: Frontier::default(),
            bad_generations: HashSet::new(),
        }
    }

    /// Forgets the destination's listing: the next pass lists it again (after an error, when
    /// what a write did is not known).
    pub fn relist(&mut self) {
        self.dest_listed = false;
    }

    /// One pass. `full`: list both archives whole (and apply `mirror_deletes`); otherwise the
    /// source's newest partitions only. Stops early, between two objects, when `stop` is
    /// cancelled. Check failures are in the report's `errors` (the rest of that generation
    /// waits for the next pass); store and lease errors end the pass.
    pub async fn pass(
        &mut self,
        guard: &LeaseGuard,
        full: bool,
        stop: &CancellationToken,
    ) -> Result<ShipReport, ShipError> {
        let started = Instant::now();
        let mut report = ShipReport {
            rounds: 1,
            ..Default::default()
        };
        if full || !self.dest_listed {
            let listing = match self.dst.list().await {
                Ok(l) => l.objects,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            self.dest = listing
                .iter()
                .map(|o| (o.name.to_string(), (o.name, o.size)))
                .collect();
            self.checked.retain(|n| self.dest.contains_key(n));
            self.dest_listed = true;
        }
        let full_source = full || self.frontier == Frontier::default();
        let objects = if full_source {
            let listing = self.src.list().await?;
            let catalog = Catalog::from_listing(&listing);
            self.bad_generations.clear();
            for g in &catalog.generations {
                let problems: Vec<String> = catalog
                    .problems()
                    .into_iter()
                    .filter(|p| {
                        g.objects
                            .iter()
                            .any(|o| p.objects.first() == Some(&o.name.to_string()))
                    })
                    .map(|p| p.to_string())
                    .collect();
                if !problems.is_empty() {
                    self.bad_generations.insert(g.id);
                    report.errors.push(ShipProblem {
                        object: format!("generation {}", g.id),
                        what: format!(
                            "not shipped: its listing on the source shows problems (run pitr verify on the source): {}",
                            problems.join("; ")
                        ),
                    });
                }
            }
            self.frontier = Frontier::of(&listing.objects);
            listing.objects
        } else {
            let (objects, frontier, _) = scan::newer(&self.src, &self.frontier).await?;
            self.frontier = frontier;
            objects
        };
        let wanted = select(&objects, &self.bad_generations);
        // The objects on the destination this process has not checked yet.
        let mut copy = Vec::new();
        let mut unchecked = Vec::new();
        for o in &wanted {
            match self.dest.get(&o.name.to_string()).map(|d| d.1) {
                None => copy.push(o.clone()),
                Some(size) if size != o.size => {
                    report.errors.push(ShipProblem {
                        object: o.name.to_string(),
                        what: format!(
                            "on the destination with {size} bytes, on the source with {}: another writer? (left alone)",
                            o.size
                        ),
                    });
                }
                Some(_) if self.checked.contains(&o.name.to_string()) => {
                    report.objects_skipped += 1;
                    report.bytes_skipped += o.size;
                }
                Some(_) => unchecked.push(o.clone()),
            }
        }
        // Objects found unchecked: checked in parallel (reads only); a bad one is deleted
        // and copied again below, in its place in the order.
        let dst = self.dst.clone();
        let found: Vec<(Listed, Result<(), String>)> =
            futures::stream::iter(unchecked.into_iter().map(|o| {
                let dst = dst.clone();
                async move {
                    let r = check_present(&dst, &o).await?;
                    Ok::<_, StoreError>((o, r))
                }
            }))
            .buffer_unordered(self.cfg.parallel.max(1))
            .try_collect()
            .await?;
        for (o, r) in found {
            report.objects_checked += 1;
            report.bytes_checked += o.size;
            match r {
                Ok(()) => {
                    self.checked.insert(o.name.to_string());
                    report.objects_skipped += 1;
                    report.bytes_skipped += o.size;
                }
                Err(what) => {
                    tracing::warn!(object = %o.name, problem = %what, "an object on the destination fails its check: deleting it and copying it again");
                    guard.wait_valid(&o.name.to_string()).await?;
                    self.dst.delete(&o.name).await?;
                    self.dest.remove(&o.name.to_string());
                    copy.push(o);
                }
            }
        }
        copy.sort_by_key(ship_order);
        self.copy_all(copy, guard, stop, &mut report).await?;
        if full_source && self.cfg.mirror_deletes && !stop.is_cancelled() {
            if report.errors.is_empty() {
                self.mirror_deletes(&objects, guard, &mut report).await?;
            } else {
                tracing::warn!(
                    "not mirroring deletes: this pass did not ship everything (see its errors)"
                );
            }
        }
        report.lag = self.lag(&wanted);
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Copies `copy` (in ship order): source reads run ahead, writes one at a time, each read
    /// back and checked before the next of its generation.
    async fn copy_all(
        &mut self,
        copy: Vec<Listed>,
        guard: &LeaseGuard,
        stop: &CancellationToken,
        report: &mut ShipReport,
    ) -> Result<(), ShipError> {
        let src = self.src.clone();
        let bucket = self.bucket.clone();
        let mut ahead = futures::stream::iter(copy.into_iter().map(|o| {
            let (src, bucket) = (src.clone(), bucket.clone());
            async move {
                if o.name.kind == ObjectKind::Snapshot {
                    return Ok::<_, StoreError>((o, Ahead::Snapshot));
                }
                take(&bucket, o.size).await;
                let bytes = src.get(&o.name).await?;
                let name = o.name;
                let b = bytes.clone();
                let checked =
                    tokio::task::spawn_blocking(move || check_segment(&name, &b, None).map(|_| ()))
                        .await
                        .expect("segment check panicked");
                Ok((
                    o,
                    match checked {
                        Ok(()) => Ahead::Segment(bytes),
                        Err(p) => Ahead::Bad(p),
                    },
                ))
            }
        }))
        .buffered(self.cfg.parallel.max(1));
        let mut failed: HashSet<GenerationId> = HashSet::new();
        let mut copies = 0u64;
        while let Some(next) = ahead.next().await {
            if stop.is_cancelled() || self.cfg.max_copies.is_some_and(|m| copies >= m) {
                break;
            }
            let (o, got) = next?;
            if failed.contains(&o.name.generation) {
                continue;
            }
            let name = o.name;
            guard.wait_valid(&name.to_string()).await?;
            let checked = match got {
                Ahead::Bad(p) => Err(format!(
                    "the source object fails its check (not copied; run pitr verify on the source): {}",
                    p.what
                )),
                Ahead::Segment(bytes) => {
                    self.dst.put_new(&name, bytes.clone()).await?;
                    self.dest.insert(name.to_string(), (name, o.size));
                    copies += 1;
                    let back = self.dst.get(&name).await?;
                    let same = back == bytes;
                    let r = tokio::task::spawn_blocking(move || {
                        check_segment(&name, &back, None).map(|_| ())
                    })
                    .await
                    .expect("segment check panicked");
                    match (r, same) {
                        (Err(p), _) => Err(format!("the copy fails its check: {}", p.what)),
                        (Ok(()), false) => {
                            Err("the copy reads back other bytes than the source's".into())
                        }
                        (Ok(()), true) => Ok(()),
                    }
                }
                Ahead::Snapshot => {
                    self.copy_snapshot(&o).await?;
                    self.dest.insert(name.to_string(), (name, o.size));
                    copies += 1;
                    check_snapshot(&self.dst, &name)
                        .await?
                        .map_err(|p| format!("the copy fails its check: {}", p.what))
                }
            };
            match checked {
                Ok(()) => {
                    self.checked.insert(name.to_string());
                    report.objects_copied += 1;
                    report.bytes_copied += o.size;
                    report.objects_checked += 1;
                    report.bytes_checked += o.size;
                    tracing::debug!(object = %name, bytes = o.size, "shipped");
                }
                Err(what) => {
                    tracing::error!(object = %name, problem = %what, "not shipped");
                    if self.dest.contains_key(&name.to_string()) {
                        // The bad copy goes; the rest of its generation waits for the next pass.
                        guard.wait_valid(&name.to_string()).await?;
                        self.dst.delete(&name).await?;
                        self.dest.remove(&name.to_string());
                    }
                    failed.insert(name.generation);
                    report.errors.push(ShipProblem {
                        object: name.to_string(),
                        what,
                    });
                }
            }
        }
        Ok(())
    }

    /// Streams a snapshot from the source into the destination, as its bytes are.
    async fn copy_snapshot(&self, o: &Listed) -> Result<(), StoreError> {
        let (_, mut stream) = self.src.get_stream(&o.name).await?;
        let mut up = self.dst.raw_upload(&o.name, self.cfg.part_patience).await?;
        loop {
            let piece = match stream.next().await {
                None => break,
                Some(Ok(p)) => p,
                Some(Err(source)) => {
                    up.abort().await;
                    return Err(StoreError::Backend {
                        op: "get",
                        object: format!("{}/{}", self.src.url().trim_end_matches('/'), o.name),
                        source,
                    });
                }
            };
            take(&self.bucket, piece.len() as u64).await;
            if let Err(e) = up.write(&piece).await {
                up.abort().await;
                return Err(e);
            }
        }
        up.finish().await.map(|_| ())
    }

    /// Deletes from the destination what the source no longer has and no restore of the
    /// source's window needs (see the module). `source`: a whole listing of the source.
    async fn mirror_deletes(
        &mut self,
        source: &[Listed],
        guard: &LeaseGuard,
        report: &mut ShipReport,
    ) -> Result<(), ShipError> {
        let on_source: HashSet<String> = source.iter().map(|o| o.name.to_string()).collect();
        let Some(oldest) = source.iter().map(|o| o.name.generation).min() else {
            // An empty source (a wrong --from or --name?) deletes nothing.
            return Ok(());
        };
        // Each source generation's first snapshot: its window starts there.
        let mut first_snapshot: HashMap<GenerationId, u64> = HashMap::new();
        for o in source
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Snapshot)
        {
            let e = first_snapshot.entry(o.name.generation).or_insert(u64::MAX);
            *e = (*e).min(o.name.start);
        }
        let source_gens: HashSet<GenerationId> = source.iter().map(|o| o.name.generation).collect();
        // What replaces an object: shipped, checked objects the source has, by generation.
        let replacements: Vec<ObjectName> = self
            .dest
            .iter()
            .filter(|(k, (n, _))| {
                n.kind == ObjectKind::Segment && on_source.contains(*k) && self.checked.contains(*k)
            })
            .map(|(_, (n, _))| *n)
            .collect();
        let covered = |d: &ObjectName| {
            replacements.iter().any(|c| {
                c.generation == d.generation
                    && c.level > d.level
                    && c.start <= d.start
                    && d.end <= c.end
            })
        };
        let mut gone: Vec<(ObjectName, u64)> = Vec::new();
        for (k, &(d, size)) in &self.dest {
            if on_source.contains(k) {
                continue;
            }
            let older_than_window = d.generation < oldest
                || (source_gens.contains(&d.generation)
                    && first_snapshot
                        .get(&d.generation)
                        .is_some_and(|&at| match d.kind {
                            ObjectKind::Segment => d.end <= at,
                            ObjectKind::Snapshot => d.start < at,
                        }));
            let replaced =
                d.kind == ObjectKind::Segment && source_gens.contains(&d.generation) && covered(&d);
            if older_than_window || replaced {
                gone.push((d, size));
            }
        }
        // As a prune deletes: oldest generation first; a generation that goes whole loses its
        // segments, then its snapshots; in a kept one, the snapshots go first.
        gone.sort_by_key(|(n, _)| {
            let whole = n.generation < oldest;
            let kind_first = match (whole, n.kind) {
                (true, ObjectKind::Segment) | (false, ObjectKind::Snapshot) => 0,
                _ => 1,
            };
            (n.generation, kind_first, n.start, n.level)
        });
        for (name, size) in gone {
            guard.wait_valid(&name.to_string()).await?;
            self.dst.delete(&name).await?;
            self.dest.remove(&name.to_string());
            self.checked.remove(&name.to_string());
            report.objects_deleted += 1;
            report.bytes_deleted += size;
            tracing::debug!(object = %name, "deleted: gone from the source");
        }
        Ok(())
    }

    /// The lag after a pass, from the source objects it listed.
    fn lag(&self, wanted: &[Listed]) -> Lag {
        let pending: Vec<&Listed> = wanted
            .iter()
            .filter(|o| !self.checked.contains(&o.name.to_string()))
            .collect();
        let newest = |it: &mut dyn Iterator<Item = &ObjectName>| {
            it.filter(|n| n.kind == ObjectKind::Segment)
                .map(|n| n.last_ms)
                .max()
        };
        let source_newest_ms = newest(&mut wanted.iter().map(|o| &o.name));
        let destination_newest_ms = newest(
            &mut self
                .dest
                .iter()
                .filter(|(k, _)| self.checked.contains(*k))
                .map(|(_, (n, _))| n),
        );
        let seconds = match (source_newest_ms, destination_newest_ms) {
            (Some(s), Some(d)) => s.saturating_sub(d) as f64 / 1000.0,
            (Some(s), None) => {
                let first = wanted.iter().map(|o| o.name.first_ms).min().unwrap_or(s);
                s.saturating_sub(first) as f64 / 1000.0
            }
            _ => 0.0,
        };
        Lag {
            objects: pending.len() as u64,
            bytes: pending.iter().map(|o| o.size).sum(),
            seconds,
            source_newest_ms,
            destination_newest_ms,
        }
    }
}

/// The order objects are shipped in: by generation, its snapshots first, then segments by
/// offset, for one start the highest level first.
fn ship_order(o: &Listed) -> impl Ord {
    let n = &o.name;
    let kind = match n.kind {
        ObjectKind::Snapshot => 0u8,
        ObjectKind::Segment => 1,
    };
    (
        n.generation,
        kind,
        n.start,
        std::cmp::Reverse(n.level),
        n.end,
        n.first_ms,
    )
}

/// The source objects a restore of the destination can need: every snapshot, and the segments
/// that are neither covered by a higher level listed beside them nor end at or before their
/// generation's first snapshot. Generations with problems, and those without a snapshot, are
/// left out.
pub fn select(objects: &[Listed], bad: &HashSet<GenerationId>) -> Vec<Listed> {
    let mut first_snapshot: HashMap<GenerationId, u64> = HashMap::new();
    // Per generation and level, the ranges of its segments, by start.
    let mut ranges: HashMap<(GenerationId, u8), Vec<(u64, u64)>> = HashMap::new();
    for o in objects {
        let n = &o.name;
        match n.kind {
            ObjectKind::Snapshot => {
                let e = first_snapshot.entry(n.generation).or_insert(u64::MAX);
                *e = (*e).min(n.start);
            }
            ObjectKind::Segment => ranges
                .entry((n.generation, n.level))
                .or_default()
                .push((n.start, n.end)),
        }
    }
    for r in ranges.values_mut() {
        r.sort();
    }
    let covered = |n: &ObjectName| {
        (n.level + 1..=9).any(|level| {
            ranges.get(&(n.generation, level)).is_some_and(|r| {
                let i = r.partition_point(|&(s, _)| s <= n.start);
                i > 0 && r[i - 1].1 >= n.end
            })
        })
    };
    let mut out: Vec<Listed> = objects
        .iter()
        .filter(|o| !bad.contains(&o.name.generation))
        .filter(|o| {
            let n = &o.name;
            let Some(&first) = first_snapshot.get(&n.generation) else {
                return false;
            };
            match n.kind {
                ObjectKind::Snapshot => true,
                ObjectKind::Segment => n.version < 2 || (n.end > first && !covered(n)),
            }
        })
        .cloned()
        .collect();
    out.sort_by_key(ship_order);
    out
}

/// Checks an object found on the destination (not written by this process): whole when it
/// is small, otherwise its header and trailer. `Err` says what is wrong with it.
async fn check_present(dst: &Store, o: &Listed) -> Result<Result<(), String>, StoreError> {
    let name = o.name;
    if o.size <= SMALL_OBJECT {
        return Ok(match name.kind {
            ObjectKind::Segment => {
                let bytes = dst.get(&name).await?;
                tokio::task::spawn_blocking(move || check_segment(&name, &bytes, None).map(|_| ()))
                    .await
                    .expect("segment check panicked")
                    .map_err(|p| p.to_string())
            }
            ObjectKind::Snapshot => check_snapshot(dst, &name).await?.map_err(|p| p.to_string()),
        });
    }
    let size = o.size;
    let head_len = size.min(64 << 10);
    let mut head = dst.get_range(&name, 0..head_len).await?.to_vec();
    let pre = match format::parse_preamble(&head) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Err("shorter than its preamble".into())),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let body_start = pre.body_start() as u64;
    if body_start + format::TRAILER_LEN as u64 > size {
        return Ok(Err("ends before its trailer".into()));
    }
    if body_start > head_len {
        head = dst.get_range(&name, 0..body_start).await?.to_vec();
    }
    if let Err(e) = pre.check_header(&head) {
        return Ok(Err(e.to_string()));
    }
    let tail = dst
        .get_range(&name, size - format::TRAILER_LEN as u64..size)
        .await?;
    if &tail[24..32] != format::TRAILER_MAGIC {
        return Ok(Err("no trailer magic at its end".into()));
    }
    let raw_len = u64::from_le_bytes(tail[0..8].try_into().expect("8 bytes"));
    let hr = pre.header.clone();
    let agrees = match (pre.kind, name.kind) {
        (Kind::Segment, ObjectKind::Segment) => {
            match SegmentHeader::decode(&head[hr.clone()], hr.start, pre.version) {
                Ok(h) => {
                    let body: u64 = h.frames.iter().map(|f| f.stored).sum();
                    h.matches(&name)
                        && raw_len == h.end - h.start
                        && (h.frames.is_empty()
                            || body == size - body_start - format::TRAILER_LEN as u64)
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        (Kind::Snapshot, ObjectKind::Snapshot) => {
            match SnapshotHeader::decode(&head[hr.clone()], hr.start, pre.version) {
                Ok(h) => {
                    h.generation == name.generation
                        && pre.version == name.version
                        && h.offset == name.start
                        && h.time_ms == name.first_ms
                        && h.replid == name.replid
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        _ => false,
    };
    Ok(if agrees {
        Ok(())
    } else {
        Err("its header or trailer disagrees with its name or size".into())
    })
}

/// Streams a snapshot and checks it as `pitr verify` does: frame, checksums, and the RDB
/// inside parsed whole.
async fn check_snapshot(
    store: &Store,
    name: &ObjectName,
) -> Result<Result<(), Problem>, StoreError> {
    Ok(crate::maintain::verify::check_snapshot_named(store, *name)
        .await?
        .map(drop))
}

/// How a run goes on after its first pass.
#[derive(Clone, Copy, Debug)]
pub struct Follow {
    /// Time between two rounds.
    pub interval: Duration,
}

/// How often [`keep_copy`] ships what is new.
pub const KEEP_COPY_EVERY: Duration = Duration::from_secs(5);

/// `pitr archive --also-to`: a shipper beside an archiver (as `pitr ship --follow
/// --mirror-deletes`, a round every [`KEEP_COPY_EVERY`], under the copy's own lease) until
/// `stop`, then one last round for what the archiver wrote last. A failure of the copy never
/// stops the archiver: it is logged, counted (`pitr_ship_errors` in the source's metrics),
/// and tried again 30 s later.
pub async fn keep_copy(src: Store, dst: Store, lease: LeaseConfig, stop: CancellationToken) {
    let cfg = ShipConfig {
        mirror_deletes: true,
        ..ShipConfig::default()
    };
    let to = crate::archive::store::redact_store_url(dst.url());
    tracing::info!(to = %to, "--also-to: keeping a copy of the archive");
    while !stop.is_cancelled() {
        let follow = Some(Follow {
            interval: KEEP_COPY_EVERY,
        });
        let round = run(
            src.clone(),
            dst.clone(),
            cfg.clone(),
            lease,
            follow,
            stop.clone(),
            |_| {},
        );
        if let Err(e) = round.await {
            tracing::warn!(to = %to, error = %e, "--also-to: the copy stopped; trying again in 30 s");
            src.metrics().ship_round_failed(e.to_string());
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }
    let last = run(src, dst, cfg, lease, None, CancellationToken::new(), |_| {});
    match last.await {
        Ok(r) => {
            tracing::info!(to = %to, copied = r.objects_copied, "--also-to: the copy is up to date")
        }
        Err(e) => {
            tracing::warn!(to = %to, error = %e, "--also-to: the last round failed; run pitr ship to finish the copy")
        }
    }
}

/// Takes the destination's lease (as `ship`) and ships: one pass, or with `follow` a round
/// every interval until `stop` is cancelled. `on_round` sees each round's report. Returns the
/// sum of the rounds (its `lag` the last round's). A store error in a round of `follow` is
/// logged and the next round lists both archives again; a lease error ends the run.
pub async fn run(
    src: Store,
    dst: Store,
    cfg: ShipConfig,
    lease: LeaseConfig,
    follow: Option<Follow>,
    stop: CancellationToken,
    mut on_round: impl FnMut(&ShipReport),
) -> Result<ShipReport, ShipError> {
    let started = Instant::now();
    dst.create_root().await?;
    let lease = Lease::acquire(&dst, LeaseCommand::Ship, lease).await?;
    let guard = lease.guard();
    let (_vouch, vouched) = tokio::sync::watch::channel(None);
    let keep_stop = CancellationToken::new();
    let mut keeper = tokio::spawn(lease.keep(vouched, keep_stop.clone()));
    // Counted with the source archive's metrics (a cluster shard's own, under `--also-to`).
    let metrics = src.metrics_handle();
    let mut shipper = Shipper::new(src, dst, cfg);
    let mut total = ShipReport::default();
    let mut round = 0u64;
    let mut keeper_done = false;
    let result: Result<(), ShipError> = loop {
        let full = round % FULL_EVERY == 0;
        round += 1;
        match shipper.pass(&guard, full, &stop).await {
            Ok(r) => {
                tracing::info!(
                    round,
                    copied = r.objects_copied,
                    bytes_copied = r.bytes_copied,
                    skipped = r.objects_skipped,
                    checked = r.objects_checked,
                    deleted = r.objects_deleted,
                    errors = r.errors.len(),
                    lag_objects = r.lag.objects,
                    lag_bytes = r.lag.bytes,
                    lag_seconds = r.lag.seconds,
                    "ship round"
                );
                metrics.ship_round(
                    r.objects_copied,
                    r.bytes_copied,
                    r.errors.len() as u64,
                    (r.lag.objects, r.lag.bytes, r.lag.seconds),
                );
                on_round(&r);
                total.add(&r);
            }
            Err(ShipError::Store(e)) if follow.is_some() => {
                tracing::warn!(error = %e, "ship round failed; trying again next round");
                metrics.ship_round_failed(e.to_string());
                shipper.relist();
            }
            Err(e) => break Err(e),
        }
        let Some(f) = follow else { break Ok(()) };
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            _ = tokio::time::sleep(f.interval) => {}
            r = &mut keeper => {
                keeper_done = true;
                break Err(match r {
                    Ok(Err(e)) => e.into(),
                    _ => LeaseError::NotHeld {
                        object: "lease".into(),
                        writing: "the next round".into(),
                    }
                    .into(),
                })
            }
        }
        if guard.is_gone() {
            break Err(guard.check(&"the next round").unwrap_err().into());
        }
    };
    keep_stop.cancel();
    if !keeper_done {
        match keeper.await {
            Ok(Ok(lease)) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!(error = %e, "could not release the lease: it expires on its own");
                }
            }
            Ok(Err(e)) => {
                result?;
                return Err(e.into());
            }
            Err(_) => {}
        }
    }
    result?;
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::archive::names::ArchiveName;
    use crate::maintain::verify::test_objects::{segment, snapshot};
    use crate::replay::plan::{plan, Target};

    fn memory() -> Store {
        Store::open("memory://", &"default".parse::<ArchiveName>().unwrap()).unwrap()
    }

    /// Two generations, the second with a scheduled-less chain of segments.
    async fn source() -> Store {
        let src = memory();
        for g in 1..=2u64 {
            let t0 = 1_796_000_000_000 + g * 100_000;
            let (_, mut sum) = snapshot(&src, g, 0, t0).await;
            let mut at = 0;
            for i in 0..6u64 {
                let (n, s) = segment(&src, g, at, 3, t0 + 1000 * (i + 1), sum).await;
                (at, sum) = (n.end, s);
            }
        }
        src
    }

    /// A pass cut short after any number of copies leaves the destination a contiguous
    /// prefix: no holes or problems in its catalog, and `latest` plans without a hole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_cut_short_anywhere_leaves_a_restorable_prefix() {
        let src = source().await;
        let total = src.list().await.unwrap().objects.len() as u64;
        for k in 1..=total {
            let dst = memory();
            let lease = Lease::acquire(&dst, LeaseCommand::Ship, LeaseConfig::default())
                .await
                .unwrap();
            let cfg = ShipConfig {
                max_copies: Some(k),
                parallel: 3,
                ..ShipConfig::default()
            };
            let mut s = Shipper::new(src.clone(), dst.clone(), cfg);
            let r = s
                .pass(&lease.guard(), true, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(r.objects_copied, k);
            assert_eq!(r.lag.objects, total - k);
            let catalog = Catalog::from_listing(&dst.list().await.unwrap());
            assert!(
                catalog.problems().is_empty(),
                "after {k}: {:?}",
                catalog.problems()
            );
            for g in &catalog.generations {
                assert!(g.is_contiguous(), "after {k}: {:?}", g.holes);
            }
            let p = plan(&catalog, Target::Latest).unwrap();
            assert_eq!(p.generation.0, if k <= 7 { 1 } else { 2 });
            // Run to the end: nothing copied twice.
            let mut s2 = Shipper::new(src.clone(), dst.clone(), ShipConfig::default());
            let rest = s2
                .pass(&lease.guard(), true, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!((rest.objects_copied, rest.objects_skipped), (total - k, k));
            lease.release().await.unwrap();
        }
    }

    #[test]
    fn covered_and_trimmed_segments_are_not_selected() {
        use crate::archive::store::test_listing::{seg, snap};
        let mut l1 = seg(1, 100, 200, 1100, 1300, 'a');
        l1.name = l1.name.v2(1);
        let objects: Vec<Listed> = [
            snap(1, 100, 1000, 'a'),
            seg(1, 50, 100, 900, 950, 'a'),
            seg(1, 100, 150, 1100, 1150, 'a'),
            seg(1, 150, 200, 1200, 1300, 'a'),
            seg(1, 200, 250, 1400, 1500, 'a'),
        ]
        .into_iter()
        .map(|mut o| {
            o.name = o.name.v2(0);
            o
        })
        .chain([l1])
        .collect();
        let picked: Vec<(u64, u64, u8)> = select(&objects, &HashSet::new())
            .iter()
            .map(|o| (o.name.start, o.name.end, o.name.level))
            .collect();
        assert_eq!(picked, vec![(100, 100, 0), (100, 200, 1), (200, 250, 0)]);
        let bad: HashSet<GenerationId> = [GenerationId(1)].into();
        assert!(select(&objects, &bad).is_empty());
    }

    #[tokio::test]
    async fn the_bucket_paces_bytes() {
        let b = Bucket::new(100_000);
        let t = Instant::now();
        for _ in 0..4 {
            b.take(50_000).await;
        }
        // 200 kB at 100 kB/s, the first 100 kB from the full bucket.
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
}
