//! Compaction: runs of small segments become fewer, larger objects that hold exactly the same
//! bytes, time marks and stream sums (`docs/format.md`, "Level"). At a 1 s flush a day is
//! 86,400 level 0 segments; each restore or verify reads them with a GET each and every
//! listing grows with them. Level `k + 1` gathers the objects of levels up to `k` whose
//! `first_ms` falls in one aligned UTC window of that level's span (`--compaction-levels`,
//! default `1m,1h,24h`), so that an old day is one object and the last hour a few dozen.
//!
//! Plan, then act: [`plan_level`] is a pure function of a generation's objects, the time and
//! the settings; [`compact_run`] writes one object and removes what it replaces. The order of
//! writes is what keeps a crash harmless: the new object is put (create-only), read back and
//! checked against what was built, and only then are the objects it replaces deleted, one by
//! one. A crash leaves the old objects, or the new one beside some or all of them (equal bytes;
//! readers prefer the higher level), never neither. The next pass finds such leftovers
//! ([`Plan::covered`]): objects inside the range of a higher-level object are checked against
//! it, byte for byte, and deleted.
//!
//! A window is compacted when:
//!
//! - it is closed: its end is older than now minus [`CompactConfig::settle`], and the
//!   generation has an object that arrived after the window (so nothing more can fall in it);
//! - its objects form one contiguous run (each `end` the next `start`), also with the objects
//!   just before and after it, and none is already at the target level or above;
//! - it has more than one object. A window holding a single lower-level object is left alone:
//!   rewriting it would cost a GET, a PUT and a DELETE to produce the same bytes under another
//!   name, and save nothing in object count. The next level's window takes it in with its
//!   neighbours, and readers use objects of any level.
//!
//! A window is cut into several runs where the replication id changes (a failover: a name
//! carries one replication id, so no object spans the change), where arrival times go back
//! (a clock stepped back: marks must not decrease), and where the raw bytes would pass
//! [`CompactConfig::max_run_raw`].
//!
//! Memory: a run is read with [`OrderedFetch`] (at most its byte budget ahead, 64 MiB by
//! default) and compressed object by object into frames ([`FramedSegment`]): raw bytes are never
//! joined. What is held is the compressed object being built (at most `max_run_raw` plus zstd's
//! overhead for incompressible bytes) and the budget of objects fetched ahead; then, for the
//! read-back check, the object as stored and its raw bytes. So a run costs at most about
//! `2 × max_run_raw + 64 MiB`, 576 MiB at the default 256 MiB, and far less for compressible
//! streams (the stored object is a fraction of the raw bytes).

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::archive::catalog::Catalog;
use crate::archive::fetch::{FetchConfig, OrderedFetch, Wanted};
use crate::archive::format::{
    self, FramedSegment, Link, Segment, SegmentHeader, SegmentParts, TimeMark,
};
use crate::archive::frames::FRAME_RAW;
use crate::archive::lease::{LeaseError, LeaseGuard};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName, MAX_LEVEL};
use crate::archive::store::{Listed, Listing, Store, StoreError};
use crate::maintain::prune;

/// The levels by default: minutes, hours, days.
pub const DEFAULT_LEVELS: &str = "1m,1h,24h";
/// The raw bytes of one run at most, by default.
pub const DEFAULT_MAX_RUN_RAW: u64 = 256 << 20;
/// How long after a window's end it may be compacted, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// How often the archiver runs a pass.
pub const PASS_INTERVAL: Duration = Duration::from_secs(10);

/// The span of each level from 1 on (`--compaction-levels`): `1m,1h,24h`, or `off` (none).
/// Each span is a whole number of seconds and a multiple of the one before, so that windows
/// nest: a level `k + 1` window holds whole level `k` windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels(Vec<Duration>);

impl Levels {
    /// No compaction.
    pub fn off() -> Levels {
        Levels(Vec::new())
    }

    pub fn is_off(&self) -> bool {
        self.0.is_empty()
    }

    /// The spans of levels 1, 2, … in order.
    pub fn spans(&self) -> &[Duration] {
        &self.0
    }

    /// The span of `level` (from 1), if it is one of these levels.
    pub fn span(&self, level: u8) -> Option<Duration> {
        usize::from(level)
            .checked_sub(1)
            .and_then(|i| self.0.get(i))
            .copied()
    }
}

impl Default for Levels {
    fn default() -> Self {
        DEFAULT_LEVELS.parse().unwrap_or_else(|_| Levels::off())
    }
}

impl FromStr for Levels {
    type Err = String;
    fn from_str(s: &str) -> Result<Levels, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Levels::off());
        }
        let mut spans: Vec<Duration> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let d = humantime::parse_duration(part).map_err(|e| format!("{part:?}: {e}"))?;
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                return Err(format!("{part:?}: a whole number of seconds, at least 1s"));
            }
            if let Some(prev) = spans.last() {
                if d <= *prev || d.as_secs() % prev.as_secs() != 0 {
                    return Err(format!(
                        "{part:?}: each level's span must be a multiple of the one before ({})",
                        humantime::format_duration(*prev)
                    ));
                }
            }
            spans.push(d);
        }
        if spans.len() > usize::from(MAX_LEVEL) {
            return Err(format!("at most {MAX_LEVEL} levels"));
        }
        Ok(Levels(spans))
    }
}

impl std::fmt::Display for Levels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// How compaction runs.
#[derive(Clone, Debug)]
pub struct CompactConfig {
    pub levels: Levels,
    /// Raw bytes of one run at most: a larger window is cut into several runs. Bounds memory
    /// (see the module documentation).
    pub max_run_raw: u64,
    /// Raw bytes per zstd frame of a compacted object.
    pub frame_raw: usize,
    /// How long after its end a window may be compacted.
    pub settle: Duration,
    /// GETs in flight, and bytes fetched ahead, while a run is read.
    pub fetch: FetchConfig,
    /// How long the objects a run replaced stay after the new object is written and checked,
    /// so that a restore that listed them before can still read them (zero: deleted at once).
    /// The pass that wrote them deletes them once it is over, keeping them in its [`Skip`].
    pub grace: Duration,
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            levels: Levels::default(),
            max_run_raw: DEFAULT_MAX_RUN_RAW,
            frame_raw: FRAME_RAW,
            settle: DEFAULT_SETTLE,
            fetch: FetchConfig::default(),
            grace: Duration::ZERO,
        }
    }
}

/// The grace `pitr archive` gives replaced objects (`--compaction-grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lease is gone: nothing more is written or deleted.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// An object of a run that fails its checks (its bytes, its name, its chain to the one
    /// before). Nothing was written or deleted for that run.
    #[error("compaction: object {object}: {what}")]
    Object { object: String, what: String },
    /// The object written does not read back as what was built. The objects it was to
    /// replace are kept.
    #[error("compaction: the object written, {object}, does not read back as built: {what}; the objects it was to replace are kept")]
    ReadBack { object: String, what: String },
    /// A run that is not one (objects not consecutive, of several generations, …).
    #[error("compaction: not a run: {0}")]
    NotARun(String),
}

impl CompactError {
    fn object(name: &ObjectName, what: impl Into<String>) -> CompactError {
        CompactError::Object {
            object: name.to_string(),
            what: what.into(),
        }
    }

    /// Whether it is about the archive's content (one run's objects), so that a pass can go
    /// on with the other runs.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            CompactError::Object { .. } | CompactError::ReadBack { .. } | CompactError::NotARun(_)
        )
    }
}

/// Objects written at one level.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LevelCount {
    pub level: u8,
    pub objects: u64,
    /// Stored bytes.
    pub bytes: u64,
}

/// What a pass did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub generations: usize,
    /// Objects read (GETs), and their stored bytes.
    pub objects_read: u64,
    pub bytes_read: u64,
    /// Objects written, per level.
    pub written: Vec<LevelCount>,
    /// Objects deleted (replaced by what was written, or by an earlier pass's object), and
    /// their stored bytes.
    pub objects_deleted: u64,
    pub bytes_deleted: u64,
    /// Raw stream bytes in the objects written.
    pub raw_bytes: u64,
    /// Runs not compacted because of their content, and generations skipped, with why.
    pub problems: Vec<String>,
}

impl Report {
    fn wrote(&mut self, level: u8, bytes: u64) {
        match self.written.iter_mut().find(|c| c.level == level) {
            Some(c) => {
                c.objects += 1;
                c.bytes += bytes;
            }
            None => {
                self.written.push(LevelCount {
                    level,
                    objects: 1,
                    bytes,
                });
                self.written.sort_by_key(|c| c.level);
            }
        }
    }

    /// Objects written at every level.
    pub fn objects_written(&self) -> u64 {
        self.written.iter().map(|c| c.objects).sum()
    }
}

/// One run to compact: consecutive objects, all below `level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub level: u8,
    pub objects: Vec<Listed>,
}

/// Objects whose range lies inside a higher-level object's: what an interrupted compaction
/// left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Covered {
    pub by: Listed,
    pub objects: Vec<Listed>,
}

/// A generation's version 2 segments, sorted: those that cover their range at the highest
/// level present (`objects`), and those a higher-level object covers (`covered`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub generation: GenerationId,
    pub objects: Vec<Listed>,
    pub covered: Vec<Covered>,
    /// Why the generation is not compacted at all (overlapping objects: a fork).
    pub refused: Option<String>,
}

/// Sorts a generation's version 2 segments into the objects to work with and the leftovers
/// of interrupted compactions (`segments` of one generation, in any order).
pub fn sort_out(generation: GenerationId, segments: &[Listed]) -> Plan {
    let mut all: Vec<Listed> = segments
        .iter()
        .filter(|o| {
            o.name.kind == ObjectKind::Segment
                && o.name.version >= 2
                && o.name.generation == generation
        })
        .cloned()
        .collect();
    all.sort_by_key(|o| o.name.sort_key());
    // Per level, the objects in offset order (within a level they do not overlap).
    let mut by_level: Vec<Vec<&Listed>> = vec![Vec::new(); usize::from(MAX_LEVEL) + 1];
    for o in &all {
        by_level[usize::from(o.name.level)].push(o);
    }
    let covering = |o: &Listed| -> Option<Listed> {
        for level in (usize::from(o.name.level) + 1..by_level.len()).rev() {
            let l = &by_level[level];
            let i = l.partition_point(|h| h.name.start <= o.name.start);
            if let Some(h) = i.checked_sub(1).map(|i| l[i]) {
                if h.name.end >= o.name.end {
                    return Some(h.clone());
                }
            }
        }
        None
    };
    let mut plan = Plan {
        generation,
        ..Default::default()
    };
    for o in &all {
        match covering(o) {
            Some(by) => match plan.covered.iter_mut().find(|c| c.by == by) {
                Some(c) => c.objects.push(o.clone()),
                None => plan.covered.push(Covered {
                    by,
                    objects: vec![o.clone()],
                }),
            },
            None => plan.objects.push(o.clone()),
        }
    }
    if let Some(w) = plan
        .objects
        .windows(2)
        .find(|w| w[1].name.start < w[0].name.end)
    {
        plan.refused = Some(format!(
            "generation {generation}: objects {} and {} overlap (a fork: run pitr verify); not compacting it",
            w[0].name, w[1].name
        ));
    }
    plan
}

/// The runs to compact into `level` among `objects` (a generation's objects at the highest
/// level of each range, in offset order, as [`sort_out`] leaves them), at `now_ms`. Pure.
pub fn plan_level(objects: &[Listed], level: u8, now_ms: u64, cfg: &CompactConfig) -> Vec<Run> {
    let Some(span) = cfg.levels.span(level) else {
        return Vec::new();
    };
    let span_ms = span.as_millis().max(1) as u64;
    let settle_ms = cfg.settle.as_millis() as u64;
    let window = |o: &Listed| o.name.first_ms / span_ms;
    let mut runs = Vec::new();
    let mut i = 0;
    while i < objects.len() {
        let w = window(&objects[i]);
        let mut j = i + 1;
        while j < objects.len() && window(&objects[j]) == w {
            j += 1;
        }
        let group = &objects[i..j];
        let before = i.checked_sub(1).map(|p| &objects[p]);
        let after = objects.get(j);
        i = j;
        let end_ms = (w + 1).saturating_mul(span_ms);
        // Closed: its end has passed, and something arrived after it.
        let closed =
            end_ms.saturating_add(settle_ms) <= now_ms && after.is_some_and(|a| window(a) > w);
        let contiguous = group.windows(2).all(|p| p[0].name.end == p[1].name.start)
            && before.is_none_or(|b| b.name.end == group[0].name.start)
            && after.is_some_and(|a| a.name.start == group[group.len() - 1].name.end);
        let below = group.iter().all(|o| o.name.level < level);
        if group.len() < 2 || !closed || !contiguous || !below {
            continue;
        }
        // Cut where the replication id changes, where time goes back, and by size.
        let mut run: Vec<Listed> = Vec::new();
        let mut raw = 0u64;
        for o in group {
            let len = o.name.end - o.name.start;
            let cut = run.last().is_some_and(|p: &Listed| {
                p.name.replid != o.name.replid
                    || p.name.last_ms > o.name.first_ms
                    || raw + len > cfg.max_run_raw
            });
            if cut {
                if run.len() > 1 {
                    runs.push(Run {
                        level,
                        objects: std::mem::take(&mut run),
                    });
                }
                run.clear();
                raw = 0;
            }
            raw += len;
            run.push(o.clone());
        }
        if run.len() > 1 {
            runs.push(Run {
                level,
                objects: run,
            });
        }
    }
    runs
}

/// What [`compact_run`] wrote and removed.
#[derive(Clone, Debug)]
pub struct RunDone {
    pub written: Listed,
    pub replaced: Vec<Listed>,
    /// The replaced objects are still there: they go once the grace has passed.
    pub deferred: bool,
    /// Stored bytes read (the run, and the new object read back).
    pub bytes_read: u64,
    /// GETs made.
    pub objects_read: u64,
    pub raw_bytes: u64,
}

/// A run's object, decoded and checked alone (on a blocking thread).
fn decode_alone(name: &ObjectName, bytes: &[u8]) -> Result<Segment, String> {
    let seg = format::decode_segment(bytes).map_err(|e| e.to_string())?;
    if !seg.header.matches(name) {
        return Err("its header disagrees with its name".into());
    }
    if seg.header.version() < 2 {
        return Err("format version 1 is never compacted".into());
    }
    Ok(seg)
}

fn wanted(objects: &[Listed]) -> Vec<Wanted> {
    objects
        .iter()
        .map(|o| Wanted {
            name: o.name,
            stored: o.size,
            raw: o.name.end.saturating_sub(o.name.start),
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    what: &ObjectName,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CompactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CompactError::object(what, format!("the check failed: {e}")))
}

/// Compacts `objects` (consecutive version 2 segments of one generation, under one
/// replication id, each below `level`) into one object at `level`: reads and checks each
/// (its bytes, its name, its chain to the one before), writes the object of their
/// concatenation (raw bytes, every time mark, the sums at both ends), reads it back, and only
/// once it decodes to the same bytes and sums deletes them. The lease is checked before the
/// put and before each delete.
pub async fn compact_run(
    store: &Store,
    objects: &[Listed],
    level: u8,
    lease: &LeaseGuard,
    cfg: &CompactConfig,
) -> Result<RunDone, CompactError> {
    let (Some(first), Some(last)) = (objects.first(), objects.last()) else {
        return Err(CompactError::NotARun("no objects".into()));
    };
    if level == 0 || level > MAX_LEVEL {
        return Err(CompactError::NotARun(format!("level {level}")));
    }
    let mut raw_total = 0u64;
    for (i, o) in objects.iter().enumerate() {
        let n = &o.name;
        let fault = if n.kind != ObjectKind::Segment || n.version < 2 {
            Some("not a version 2 segment".to_string())
        } else if n.generation != first.name.generation {
            Some(format!("not of generation {}", first.name.generation))
        } else if n.replid != first.name.replid {
            Some(format!(
                "under replication id {}, the run under {}",
                n.replid, first.name.replid
            ))
        } else if n.level >= level {
            Some(format!("already at level {}", n.level))
        } else if i > 0 && objects[i - 1].name.end != n.start {
            Some(format!(
                "starts at {}, the object before ends at {}",
                n.start,
                objects[i - 1].name.end
            ))
        } else {
            None
        };
        if let Some(what) = fault {
            return Err(CompactError::NotARun(format!("{n}: {what}")));
        }
        raw_total += n.end - n.start;
    }
    if raw_total > cfg.max_run_raw {
        return Err(CompactError::NotARun(format!(
            "{raw_total} raw bytes from {}, more than the {} a run may hold",
            first.name, cfg.max_run_raw
        )));
    }
    let mut done = RunDone {
        written: first.clone(),
        replaced: objects.to_vec(),
        deferred: false,
        bytes_read: 0,
        objects_read: 0,
        raw_bytes: raw_total,
    };

    // Read, check and compress, object by object.
    let mut fetch = OrderedFetch::start(store, wanted(objects), cfg.fetch, None, |name, bytes| {
        decode_alone(name, &bytes)
    });
    let mut builder: Option<FramedSegment> = None;
    let mut index: Vec<TimeMark> = Vec::new();
    let mut sums = (0u64, 0u64);
    let mut dbs = (0u32, 0u32);
    for o in objects {
        let Some(fetched) = fetch.next().await else {
            return Err(CompactError::object(&o.name, "not read"));
        };
        let fetched = fetched?;
        done.objects_read += 1;
        done.bytes_read += fetched.stored;
        let seg = fetched
            .value
            .map_err(|what| CompactError::object(&o.name, what))?;
        let h = &seg.header;
        let Link::Stream { start, end } = h.link else {
            return Err(CompactError::object(&o.name, "not a version 2 segment"));
        };
        match &builder {
            None => {
                sums.0 = start;
                dbs.0 = h.db_start;
                builder = Some(
                    FramedSegment::new(h.start, start, cfg.frame_raw)
                        .map_err(|e| CompactError::object(&o.name, e.to_string()))?,
                );
            }
            Some(_) if start != sums.1 => {
                return Err(CompactError::object(
                    &o.name,
                    format!(
                        "chain broken: starts from stream sum {start:016x}, the object before ends with {:016x}",
                        sums.1
                    ),
                ));
            }
            Some(_) => {}
        }
        sums.1 = end;
        dbs.1 = h.db_end;
        for m in &h.index {
            match index.last_mut() {
                // Equal milliseconds at a join: one mark says the same.
                Some(prev) if prev.ms == m.ms => prev.end = m.end,
                Some(prev) if prev.ms > m.ms => {
                    return Err(CompactError::object(
                        &o.name,
                        format!(
                            "arrival times go back: {} ms at offset {}, {} ms before it",
                            m.ms, m.end, prev.ms
                        ),
                    ))
                }
                _ => index.push(*m),
            }
        }
        let Some(mut b) = builder.take() else {
            return Err(CompactError::object(&o.name, "no builder"));
        };
        let name = o.name;
        let raw = seg.raw;
        let (b, r) = blocking(&name, move || {
            let r = b.write(&raw);
            (b, r)
        })
        .await?;
        r.map_err(|e| CompactError::object(&name, e.to_string()))?;
        builder = Some(b);
    }
    drop(fetch);
    let Some(builder) = builder else {
        return Err(CompactError::NotARun("no objects".into()));
    };
    let header = SegmentHeader {
        generation: first.name.generation,
        start: first.name.start,
        end: last.name.end,
        first_ms: first.name.first_ms,
        last_ms: last.name.last_ms,
        db_start: dbs.0,
        db_end: dbs.1,
        replid: first.name.replid,
        link: Link::Stream {
            start: sums.0,
            end: sums.1,
        },
        level,
        frames: Vec::new(),
        index,
    };
    let name = ObjectName::segment(
        header.generation,
        (header.start, header.end),
        (header.first_ms, header.last_ms),
        header.replid,
    )
    .v2(level);
    let parts: SegmentParts = {
        let h = header.clone();
        blocking(&name, move || builder.finish(&h))
            .await?
            .map_err(|e| CompactError::object(&first.name, format!("building the run: {e}")))?
    };

    // Write it, unless an earlier pass did (interrupted before its deletes).
    lease
        .wait_valid(&format!("compacted segment {name}"))
        .await?;
    let started = std::time::Instant::now();
    match store.put_new_parts(&name, parts.chunks()).await {
        Ok(()) => store.metrics().uploaded(
            crate::metrics::Upload::Compacted,
            parts.len(),
            started.elapsed(),
        ),
        Err(StoreError::Conflict { .. }) => {
            tracing::info!(object = %name, "the compacted object is there already (an earlier pass was interrupted): checking it");
        }
        Err(e) => return Err(e.into()),
    }
    let built = (parts.header, parts.raw_len, parts.raw_hash);
    drop(parts.body);

    // Read it back: the same header (range, times, databases, sums, every mark) and the same
    // raw bytes.
    let bytes = store.get(&name).await?;
    done.objects_read += 1;
    done.bytes_read += bytes.len() as u64;
    let stored_len = bytes.len() as u64;
    let back = blocking(&name, move || {
        decode_alone(&name, &bytes).map(|s| (s.header, s.raw.len() as u64, xxh3_64(&s.raw)))
    })
    .await?
    .map_err(|what| CompactError::ReadBack {
        object: name.to_string(),
        what,
    })?;
    let same_header = SegmentHeader {
        frames: Vec::new(),
        ..back.0.clone()
    } == SegmentHeader {
        frames: Vec::new(),
        ..built.0.clone()
    };
    if !same_header || back.1 != built.1 || back.2 != built.2 {
        return Err(CompactError::ReadBack {
            object: name.to_string(),
            what: if same_header {
                "its raw bytes differ".into()
            } else {
                "its header differs".into()
            },
        });
    }
    done.written = Listed {
        name,
        size: stored_len,
    };

    // Only now the objects it replaces go (after a grace, by a later pass).
    if !cfg.grace.is_zero() {
        done.deferred = true;
        return Ok(done);
    }
    for o in objects {
        lease
            .wait_valid(&format!(
                "the deletion of {}, compacted into {name}",
                o.name
            ))
            .await?;
        store.delete(&o.name).await?;
    }
    Ok(done)
}

/// Finishes an interrupted compaction: checks that `covered.by` holds exactly the bytes of
/// each object inside its range (raw bytes, the sums at both ends, every time mark) and
/// deletes those. Returns the GETs made, the stored bytes read and the objects deleted.
pub async fn retire_covered(
    store: &Store,
    covered: &Covered,
    lease: &LeaseGuard,
    cfg: &CompactConfig,
) -> Result<(u64, u64, Vec<Listed>), CompactError> {
    let by = covered.by.name;
    let bytes = store.get(&by).await?;
    let mut read = (1u64, bytes.len() as u64);
    let high = blocking(&by, move || decode_alone(&by, &bytes))
        .await?
        .map_err(|what| CompactError::object(&by, what))?;
    let Link::Stream {
        start: high_sum, ..
    } = high.header.link
    else {
        return Err(CompactError::object(&by, "not a version 2 segment"));
    };
    let high = std::sync::Arc::new(high);
    let mut fetch = OrderedFetch::start(
        store,
        wanted(&covered.objects),
        cfg.fetch,
        None,
        |name, bytes| decode_alone(name, &bytes),
    );
    for o in &covered.objects {
        let Some(fetched) = fetch.next().await else {
            return Err(CompactError::object(&o.name, "not read"));
        };
        let fetched = fetched?;
        read.0 += 1;
        read.1 += fetched.stored;
        let seg = fetched
            .value
            .map_err(|what| CompactError::object(&o.name, what))?;
        let (high, name) = (high.clone(), o.name);
        let same = blocking(&o.name, move || {
            let h = &high.header;
            let from = (seg.header.start - h.start) as usize;
            let to = (seg.header.end - h.start) as usize;
            let Some(slice) = high.raw.get(from..to) else {
                return Err(format!("outside {by}"));
            };
            if slice != &seg.raw[..] {
                return Err(format!(
                    "its bytes differ from those of {by} at its offsets"
                ));
            }
            let sum_at = format::stream_sum(high_sum, &high.raw[..from]);
            let sum_end = format::stream_sum(sum_at, slice);
            if seg.header.link
                != (Link::Stream {
                    start: sum_at,
                    end: sum_end,
                })
            {
                return Err(format!("its stream sums differ from those of {by}"));
            }
            if let Some(m) = seg
                .header
                .index
                .iter()
                .find(|m| h.time_at(m.end) != Some(m.ms))
            {
                return Err(format!(
                    "{by} has another arrival time at offset {} than its {} ms",
                    m.end, m.ms
                ));
            }
            Ok(())
        })
        .await?;
        same.map_err(|what| CompactError::object(&name, what))?;
    }
    drop(fetch);
    for o in &covered.objects {
        lease
            .wait_valid(&format!("the deletion of {}, compacted into {by}", o.name))
            .await?;
        store.delete(&o.name).await?;
    }
    Ok((read.0, read.1, covered.objects.clone()))
}

/// Objects a pass leaves alone: those of runs that failed their checks in this process
/// (reported once, not read again every pass), and those a run of this process replaced,
/// until their grace has passed (then a pass deletes them without reading them again).
#[derive(Debug, Default)]
pub struct Skip {
    names: HashSet<String>,
    /// Replaced objects and when they may go.
    retiring: Vec<(std::time::Instant, Vec<Listed>)>,
}

impl Skip {
    fn contains(&self, objects: &[Listed]) -> bool {
        objects
            .iter()
            .any(|o| self.names.contains(&o.name.to_string()))
    }

    fn add(&mut self, objects: &[Listed]) {
        self.names
            .extend(objects.iter().map(|o| o.name.to_string()));
    }

    fn retire_after(&mut self, grace: Duration, objects: Vec<Listed>) {
        self.add(&objects);
        self.retiring
            .push((std::time::Instant::now() + grace, objects));
    }

    /// Deletes the replaced objects whose grace has passed. Returns the objects deleted.
    async fn retire_due(
        &mut self,
        store: &Store,
        lease: &LeaseGuard,
    ) -> Result<Vec<Listed>, CompactError> {
        let now = std::time::Instant::now();
        let mut deleted = Vec::new();
        while let Some(i) = self.retiring.iter().position(|(due, _)| *due <= now) {
            let objects = self.retiring[i].1.clone();
            for o in &objects {
                lease
                    .wait_valid(&format!("the deletion of {}, compacted", o.name))
                    .await?;
                match store.delete(&o.name).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                self.names.remove(&o.name.to_string());
                deleted.push(o.clone());
            }
            self.retiring.swap_remove(i);
        }
        Ok(deleted)
    }
}

/// One pass over every generation of the archive: finishes interrupted compactions, then
/// compacts each level in turn, from the lowest (what level 1 writes may make a level 2 run in
/// the same pass). Store and lease errors end the pass; a run whose objects fail their checks
/// is reported and left alone (and skipped by later passes given the same `skip`).
pub async fn compact_pass(
    store: &Store,
    cfg: &CompactConfig,
    lease: &LeaseGuard,
    now_ms: u64,
    skip: &mut Skip,
) -> Result<Report, CompactError> {
    let listing = store.list().await?;
    compact_listing(store, &listing, cfg, lease, now_ms, skip).await
}

/// [`compact_pass`] over a listing already made.
pub async fn compact_listing(
    store: &Store,
    listing: &Listing,
    cfg: &CompactConfig,
    lease: &LeaseGuard,
    now_ms: u64,
    skip: &mut Skip,
) -> Result<Report, CompactError> {
    if cfg.levels.is_off() {
        let catalog = Catalog::from_listing(listing);
        store.metrics().observe_catalog(&catalog, true);
        return Ok(Report {
            generations: catalog.generations.len(),
            ..Default::default()
        });
    }
    // Replaced objects whose grace is over go first; the listing no longer has them.
    let retired = skip.retire_due(store, lease).await?;
    let mut listing = listing.clone();
    listing.objects.retain(|o| !retired.contains(o));
    let catalog = Catalog::from_listing(&listing);
    store.metrics().observe_catalog(&catalog, true);
    // Level 0 segments left uncompacted after this pass.
    let mut backlog = 0usize;
    let mut report = Report {
        generations: catalog.generations.len(),
        objects_deleted: retired.len() as u64,
        bytes_deleted: retired.iter().map(|o| o.size).sum::<u64>(),
        ..Default::default()
    };
    for g in &catalog.generations {
        let plan = sort_out(g.id, &g.objects);
        if let Some(why) = plan.refused {
            report.problems.push(why);
            continue;
        }
        for c in &plan.covered {
            if skip.contains(&c.objects) {
                continue;
            }
            match retire_covered(store, c, lease, cfg).await {
                Ok((gets, bytes, deleted)) => {
                    report.objects_read += gets;
                    report.bytes_read += bytes;
                    report.objects_deleted += deleted.len() as u64;
                    report.bytes_deleted += deleted.iter().map(|o| o.size).sum::<u64>();
                    tracing::info!(object = %c.by.name, deleted = deleted.len(),
                        "finished an interrupted compaction: removed the objects it replaces");
                }
                Err(e) if e.is_content() => {
                    tracing::error!(error = %e, "not removing the objects an earlier compaction replaced");
                    report.problems.push(e.to_string());
                    skip.add(&c.objects);
                }
                Err(e) => return Err(e),
            }
        }
        let mut objects = plan.objects;
        for level in 1..=cfg.levels.spans().len() as u8 {
            for run in plan_level(&objects, level, now_ms, cfg) {
                if skip.contains(&run.objects) {
                    continue;
                }
                match compact_run(store, &run.objects, run.level, lease, cfg).await {
                    Ok(done) => {
                        report.objects_read += done.objects_read;
                        report.bytes_read += done.bytes_read;
                        report.wrote(run.level, done.written.size);
                        report.raw_bytes += done.raw_bytes;
                        if done.deferred {
                            skip.retire_after(cfg.grace, done.replaced.clone());
                        } else {
                            report.objects_deleted += done.replaced.len() as u64;
                            report.bytes_deleted +=
                                done.replaced.iter().map(|o| o.size).sum::<u64>();
                        }
                        tracing::debug!(object = %done.written.name, replaced = done.replaced.len(),
                            "compacted");
                        // What the next level sees.
                        objects.retain(|o| !done.replaced.contains(o));
                        let at = objects
                            .partition_point(|o| o.name.sort_key() < done.written.name.sort_key());
                        objects.insert(at, done.written);
                    }
                    Err(e) if e.is_content() => {
                        tracing::error!(error = %e, "a run is not compacted");
                        report.problems.push(e.to_string());
                        skip.add(&run.objects);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        backlog += objects
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Segment && o.name.level == 0)
            .count();
    }
    store.metrics().compaction_backlog.set(backlog as i64);
    Ok(report)
}

/// Compaction inside `pitr archive`: a pass every [`PASS_INTERVAL`] while the lease is held,
/// until `stop`; and, with a retention policy, a prune pass after it about every
/// [`prune::PASS_INTERVAL`] (in this task, so that the two never work on one range at once).
/// Errors are logged and the next pass tries again; a lease gone for good ends it (the
/// archiver stops on its own for that reason).
pub async fn run_beside_archiver(
    store: Store,
    cfg: CompactConfig,
    retention: prune::Policy,
    lease: LeaseGuard,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut skip = Skip::default();
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let pass = compact_pass(&store, &cfg, &lease, now, &mut skip);
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = pass => r,
        };
        match r {
            Ok(r) if r.objects_written() > 0 || r.objects_deleted > 0 => {
                tracing::info!(
                    written = r.objects_written(),
                    deleted = r.objects_deleted,
                    read = r.objects_read,
                    raw_bytes = r.raw_bytes,
                    "compaction pass"
                );
            }
            Ok(_) => {}
            Err(CompactError::Lease(e)) if lease.is_gone() => {
                tracing::warn!(error = %e, "compaction stops: the lease is gone");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "compaction pass failed; trying again later"),
        }
        let due = last_prune.is_none_or(|t| t.elapsed() >= prune::PASS_INTERVAL);
        if retention.keeps_everything() || !due {
            continue;
        }
        last_prune = Some(std::time::Instant::now());
        let pass = prune::prune_pass(&store, &retention, &lease, now);
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = pass => r,
        };
        match r {
            Ok((plan, done)) => {
                if done.objects_deleted > 0 {
                    tracing::info!(
                        deleted = done.objects_deleted,
                        bytes = done.bytes_deleted,
                        window_start_ms = plan.new_window_start_ms,
                        "prune pass"
                    );
                }
                for p in &plan.problems {
                    tracing::warn!(problem = %p, "prune: a generation left alone");
                }
            }
            Err(prune::PruneError::Lease(e)) if lease.is_gone() => {
                tracing::warn!(error = %e, "pruning stops: the lease is gone");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "prune pass failed; trying again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::lease::{Lease, LeaseCommand, LeaseConfig};
    use crate::archive::names::{test_replid, ArchiveName};
    use crate::maintain::verify::{test_objects, verify};

    /// A minute boundary (UTC): 2027-01-15T08:00:00Z.
    const T0: u64 = 1_800_000_000_000;

    fn store() -> Store {
        let n: ArchiveName = "a".parse().unwrap();
        Store::open("memory://", &n).unwrap()
    }

    async fn guard(store: &Store) -> LeaseGuard {
        Lease::acquire(store, LeaseCommand::Compact, LeaseConfig::default())
            .await
            .unwrap()
            .guard()
    }

    fn cfg(levels: &str) -> CompactConfig {
        CompactConfig {
            levels: levels.parse().unwrap(),
            ..Default::default()
        }
    }

    /// One pass with `levels` and nothing skipped, which must succeed.
    async fn pass_once(store: &Store, levels: &str, lease: &LeaseGuard, now_ms: u64) -> Report {
        compact_pass(store, &cfg(levels), lease, now_ms, &mut Skip::default())
            .await
            .unwrap()
    }

    /// A base snapshot and `n` level 0 segments of generation 1, one every `every_ms` from
    /// `T0`, of 1 to 3 PINGs each; the segments' names, the whole stream and its marks.
    async fn archive(
        store: &Store,
        n: usize,
        every_ms: u64,
    ) -> (Vec<ObjectName>, Vec<u8>, Vec<TimeMark>) {
        let (_, mut sum) = test_objects::snapshot(store, 1, 0, T0 - 500).await;
        let (mut names, mut raw, mut marks) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = 0u64;
        for i in 0..n {
            let pings = i % 3 + 1;
            let ms = T0 + i as u64 * every_ms;
            let (name, s) = test_objects::segment(store, 1, at, pings, ms, sum).await;
            sum = s;
            at = name.end;
            names.push(name);
            raw.extend_from_slice(&test_objects::PING.repeat(pings));
            marks.push(TimeMark { end: at, ms });
        }
        (names, raw, marks)
    }

    /// Every segment in the store, decoded, in offset order.
    async fn segments(store: &Store) -> Vec<Segment> {
        let listing = store.list().await.unwrap();
        let mut out = Vec::new();
        for o in listing
            .objects
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Segment)
        {
            let seg = format::decode_segment(&store.get(&o.name).await.unwrap()).unwrap();
            assert!(seg.header.matches(&o.name));
            out.push(seg);
        }
        out
    }

    fn levels_of(segs: &[Segment]) -> Vec<u8> {
        segs.iter().map(|s| s.header.level).collect()
    }

    #[test]
    fn levels_parse_and_print() {
        let l: Levels = "1m,1h,24h".parse().unwrap();
        assert_eq!(l.spans().len(), 3);
        assert_eq!(l.span(1), Some(Duration::from_secs(60)));
        assert_eq!(l.span(3), Some(Duration::from_secs(86_400)));
        assert_eq!(l.span(0), None);
        assert_eq!(l.to_string().parse::<Levels>().unwrap(), l);
        assert_eq!(Levels::default(), l);
        assert!("off".parse::<Levels>().unwrap().is_off());
        assert_eq!("2s,10s".parse::<Levels>().unwrap().to_string(), "2s,10s");
        for bad in [
            "",
            "1m,30s",
            "1m,90s",
            "500ms",
            "1m,soon",
            "1s,2s,4s,8s,16s,32s,64s,128s,256s,512s",
        ] {
            assert!(bad.parse::<Levels>().is_err(), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_minute_of_one_second_segments_becomes_one_level_1_object() {
        let store = store();
        let lease = guard(&store).await;
        // 60 segments in the minute from T0, and one in the next minute.
        let (names, raw, marks) = archive(&store, 61, 1000).await;
        let before = segments(&store).await;
        let mut skip = Skip::default();
        // Not yet closed: nothing happens.
        let r = compact_pass(&store, &cfg("1m,1h"), &lease, T0 + 60_000, &mut skip)
            .await
            .unwrap();
        assert_eq!(r.objects_written(), 0);
        let r = compact_pass(&store, &cfg("1m,1h"), &lease, T0 + 120_000, &mut skip)
            .await
            .unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            r.written,
            vec![LevelCount {
                level: 1,
                objects: 1,
                bytes: r.written[0].bytes
            }]
        );
        assert_eq!((r.objects_deleted, r.objects_read), (60, 61));
        let after = segments(&store).await;
        assert_eq!(levels_of(&after), vec![1, 0]);
        let l1 = &after[0].header;
        let sixty_end = names[59].end;
        assert_eq!((l1.start, l1.end), (0, sixty_end));
        assert_eq!((l1.first_ms, l1.last_ms), (T0, T0 + 59_000));
        assert_eq!(&after[0].raw[..], &raw[..sixty_end as usize]);
        assert_eq!(l1.index, marks[..60].to_vec());
        assert_eq!(
            l1.link,
            Link::Stream {
                start: format::stream_seed(GenerationId(1)),
                end: match before[59].header.link {
                    Link::Stream { end, .. } => end,
                    _ => unreachable!(),
                },
            }
        );
        // The next object chains on.
        assert_eq!(after[1].header.link, before[60].header.link);
        // Every millisecond resolves to the same arrival time as before.
        for m in &marks[..60] {
            assert_eq!(l1.time_at(m.end), Some(m.ms));
        }
        let v = verify(&store).await.unwrap();
        assert!(v.ok, "{:?}", v.problems);
        assert_eq!(v.segments, 2);
        // A second pass has nothing to do.
        let r = compact_pass(&store, &cfg("1m,1h"), &lease, T0 + 120_000, &mut skip)
            .await
            .unwrap();
        assert_eq!((r.objects_written(), r.objects_deleted), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replaced_objects_stay_through_the_grace_then_go_unread() {
        let store = store();
        let lease = guard(&store).await;
        let (names, raw, _) = archive(&store, 61, 1000).await;
        let cfg = CompactConfig {
            grace: Duration::from_millis(300),
            ..cfg("1m")
        };
        let mut skip = Skip::default();
        let r = compact_pass(&store, &cfg, &lease, T0 + 120_000, &mut skip)
            .await
            .unwrap();
        assert_eq!((r.objects_written(), r.objects_deleted), (1, 0));
        // Both are there: a restore that listed the minute's segments still reads them, and
        // one that lists now takes the level 1 object.
        assert!(store.exists(&names[0]).await.unwrap());
        assert_eq!(segments(&store).await.len(), 62);
        // Within the grace, a pass neither deletes them nor reads them again.
        let r = compact_pass(&store, &cfg, &lease, T0 + 120_000, &mut skip)
            .await
            .unwrap();
        assert_eq!((r.objects_read, r.objects_deleted), (0, 0));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = compact_pass(&store, &cfg, &lease, T0 + 120_000, &mut skip)
            .await
            .unwrap();
        assert_eq!((r.objects_read, r.objects_deleted), (0, 60));
        let after = segments(&store).await;
        assert_eq!(levels_of(&after), vec![1, 0]);
        let joined: Vec<u8> = after.iter().flat_map(|s| s.raw.to_vec()).collect();
        assert_eq!(joined, raw);
    }

    /// Equal milliseconds at a join are one mark; arrival times are kept.
    #[tokio::test(flavor = "multi_thread")]
    async fn marks_of_equal_milliseconds_are_joined_at_the_seams_only() {
        let store = store();
        let lease = guard(&store).await;
        let (_, mut sum) = test_objects::snapshot(&store, 1, 0, T0 - 500).await;
        let mut objects = Vec::new();
        let mut at = 0;
        for ms in [T0, T0, T0 + 5] {
            let (name, s) = test_objects::segment(&store, 1, at, 2, ms, sum).await;
            objects.push(Listed {
                name,
                size: store.get(&name).await.unwrap().len() as u64,
            });
            sum = s;
            at = name.end;
        }
        let done = compact_run(&store, &objects, 1, &lease, &cfg("1m"))
            .await
            .unwrap();
        let seg = format::decode_segment(&store.get(&done.written.name).await.unwrap()).unwrap();
        assert_eq!(
            seg.header.index,
            vec![
                TimeMark { end: 56, ms: T0 },
                TimeMark {
                    end: 84,
                    ms: T0 + 5
                },
            ]
        );
        assert!(!store.exists(&objects[0].name).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_interrupted_compaction_leaves_both_and_the_next_pass_finishes_it() {
        // The object a pass would write, made in a store of its own.
        let twin = store();
        let twin_lease = guard(&twin).await;
        archive(&twin, 61, 1000).await;
        let r = pass_once(&twin, "1m", &twin_lease, T0 + 120_000).await;
        assert_eq!(r.objects_written(), 1);
        let l1 = twin
            .list()
            .await
            .unwrap()
            .objects
            .into_iter()
            .find(|o| o.name.level == 1)
            .unwrap();
        let l1_bytes = twin.get(&l1.name).await.unwrap();

        // The same archive, where the put landed and the process died before the deletes
        // (some of them, in the second round).
        for deleted_first in [0usize, 25] {
            let store = store();
            let lease = guard(&store).await;
            let (names, raw, _) = archive(&store, 61, 1000).await;
            store.put_new(&l1.name, l1_bytes.clone()).await.unwrap();
            for n in &names[..deleted_first] {
                store.delete(n).await.unwrap();
            }
            // Both are there: the same bytes twice.
            let both = segments(&store).await;
            assert_eq!(both.len(), 1 + 61 - deleted_first);
            let r = pass_once(&store, "1m", &lease, T0 + 120_000).await;
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            assert_eq!(
                (r.objects_written(), r.objects_deleted),
                (0, 60 - deleted_first as u64)
            );
            let after = segments(&store).await;
            assert_eq!(levels_of(&after), vec![1, 0]);
            let joined: Vec<u8> = after.iter().flat_map(|s| s.raw.to_vec()).collect();
            assert_eq!(joined, raw);
            assert!(verify(&store).await.unwrap().ok);
        }

        // A covering object that does not hold the same bytes: nothing is deleted.
        let store = store();
        let lease = guard(&store).await;
        archive(&store, 61, 1000).await;
        let mut bad = format::decode_segment(&l1_bytes).unwrap();
        let mut raw = bad.raw.to_vec();
        raw[4..8].copy_from_slice(b"$4\r\n");
        raw[8..12].copy_from_slice(b"PONG");
        let Link::Stream { start, .. } = bad.header.link else {
            unreachable!()
        };
        bad.header.link = Link::Stream {
            start,
            end: format::stream_sum(start, &raw),
        };
        let (obj, _) = format::encode_segment_frames(&bad.header, &raw, FRAME_RAW).unwrap();
        store.put_new(&l1.name, obj.into()).await.unwrap();
        let r = pass_once(&store, "1m", &lease, T0 + 120_000).await;
        assert_eq!(r.objects_deleted, 0);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("bytes differ"), "{:?}", r.problems);
        assert_eq!(segments(&store).await.len(), 62);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nothing_is_written_or_deleted_without_the_lease() {
        let store = store();
        let lease = Lease::acquire(&store, LeaseCommand::Compact, LeaseConfig::default())
            .await
            .unwrap();
        let gone = lease.guard();
        lease.release().await.unwrap();
        archive(&store, 61, 1000).await;
        let before = store.list().await.unwrap().objects;
        let e = compact_pass(
            &store,
            &cfg("1m"),
            &gone,
            T0 + 120_000,
            &mut Skip::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, CompactError::Lease(LeaseError::NotHeld { .. })),
            "{e}"
        );
        assert_eq!(store.list().await.unwrap().objects, before);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_window_with_a_hole_is_not_compacted() {
        let store = store();
        let lease = guard(&store).await;
        let (names, _, _) = archive(&store, 61, 1000).await;
        store.delete(&names[30]).await.unwrap();
        let r = pass_once(&store, "1m", &lease, T0 + 120_000).await;
        assert_eq!(
            (r.objects_written(), r.objects_deleted, r.objects_read),
            (0, 0, 0)
        );
        assert_eq!(segments(&store).await.len(), 60);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_run_larger_than_the_bound_is_split() {
        let store = store();
        let lease = guard(&store).await;
        let (names, raw, _) = archive(&store, 61, 1000).await;
        let window_raw = names[59].end;
        let c = CompactConfig {
            max_run_raw: window_raw / 3 + 20,
            ..cfg("1m")
        };
        let r = compact_pass(&store, &c, &lease, T0 + 120_000, &mut Skip::default())
            .await
            .unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let after = segments(&store).await;
        let l1: Vec<&Segment> = after.iter().filter(|s| s.header.level == 1).collect();
        assert!(l1.len() >= 3, "{}", l1.len());
        for s in &l1 {
            assert!(s.raw.len() as u64 <= c.max_run_raw);
        }
        let joined: Vec<u8> = after.iter().flat_map(|s| s.raw.to_vec()).collect();
        assert_eq!(joined, raw);
        assert!(verify(&store).await.unwrap().ok);
        // compact_run itself refuses a run past the bound.
        let store2 = self::store();
        let lease2 = guard(&store2).await;
        archive(&store2, 3, 1000).await;
        let objects: Vec<Listed> = store2
            .list()
            .await
            .unwrap()
            .objects
            .into_iter()
            .filter(|o| o.name.kind == ObjectKind::Segment)
            .collect();
        let tight = CompactConfig {
            max_run_raw: 20,
            ..cfg("1m")
        };
        assert!(matches!(
            compact_run(&store2, &objects, 1, &lease2, &tight).await,
            Err(CompactError::NotARun(_))
        ));
    }

    /// With short spans, level 1 and level 2 are both written in one pass, and a restore's
    /// view (the stream and every arrival time) is unchanged.
    #[tokio::test(flavor = "multi_thread")]
    async fn levels_build_on_each_other_in_one_pass() {
        let store = store();
        let lease = guard(&store).await;
        let (_, raw, marks) = archive(&store, 70, 500).await;
        let end_ms = T0 + 69 * 500;
        let r = pass_once(&store, "2s,10s", &lease, end_ms + 60_000).await;
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let after = segments(&store).await;
        let levels = levels_of(&after);
        assert!(levels.contains(&2), "{levels:?}");
        assert!(after.len() < 12, "{levels:?}");
        let joined: Vec<u8> = after.iter().flat_map(|s| s.raw.to_vec()).collect();
        assert_eq!(joined, raw);
        for m in &marks {
            let s = after
                .iter()
                .find(|s| s.header.start < m.end && m.end <= s.header.end)
                .unwrap();
            assert_eq!(s.header.time_at(m.end), Some(m.ms));
        }
        let v = verify(&store).await.unwrap();
        assert!(v.ok, "{:?}", v.problems);
    }

    fn listed(start: u64, end: u64, ms: u64, level: u8, r: char) -> Listed {
        Listed {
            name: ObjectName::segment(GenerationId(1), (start, end), (ms, ms + 10), test_replid(r))
                .v2(level),
            size: 10,
        }
    }

    #[test]
    fn windows_are_planned_only_when_closed_contiguous_and_worth_it() {
        let c = cfg("1m,1h");
        let objects = vec![
            listed(0, 10, T0 + 1_000, 0, 'a'),
            listed(10, 20, T0 + 2_000, 0, 'a'),
            // A failover: a new replication id.
            listed(20, 30, T0 + 3_000, 0, 'b'),
            listed(30, 40, T0 + 4_000, 0, 'b'),
            // Alone in its minute.
            listed(40, 50, T0 + 61_000, 0, 'b'),
            listed(50, 60, T0 + 121_000, 0, 'b'),
            listed(60, 70, T0 + 122_000, 0, 'b'),
        ];
        let runs = plan_level(&objects, 1, T0 + 200_000, &c);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].objects, objects[0..2].to_vec());
        assert_eq!(runs[1].objects, objects[2..4].to_vec());
        // The third minute has nothing after it yet.
        assert!(runs.iter().all(|r| r.level == 1));
        // Before the first minute has settled, nothing.
        assert!(plan_level(&objects, 1, T0 + 60_500, &c).is_empty());
        // Level 2 (an hour) is not closed.
        assert!(plan_level(&objects, 2, T0 + 200_000, &c).is_empty());
        // A level the settings do not have.
        assert!(plan_level(&objects, 3, T0 + 200_000, &c).is_empty());
        // A hole before the window's first object keeps it.
        let mut holed = objects.clone();
        holed[0] = listed(0, 9, T0 + 1_000, 0, 'a');
        let runs = plan_level(&holed, 1, T0 + 200_000, &c);
        assert_eq!(runs.len(), 0, "{runs:?}");
    }

    #[test]
    fn leftovers_of_an_interrupted_compaction_are_sorted_out() {
        let high = listed(0, 30, T0, 1, 'a');
        let objects = vec![
            listed(0, 10, T0, 0, 'a'),
            listed(10, 20, T0 + 1, 0, 'a'),
            high.clone(),
            listed(20, 30, T0 + 2, 0, 'a'),
            listed(30, 40, T0 + 3, 0, 'a'),
        ];
        let p = sort_out(GenerationId(1), &objects);
        assert_eq!(p.refused, None);
        assert_eq!(p.objects, vec![high.clone(), objects[4].clone()]);
        assert_eq!(
            p.covered,
            vec![Covered {
                by: high,
                objects: vec![objects[0].clone(), objects[1].clone(), objects[3].clone()],
            }]
        );
        // Partly overlapping objects are a fork: the generation is left alone.
        let p = sort_out(
            GenerationId(1),
            &[listed(0, 10, T0, 0, 'a'), listed(5, 30, T0, 1, 'a')],
        );
        assert!(p.refused.is_some());
    }
}
