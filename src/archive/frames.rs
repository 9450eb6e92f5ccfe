//! Snapshot bodies as a run of independent zstd frames.
//!
//! The archiver ends a frame every [`FRAME_RAW`] raw bytes, so that a reader can decompress
//! several frames at once, one per core; any zstd reader still reads the body as one stream
//! (concatenated frames are a zstd stream). Bodies written as one frame (by earlier versions)
//! are read as before, by one thread.
//!
//! - [`FrameEncoder`]: raw bytes in, compressed frames appended to a buffer.
//! - [`decompress`]: a body (any run of frames) to raw pieces in order, in parallel when its
//!   frames are small enough, with memory bounded either way.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::{Bytes, BytesMut};
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// Raw bytes per frame written by the archiver. Small frames keep what parallel readers hold
/// small (a few frames per thread); zstd at level 3 matches within 2 MiB anyway, so the
/// body is no larger than as one frame.
pub const FRAME_RAW: usize = 2 << 20;

/// Raw bytes per piece handed to a reader's consumer.
pub const RAW_PIECE: usize = 1 << 20;

/// A frame whose compressed size passes this is not split off for a worker: the rest of the
/// body is decompressed in order by one thread (a body written as one frame, say). A frame of
/// [`FRAME_RAW`] raw bytes compresses to at most a little more than that.
const MAX_SPLIT_FRAME: usize = FRAME_RAW + FRAME_RAW / 8;

/// Compressed bytes read from the body at a time.
const READ_PIECE: usize = 1 << 20;

/// Decompression threads at most (more would hold more pieces in memory for little gain).
const MAX_WORKERS: usize = 4;

/// Compresses raw bytes into frames of [`FRAME_RAW`] raw bytes each.
pub struct FrameEncoder {
    enc: Encoder<'static>,
    /// Raw bytes in the frame being written.
    in_frame: usize,
    frames: u64,
}

impl FrameEncoder {
    pub fn new(level: i32) -> io::Result<FrameEncoder> {
        Ok(FrameEncoder {
            enc: Encoder::new(level)?,
            in_frame: 0,
            frames: 0,
        })
    }

    /// Compresses `data`, appending to `out`; ends a frame at every [`FRAME_RAW`] raw bytes.
    pub fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !data.is_empty() {
            let n = (FRAME_RAW - self.in_frame).min(data.len());
            let mut input = InBuffer::around(&data[..n]);
            while input.pos() < n {
                out.reserve(128 << 10);
                let at = out.len();
                self.enc
                    .run(&mut input, &mut OutBuffer::around_pos(out, at))?;
            }
            self.in_frame += n;
            data = &data[n..];
            if self.in_frame == FRAME_RAW {
                self.end_frame(out)?;
            }
        }
        Ok(())
    }

    /// Ends the last frame (an empty one if nothing was written at all).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.in_frame > 0 || self.frames == 0 {
            self.end_frame(out)?;
        }
        Ok(())
    }

    fn end_frame(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.reserve(64 << 10);
            let at = out.len();
            if self.enc.finish(&mut OutBuffer::around_pos(out, at), true)? == 0 {
                break;
            }
        }
        self.enc.reinit()?;
        self.in_frame = 0;
        self.frames += 1;
        Ok(())
    }
}

/// Why a body could not be decompressed: the byte of the body where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub at: u64,
    pub what: String,
}

/// Decompresses `body` (its compressed bytes, to their end) and hands the raw bytes to
/// `on_piece` in order, in pieces of at most [`RAW_PIECE`]. With `workers` above 1, frames
/// are decompressed that many at a time. An error from `on_piece` stops it and is returned as
/// is (at the body byte reached). Returns the raw length.
pub fn decompress(
    body: &mut (dyn Read + Send),
    workers: usize,
    on_piece: &mut dyn FnMut(Bytes) -> Result<(), String>,
) -> Result<u64, BodyError> {
    let workers = workers.clamp(1, MAX_WORKERS);
    if workers == 1 {
        let mut raw_len = 0u64;
        let mut input = io::BufReader::with_capacity(READ_PIECE, body);
        let mut dec = new_decoder(0).map_err(Stop::into_body_error)?;
        decode_stream(&mut dec, &mut input, 0, &mut |piece| {
            raw_len += piece.len() as u64;
            on_piece(piece).map_err(Stop::Consumer)
        })
        .map_err(Stop::into_body_error)?;
        return Ok(raw_len);
    }
    parallel(body, workers, on_piece)
}

/// Why a decode stopped.
enum Stop {
    /// The body is bad (at a body byte).
    Body(BodyError),
    /// The consumer refused a piece.
    Consumer(String),
}

impl Stop {
    fn into_body_error(self) -> BodyError {
        match self {
            Stop::Body(e) => e,
            Stop::Consumer(what) => BodyError { at: 0, what },
        }
    }
}

/// Decodes a run of frames from `input` in order with `dec`; `base` is the body byte where
/// `input` starts.
fn decode_stream(
    dec: &mut Decoder<'static>,
    input: &mut dyn BufRead,
    base: u64,
    send: &mut dyn FnMut(Bytes) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let mut consumed = 0u64;
    let mut raw_len = 0u64;
    // What the decoder still needs to end its frame: 0 between frames.
    let mut pending = 0usize;
    let zerr = |at: u64, raw_len: u64, e: io::Error| {
        body_err(at, format!("zstd body, after {raw_len} raw bytes: {e}"))
    };
    loop {
        // Each piece is decompressed into its own buffer and handed over as it is.
        let mut out = Vec::with_capacity(RAW_PIECE);
        while out.len() < RAW_PIECE {
            let avail = input
                .fill_buf()
                .map_err(|e| zerr(base + consumed, raw_len, e))?;
            let eof = avail.is_empty();
            let before = out.len();
            let mut ib = InBuffer::around(avail);
            let hint = dec
                .run(&mut ib, &mut OutBuffer::around_pos(&mut out, before))
                .map_err(|e| zerr(base + consumed, raw_len, e))?;
            let used = ib.pos();
            input.consume(used);
            consumed += used as u64;
            if used == 0 && out.len() == before {
                if eof {
                    // All input read and nothing more to flush.
                    break;
                }
            } else {
                // A call that did nothing says what a next frame would need: not this.
                pending = hint;
            }
        }
        if out.is_empty() {
            break;
        }
        raw_len += out.len() as u64;
        send(Bytes::from(out))?;
    }
    if pending != 0 {
        return Err(body_err(
            base + consumed,
            format!("zstd body ends inside a frame, after {raw_len} raw bytes"),
        ));
    }
    Ok(())
}

fn new_decoder(at: u64) -> Result<Decoder<'static>, Stop> {
    Decoder::new().map_err(|e| body_err(at, format!("zstd: {e}")))
}

fn body_err(at: u64, what: String) -> Stop {
    Stop::Body(BodyError { at, what })
}

/// What the splitter hands the consumer, in body order: the pieces of one frame (or of the
/// rest of the body), or an error of the splitter itself.
type Pieces = Receiver<Result<Bytes, Stop>>;

/// A frame for a worker: its body byte, its compressed bytes, where its pieces go.
type Job = (u64, Bytes, SyncSender<Result<Bytes, Stop>>);

/// Frames per job channel: a worker may run this many pieces ahead of the consumer.
const PIECES_AHEAD: usize = FRAME_RAW / RAW_PIECE + 1;

fn parallel(
    body: &mut (dyn Read + Send),
    workers: usize,
    on_piece: &mut dyn FnMut(Bytes) -> Result<(), String>,
) -> Result<u64, BodyError> {
    // A frame is handed straight to an idle worker (no queue of compressed frames), and at
    // most `workers` frames wait behind the one being consumed, each with at most a frame of
    // pieces: for incompressible data about 2 × (workers + 1) × FRAME_RAW in all. The job
    // channel has no capacity and every worker receives from it: a send completes only when a
    // worker takes the frame.
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(0);
    let (order_tx, order_rx) = sync_channel::<Pieces>(workers);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            s.spawn(move || {
                // One decoder per worker, reset for each frame (also after an error).
                let mut dec: Option<Decoder<'static>> = None;
                // Ends when the splitter is done (or stopped) and drops the sender.
                for (at, frame, tx) in job_rx.iter() {
                    let d = match dec.take().map(|mut d| d.reinit().map(|_| d)) {
                        Some(Ok(d)) => Ok(d),
                        _ => new_decoder(at),
                    };
                    let r = d.and_then(|mut d| {
                        let r = decode_stream(&mut d, &mut &frame[..], at, &mut |piece| {
                            tx.send(Ok(piece))
                                .map_err(|_| Stop::Consumer(String::new()))
                        });
                        dec = Some(d);
                        r
                    });
                    if let Err(e) = r {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
        s.spawn(move || split(body, job_tx, order_tx));
        let mut raw_len = 0u64;
        for pieces in order_rx {
            for piece in pieces {
                let piece = piece.map_err(Stop::into_body_error)?;
                raw_len += piece.len() as u64;
                on_piece(piece).map_err(|what| BodyError { at: 0, what })?;
            }
        }
        // Dropping the receivers (on an error above) stops the splitter and the workers.
        Ok(raw_len)
    })
}

/// Reads the body, splits whole frames off for the workers, and queues their pieces'
/// receivers in order. A frame too large to split (or a body that is not whole frames) goes
/// to one in-order decoder for the rest of the body, which also names any error.
fn split(
    body: &mut (dyn Read + Send),
    job_tx: crossbeam_channel::Sender<Job>,
    order_tx: SyncSender<Pieces>,
) {
    let mut held = BytesMut::new();
    let mut at = 0u64;
    let mut eof = false;
    loop {
        // Split off every whole frame held.
        while !held.is_empty() {
            let Ok(n) = zstd::zstd_safe::find_frame_compressed_size(&held) else {
                break;
            };
            if n == 0 || n > held.len() {
                break;
            }
            // A copy of exactly the frame: a slice of `held` would keep all of its buffer.
            let frame = Bytes::copy_from_slice(&held[..n]);
            bytes::Buf::advance(&mut held, n);
            let (tx, rx) = sync_channel(PIECES_AHEAD);
            if order_tx.send(rx).is_err() || job_tx.send((at, frame, tx)).is_err() {
                return;
            }
            at += n as u64;
        }
        if eof || held.len() > MAX_SPLIT_FRAME {
            break;
        }
        let len = held.len();
        held.resize(len + READ_PIECE, 0);
        match body.read(&mut held[len..]) {
            Ok(got) => {
                held.truncate(len + got);
                eof = got == 0;
            }
            Err(e) => {
                held.truncate(len);
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(body_err(at + len as u64, format!("reading: {e}"))));
                let _ = order_tx.send(rx);
                return;
            }
        }
    }
    if held.is_empty() && eof {
        return;
    }
    // The rest in order, on this thread: what is held, then what is left of the body.
    let (tx, rx) = sync_channel(PIECES_AHEAD);
    if order_tx.send(rx).is_err() {
        return;
    }
    let mut rest = io::BufReader::with_capacity(READ_PIECE, Read::chain(&held[..], body));
    let r = new_decoder(at).and_then(|mut dec| {
        decode_stream(&mut dec, &mut rest, at, &mut |piece| {
            tx.send(Ok(piece))
                .map_err(|_| Stop::Consumer(String::new()))
        })
    });
    if let Err(e) = r {
        let _ = tx.send(Err(e));
    }
}

/// How many threads to decompress with: the machine's cores but two (a restore also writes
/// and parses what is decompressed, each on a thread of its own), at least 1, at most
/// [`MAX_WORKERS`]. On two cores, decompressing on both made the restore of a 574 MB snapshot
/// slower (0.41 s against 0.36 s) and held twice the memory.
/// `PITR_DECOMPRESS_THREADS` (1 to 4) overrides it.
pub fn default_workers() -> usize {
    if let Some(n) = std::env::var("PITR_DECOMPRESS_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n.clamp(1, MAX_WORKERS);
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .saturating_sub(2)
        .clamp(1, MAX_WORKERS)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Compressible but not trivial: a counter's decimal digits, `n` bytes of them.
    pub(crate) fn raw_data(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 16);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("{i},").as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn encode(raw: &[u8], write_size: usize) -> Vec<u8> {
        let mut enc = FrameEncoder::new(3).unwrap();
        let mut out = Vec::new();
        for w in raw.chunks(write_size) {
            enc.write(w, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        out
    }

    /// The error of a read that must fail (without printing what it read otherwise).
    fn read_err(body: &[u8], workers: usize) -> BodyError {
        match read_all(body, workers) {
            Ok((_, n)) => panic!("read {n} raw bytes, expected an error (workers {workers})"),
            Err(e) => e,
        }
    }

    fn read_all(body: &[u8], workers: usize) -> Result<(Vec<u8>, u64), BodyError> {
        let mut got = Vec::new();
        let mut src = body;
        let n = decompress(&mut src, workers, &mut |p| {
            assert!(!p.is_empty() && p.len() <= RAW_PIECE);
            got.extend_from_slice(&p);
            Ok(())
        })?;
        Ok((got, n))
    }

    #[test]
    fn frames_end_every_frame_raw_bytes_and_read_back_whole() {
        let raw = raw_data(3 * FRAME_RAW + 12345);
        let body = encode(&raw, 1_000_003);
        // Four frames, each found whole.
        let mut rest = &body[..];
        let mut frames = 0;
        while !rest.is_empty() {
            let n = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            rest = &rest[n..];
            frames += 1;
        }
        assert_eq!(frames, 4);
        for workers in [1, 2, 3] {
            let (got, n) = read_all(&body, workers).unwrap();
            assert_eq!(n, raw.len() as u64);
            assert!(got == raw, "workers {workers}");
        }
        // Any zstd reader reads the frames as one stream.
        assert!(zstd::decode_all(&body[..]).unwrap() == raw);
    }

    #[test]
    fn a_single_frame_body_and_an_empty_one_read_back() {
        let raw = raw_data(2 * MAX_SPLIT_FRAME + 99);
        // One frame of a highly compressible body: split off whole, then pieces in order.
        let body = zstd::bulk::compress(&raw, 1).unwrap();
        assert!(read_all(&body, 2).unwrap().0 == raw);
        // One frame larger than MAX_SPLIT_FRAME compressed: read in order by the splitter.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..MAX_SPLIT_FRAME + 5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let body = zstd::bulk::compress(&noise, 1).unwrap();
        assert!(body.len() > MAX_SPLIT_FRAME);
        assert!(read_all(&body, 2).unwrap().0 == noise);
        assert!(read_all(&body, 1).unwrap().0 == noise);
        let empty = encode(&[], 10);
        assert!(!empty.is_empty());
        for workers in [1, 2] {
            assert_eq!(read_all(&empty, workers).unwrap(), (Vec::new(), 0));
        }
    }

    #[test]
    fn cut_and_corrupt_bodies_are_errors_naming_the_byte() {
        let raw = raw_data(2 * FRAME_RAW + 777);
        let body = encode(&raw, 65536);
        let first = zstd::zstd_safe::find_frame_compressed_size(&body).unwrap();
        for workers in [1, 2] {
            // Cut inside the last frame.
            let e = read_err(&body[..body.len() - 7], workers);
            assert!(e.what.contains("ends inside a frame"), "{e:?}");
            assert!(e.at > first as u64, "{e:?}");
            // Garbage after the last frame.
            let mut longer = body.clone();
            longer.extend_from_slice(b"not a frame");
            let e = read_err(&longer, workers);
            assert!(e.what.contains("zstd body"), "{e:?}");
            assert!(e.at >= body.len() as u64 - 1, "{e:?} vs {}", body.len());
            // A broken second frame header: an error at that frame. (A flipped byte inside a
            // frame's data may decode to other bytes: the trailer's hash of the raw bytes is
            // what catches that.)
            let mut bad = body.clone();
            bad[first] ^= 0xff;
            let e = read_err(&bad, workers);
            assert!(e.at >= first as u64, "{e:?}");
        }
    }

    #[test]
    fn a_consumer_error_stops_every_thread() {
        let raw = raw_data(4 * FRAME_RAW);
        let body = encode(&raw, 1 << 20);
        for workers in [1, 2, 4] {
            let mut seen = 0;
            let mut src = &body[..];
            let e = decompress(&mut src, workers, &mut |_| {
                seen += 1;
                if seen == 3 {
                    Err("enough".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
            assert_eq!(e.what, "enough");
            assert_eq!(seen, 3);
        }
    }
}
