//! Child processes that never outlive the test.
//!
//! [`ManagedChild`] wraps a `std::process::Child`:
//! - its pid is recorded in a process-wide list ([`live_children`]) until it
//!   has been reaped;
//! - dropping it (normally or while a test panics) kills it with SIGKILL and
//!   reaps it;
//! - a small `sh` watchdog polls the test process once a second and kills the
//!   child if the test process disappears without running destructors
//!   (SIGKILL, abort).
//!
//! Signals are sent with the `kill` command (no `libc`), and only to a child
//! that has not been reaped yet, so the pid cannot have been reused.

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::util::{read_tail, temp_dir};

static LIVE: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

fn register(pid: u32, name: &str) {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((pid, name.to_string()));
}

fn unregister(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// Pids and names of the children started by the harness that have not been
/// reaped yet.
pub fn live_children() -> Vec<(u32, String)> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A child process owned by the harness (see the module documentation).
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    watchdog: Option<Child>,
}

impl ManagedChild {
    /// Spawns `cmd` (stdin from /dev/null unless set otherwise by the
    /// caller before); panics when it cannot be spawned.
    pub fn spawn(name: &str, cmd: &mut Command) -> ManagedChild {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        let pid = child.id();
        register(pid, name);
        let watchdog = spawn_watchdog(pid);
        ManagedChild {
            name: name.to_string(),
            child,
            status: None,
            watchdog,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(st)) => self.reaped(st),
                Ok(None) => {}
                Err(e) => panic!("try_wait on {} (pid {}): {e}", self.name, self.pid()),
            }
        }
        self.status
    }

    fn reaped(&mut self, st: ExitStatus) {
        self.status = Some(st);
        unregister(self.child.id());
        self.stop_watchdog();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (a name such as `TERM`, `INT`, `STOP`, `CONT`) if the
    /// process is still running. Returns whether it was sent.
    pub fn signal(&mut self, signal: &str) -> bool {
        if !self.is_running() {
            return false;
        }
        // Not reaped yet, so the pid is still ours even if it just exited.
        Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// SIGKILL, then reap. Returns the exit status.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            return st;
        }
        let _ = self.child.kill();
        let st = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait on {} (pid {}): {e}", self.name, self.pid()));
        self.reaped(st);
        st
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal("TERM");
        match self.wait_timeout(grace) {
            Some(st) => st,
            None => self.kill9(),
        }
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
            unregister(self.child.id());
        }
        self.stop_watchdog();
    }
}

/// A shell loop that kills `child` once this test process is gone. It exits
/// by itself as soon as `child` is gone (or is killed by [`ManagedChild`]).
fn spawn_watchdog(child: u32) -> Option<Child> {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do \
             kill -0 {child} 2>/dev/null || exit 0; sleep 1; \
         done; kill -9 {child} 2>/dev/null; exit 0"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Runs `cmd` to completion with stdout/stderr captured, killing it after
/// `timeout`.
pub fn run_with_timeout(what: &str, cmd: &mut Command, timeout: Duration) -> Output {
    let dir = temp_dir("cmd");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"));
    let mut child = ManagedChild::spawn(what, cmd);
    let status = match child.wait_timeout(timeout) {
        Some(st) => st,
        None => {
            child.kill9();
            panic!(
                "{what} ({cmd:?}) did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                read_tail(&out_path, 40),
                read_tail(&err_path, 40)
            );
        }
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}
