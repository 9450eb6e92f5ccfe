//! Small utilities: ports, binaries, polling, temporary directories.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The only address the harness binds or connects to.
pub const LOCALHOST: &str = "127.0.0.1";

/// A new temporary directory (removed when dropped), named after `prefix`.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pitr-{prefix}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// Ports already handed out by this process (never handed out twice).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
/// Counter that walks through the candidate range.
static PORT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The kernel's ephemeral port range (outgoing connections take their local
/// port from it), from `/proc`; `(32768, 60999)` when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (32768, 60999),
    }
}

/// A TCP port on 127.0.0.1 that is free right now and that this process has
/// not handed out before.
///
/// Ports are taken *outside* the kernel's ephemeral range (so that the local
/// end of some outgoing connection cannot grab a port between this call and
/// the server binding it), starting at an offset derived from the process id
/// and the clock (so concurrent test processes spread out), and each
/// candidate is checked by binding it. Servers started by the harness also
/// retry with new ports if their bind still fails.
pub fn free_port() -> u16 {
    let (eph_lo, eph_hi) = ephemeral_range();
    let (lo, hi): (u32, u32) = if eph_lo >= 12_000 {
        (10_000, u32::from(eph_lo) - 1)
    } else if eph_hi <= 55_000 {
        (u32::from(eph_hi) + 1, 65_000)
    } else {
        (0, 0)
    };
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    if hi > lo {
        let span = u64::from(hi - lo + 1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Same seed for the whole process: the counter walks from there.
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            (u64::from(std::process::id()).wrapping_mul(7919) ^ nanos.wrapping_mul(31)) % span
        });
        for _ in 0..span.min(5_000) {
            let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
            let port = (u64::from(lo) + (seed + n) % span) as u16;
            if handed.contains(&port) {
                continue;
            }
            if TcpListener::bind((LOCALHOST, port)).is_ok() {
                handed.insert(port);
                return port;
            }
        }
    }
    // Fallback: let the kernel choose.
    for _ in 0..100 {
        let port = TcpListener::bind((LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
        if handed.insert(port) {
            return port;
        }
    }
    panic!("free_port: could not find a free port on 127.0.0.1");
}

/// How to install a binary the harness needs.
fn install_hint(name: &str) -> String {
    let specific = match name {
        "redis-server" | "redis-cli" => "bash scripts/install-deps.sh redis   \
             (apt-get install redis-server redis-tools)"
            .to_string(),
        "garage" => "bash scripts/install-deps.sh garage   \
             (cargo install garage --version 2.5.0 --locked: about 12 minutes on 2 cores)"
            .to_string(),
        "valkey-server" | "valkey-cli" => "apt-get install -y valkey-server".to_string(),
        other => format!("install `{other}`"),
    };
    format!(
        "{specific}\n  or run: bash scripts/install-deps.sh   (installs everything the tests need)"
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `name` on `PATH`, then in `$CARGO_HOME/bin` and `~/.cargo/bin`.
///
/// Panics (the test fails, it never silently passes) with the command that
/// installs the binary when it cannot be found. A path containing a `/` is
/// taken as is (it must exist).
pub fn require_binary(name: &str) -> PathBuf {
    if name.contains('/') {
        let p = PathBuf::from(name);
        if is_executable(&p) {
            return p;
        }
        panic!("\n\n*** required binary `{name}` does not exist or is not executable ***\n\n");
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(ch) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(ch).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    for d in dirs {
        let p = d.join(name);
        if is_executable(&p) {
            return p;
        }
    }
    panic!(
        "\n\n*** required binary `{name}` not found on PATH or in ~/.cargo/bin ***\n\
         The integration tests need it; install it with:\n  {}\n\n",
        install_hint(name)
    );
}

/// Polls `cond` every 50 ms until it returns true; panics (naming the
/// caller's location) when `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) {
    let loc = std::panic::Location::caller();
    if !poll(timeout, cond) {
        panic!("wait_until: condition at {loc} still false after {timeout:?}");
    }
}

/// Like [`wait_until`], with a description of what is awaited in the panic.
#[track_caller]
pub fn wait_until_msg(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    let loc = std::panic::Location::caller();
    if !poll(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for: {what} (at {loc})");
    }
}

/// Polls `cond` until it is true (returns true) or `timeout` passes (false).
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a text file ("" when it does not exist).
pub fn read_tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Random lowercase hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Copies the directory tree `from` into `to` (created if missing; files already in `to` with
/// the same names are overwritten): regular files and directories only.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read_dir {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", from.display()));
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e
            .file_type()
            .unwrap_or_else(|err| panic!("file type of {}: {err}", src.display()));
        if ty.is_dir() {
            copy_tree(&src, &dst);
        } else if ty.is_file() {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|err| panic!("copy {} to {}: {err}", src.display(), dst.display()));
        }
    }
}

/// Every file below `dir`, in no particular order (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
