//! `pitr ls --timeline`: the retained period drawn on a terminal, one line per generation
//! (restorable window, snapshots, missing ranges) with a line of its write volume under it, so
//! that an operator sees at a glance what can be restored.
//!
//! Pure: it draws from a catalog made from a whole listing (every object's offset range and
//! arrival times), the current time and a width. A compacted object's stream bytes are spread
//! evenly over its arrival times: its name says how many bytes arrived from when to when, not
//! how they were spread inside.

use serde::Serialize;

use redis_pitr::archive::catalog::{Catalog, Generation};
use redis_pitr::archive::names::ObjectName;

/// The default width of the drawing, in columns of time (without the labels).
pub const DEFAULT_WIDTH: usize = 72;

/// The narrowest and widest drawings accepted.
pub const WIDTHS: std::ops::RangeInclusive<usize> = 10..=1000;

/// The eight heights of the volume line, lowest first; a column without writes is a space.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// What a column of a generation's line shows, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// Outside the generation, or before its first snapshot: nothing to restore.
    None,
    /// Every moment of the column that the generation covers can be restored.
    Window,
    /// A snapshot was taken in this column.
    Snapshot,
    /// Part of the column cannot be restored: an object is missing or off the chain.
    Missing,
}

impl Cell {
    fn symbol(self) -> char {
        match self {
            Cell::None => ' ',
            Cell::Window => '=',
            Cell::Snapshot => 'S',
            Cell::Missing => '!',
        }
    }
}

/// One generation's line and its write volume per column.
#[derive(Debug, Serialize)]
pub struct Line {
    pub generation: String,
    pub cells: Vec<Cell>,
    /// Stream bytes that arrived in each column.
    pub bytes: Vec<u64>,
}

/// The drawing: the time axis and one line per generation.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub from_ms: u64,
    pub to_ms: u64,
    /// The time one column stands for.
    pub column_ms: u64,
    pub generations: Vec<Line>,
}

impl Timeline {
    /// From the first archived moment to `now_ms` (or to the last archived moment, when that
    /// is later), in `width` columns.
    pub fn new(catalog: &Catalog, now_ms: u64, width: usize) -> Timeline {
        let width = width.clamp(*WIDTHS.start(), *WIDTHS.end());
        let from_ms = catalog
            .generations
            .iter()
            .map(|g| g.first_time_ms)
            .min()
            .unwrap_or(now_ms);
        let to_ms = catalog
            .generations
            .iter()
            .map(|g| g.last_time_ms)
            .max()
            .unwrap_or(now_ms)
            .max(now_ms)
            .max(from_ms + 1);
        let column_ms = (to_ms - from_ms).div_ceil(width as u64).max(1);
        let mut t = Timeline {
            from_ms,
            to_ms,
            column_ms,
            generations: Vec::new(),
        };
        let lines = catalog
            .generations
            .iter()
            .map(|g| t.line(g, width))
            .collect();
        t.generations = lines;
        t
    }

    /// The column of a moment.
    fn column(&self, ms: u64, width: usize) -> usize {
        ((ms.saturating_sub(self.from_ms) / self.column_ms) as usize).min(width - 1)
    }

    /// The columns a span of time touches.
    fn columns(&self, from_ms: u64, to_ms: u64, width: usize) -> std::ops::RangeInclusive<usize> {
        self.column(from_ms, width)..=self.column(to_ms.max(from_ms), width)
    }

    fn line(&self, g: &Generation, width: usize) -> Line {
        let mut cells = vec![Cell::None; width];
        let mut bytes = vec![0u64; width];
        let mut mark = |cols: std::ops::RangeInclusive<usize>, cell: Cell| {
            for c in &mut cells[cols] {
                if cell as u8 > *c as u8 {
                    *c = cell;
                }
            }
        };
        if let Some(first) = g.snapshots.first() {
            mark(
                self.columns(first.time_ms, g.last_time_ms, width),
                Cell::Window,
            );
        }
        let chain: Vec<&ObjectName> = g.chain.iter().map(|&i| &g.objects[i].name).collect();
        for pair in chain.windows(2) {
            if pair[0].end < pair[1].start {
                mark(
                    self.columns(pair[0].last_ms, pair[1].first_ms, width),
                    Cell::Missing,
                );
            }
        }
        for p in &g.problems {
            // A problem is named by objects; those in the listing give its time.
            for o in g.objects.iter().filter(|o| {
                p.objects
                    .iter()
                    .any(|n| n.ends_with(&o.name.to_string()) || o.name.to_string().ends_with(n))
            }) {
                mark(
                    self.columns(o.name.first_ms, o.name.last_ms, width),
                    Cell::Missing,
                );
            }
        }
        for s in &g.snapshots {
            mark(self.columns(s.time_ms, s.time_ms, width), Cell::Snapshot);
        }
        for o in chain {
            self.spread(o, &mut bytes);
        }
        Line {
            generation: g.id.to_string(),
            cells,
            bytes,
        }
    }

    /// Adds an object's stream bytes to the columns of its arrival times, in proportion to
    /// the time each column covers.
    fn spread(&self, o: &ObjectName, bytes: &mut [u64]) {
        let width = bytes.len();
        let total = o.end.saturating_sub(o.start);
        let (a, b) = (o.first_ms, o.last_ms.max(o.first_ms));
        if total == 0 {
            return;
        }
        // The last arrival ends the span: a span that ends where a column starts takes
        // nothing of that column.
        let cols = self.columns(a, (b - 1).max(a), width);
        if cols.start() == cols.end() {
            bytes[*cols.start()] += total;
            return;
        }
        let span = (b - a) as u128;
        let mut given = 0u64;
        for c in cols.clone() {
            let c0 = self.from_ms + c as u64 * self.column_ms;
            let lo = a.max(c0);
            let hi = if c == *cols.end() {
                b
            } else {
                b.min(c0 + self.column_ms)
            };
            let share = if c == *cols.end() {
                total - given
            } else {
                (total as u128 * hi.saturating_sub(lo) as u128 / span) as u64
            };
            bytes[c] += share;
            given += share;
        }
    }

    /// The drawing as text lines: a header, the axis, then two lines per generation, and a
    /// legend.
    pub fn render(&self) -> Vec<String> {
        let width = self.generations.first().map_or(0, |l| l.cells.len());
        let label = 17;
        let mut out = vec![format!(
            "timeline  {} .. {}, one column = {}",
            fmt_time(self.from_ms),
            fmt_time(self.to_ms),
            humantime::format_duration(std::time::Duration::from_secs(
                self.column_ms.div_ceil(1000)
            ))
        )];
        if width == 0 {
            return out;
        }
        out.push(format!("{:label$}{}", "", self.axis(width)));
        let per_hour = |b: u64| b as f64 * 3_600_000.0 / self.column_ms as f64;
        for l in &self.generations {
            let cells: String = l.cells.iter().map(|c| c.symbol()).collect();
            out.push(format!(
                "{:<label$}|{cells}|",
                format!("gen {}", l.generation)
            ));
            let peak = l.bytes.iter().copied().max().unwrap_or(0);
            let bars: String = l
                .bytes
                .iter()
                .map(|&b| {
                    if b == 0 {
                        ' '
                    } else {
                        let i = ((b as u128 * BARS.len() as u128).div_ceil(peak as u128)) as usize;
                        BARS[i.clamp(1, BARS.len()) - 1]
                    }
                })
                .collect();
            out.push(format!(
                "{:<label$}|{bars}| peak {}/h",
                "  writes",
                bytesize::ByteSize(per_hour(peak) as u64).display().iec()
            ));
        }
        out.push(
            "S snapshot  = restorable  ! missing or broken (run pitr verify)  blank: nothing to restore; writes: stream bytes per hour, scaled to the peak"
                .to_string(),
        );
        out
    }

    /// Tick marks with the time of day (or the date, for columns of a day and more) every
    /// dozen columns or so.
    fn axis(&self, width: usize) -> String {
        let mut line = vec![' '; width + 2];
        let every = 12.max(width / 6);
        let mut c = 0;
        while c < width {
            let ms = self.from_ms + c as u64 * self.column_ms;
            let t = fmt_time(ms);
            let text = if self.column_ms >= 86_400_000 / 12 {
                format!("|{}", &t[..10])
            } else {
                format!("|{}", &t[11..16])
            };
            if c + text.chars().count() <= width + 2 {
                for (i, ch) in text.chars().enumerate() {
                    line[c + i] = ch;
                }
            }
            c += every;
        }
        line.into_iter().collect::<String>().trim_end().to_string()
    }
}

fn fmt_time(ms: u64) -> String {
    crate::output::fmt_time(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_pitr::archive::names::{GenerationId, ReplId};
    use redis_pitr::archive::store::{Listed, Listing};

    const H: u64 = 3_600_000;

    fn replid(r: char) -> ReplId {
        r.to_string().repeat(40).parse().unwrap()
    }

    fn seg(g: u64, start: u64, end: u64, t0: u64, t1: u64, r: char) -> Listed {
        Listed {
            name: ObjectName::segment(GenerationId(g), (start, end), (t0, t1), replid(r)),
            size: 10,
        }
    }

    fn snap(g: u64, off: u64, t: u64, r: char) -> Listed {
        Listed {
            name: ObjectName::snapshot(GenerationId(g), off, t, replid(r)),
            size: 10,
        }
    }

    fn catalog(mut objects: Vec<Listed>) -> Catalog {
        objects.sort_by_key(|o| (o.name.sort_key(), o.name.first_ms));
        Catalog::from_listing(&Listing {
            objects,
            foreign: Vec::new(),
        })
    }

    /// A day of history in 24 columns of an hour: the window starts at the snapshot, the
    /// snapshots are where they were taken, a missing segment shows where it was, and the
    /// write volume is where the bytes arrived.
    #[test]
    fn a_day_in_hours() {
        let t0 = 1_800_000_000_000 / H * H;
        let mut objects = vec![snap(1, 0, t0 + 2 * H, 'a')];
        // A segment per hour from hour 2 to 23, 1000 bytes each, one of them (hour 10) lost;
        // hour 5 writes ten times as much.
        let mut off = 0;
        for h in 2..24 {
            let n = if h == 5 { 10_000 } else { 1000 };
            if h != 10 {
                objects.push(seg(1, off, off + n, t0 + h * H + 1, t0 + h * H + 1000, 'a'));
            }
            off += n;
        }
        objects.push(snap(1, 12_000, t0 + 12 * H + 5000, 'a'));
        let c = catalog(
            objects
                .into_iter()
                .map(|o| Listed {
                    name: o.name.v2(0),
                    ..o
                })
                .collect(),
        );
        let t = Timeline::new(&c, t0 + 23 * H + 1000, 24);
        assert_eq!(t.column_ms, (21 * H + 1000).div_ceil(24));
        let l = &t.generations[0];
        let cells: String = l.cells.iter().map(|c| c.symbol()).collect();
        assert_eq!(cells.chars().next(), Some('S'));
        assert!(cells.contains('!'), "{cells}");
        assert_eq!(cells.matches('S').count(), 2, "{cells}");
        assert!(!cells.contains(' '), "{cells}");
        let peak = l
            .bytes
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| **b)
            .unwrap()
            .0;
        assert_eq!(peak, t.column(t0 + 5 * H + 1, 24));
        assert_eq!(l.bytes.iter().sum::<u64>(), 21 * 1000 + 9000);
        let text = t.render();
        assert_eq!(text.len(), 2 + 2 + 1, "{text:#?}");
        assert!(text[2].starts_with("gen 0000000001"), "{text:#?}");
        assert!(text[3].contains('█'), "{text:#?}");
    }

    /// A compacted object's bytes are spread over its arrival times; nothing is lost to
    /// rounding, and a generation that starts later leaves the columns before it blank.
    #[test]
    fn compacted_bytes_are_spread_and_generations_start_where_they_start() {
        let t0 = 1_800_000_000_000;
        let mut big = seg(1, 0, 1_000_003, t0, t0 + 10 * H, 'a');
        big.name = big.name.v2(2);
        let mut snap1 = snap(1, 0, t0, 'a');
        snap1.name = snap1.name.v2(0);
        let c = catalog(vec![
            snap1,
            big,
            snap(2, 0, t0 + 15 * H, 'b'),
            seg(2, 0, 10, t0 + 15 * H, t0 + 16 * H, 'b'),
        ]);
        let t = Timeline::new(&c, t0 + 20 * H, 20);
        let g1 = &t.generations[0];
        assert_eq!(g1.bytes.iter().sum::<u64>(), 1_000_003);
        let used: Vec<u64> = g1.bytes.iter().copied().filter(|b| *b > 0).collect();
        assert_eq!(used.len(), 10, "{:?}", g1.bytes);
        assert!(
            used.iter().all(|b| b.abs_diff(100_000) <= 3),
            "{:?}",
            g1.bytes
        );
        let g2: String = t.generations[1].cells.iter().map(|c| c.symbol()).collect();
        assert!(g2.starts_with("               S"), "{g2:?}");
        assert!(g2.ends_with(' '), "{g2:?}");
    }
}
