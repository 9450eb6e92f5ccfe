//! What the commands print: standard output through [`Out`], which stops quietly when the
//! reader has gone (`pitr ls | head -1`), and how times and sizes are shown.

use std::io::{self, Write};

use bytesize::ByteSize;

/// Standard output for a command's report. A closed pipe is not an error: the rest of the
/// output is dropped and the command still ends with the exit code of its outcome. Any other
/// write error is returned.
pub struct Out<W: Write = io::Stdout> {
    w: W,
    closed: bool,
}

impl Out {
    pub fn stdout() -> Out {
        Out::new(io::stdout())
    }
}

impl<W: Write> Out<W> {
    pub fn new(w: W) -> Self {
        Out { w, closed: false }
    }

    /// Writes one line.
    pub fn line(&mut self, args: std::fmt::Arguments<'_>) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self
            .w
            .write_fmt(args)
            .and_then(|()| self.w.write_all(b"\n"));
        self.check(r)
    }

    /// Pushes out what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.flush();
        self.check(r)
    }

    fn check(&mut self, r: io::Result<()>) -> io::Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

/// `outln!(out, "format", args…)`: one line on `out`, `?` on the error.
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))?
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;

/// A moment as RFC 3339 in UTC with milliseconds; out-of-range values are still printed.
pub fn fmt_time(ms: u64) -> String {
    redis_pitr::replay::plan::fmt_ms(ms)
}

/// A size in binary units: `512 B`, `64.0 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    ByteSize(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone after `room` bytes.
    struct Pipe {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room - self.got.len());
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_output_quietly() {
        let mut out = Out::new(Pipe {
            room: 8,
            got: Vec::new(),
        });
        for i in 0..100 {
            out.line(format_args!("line {i}")).unwrap();
        }
        out.flush().unwrap();
        assert!(out.closed);
        assert_eq!(out.w.got, b"line 0\nl");
    }

    #[test]
    fn other_write_errors_are_errors() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28)) // ENOSPC
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Out::new(Full);
        assert!(out.line(format_args!("x")).is_err());
        assert!(!out.closed);
    }

    #[test]
    fn sizes_and_times_print() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(64 << 20), "64.0 MiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_time(1795515330250), "2026-11-24T10:15:30.250Z");
        // Past what the calendar handles: printed, not a panic.
        assert!(fmt_time(u64::MAX).contains(&u64::MAX.to_string()));
    }
}
