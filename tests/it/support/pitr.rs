//! Running the crate's own `pitr` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::process::{run_with_timeout, ManagedChild};
use super::util::{read_tail, temp_dir};

/// Default limit for a one-shot [`run_pitr`].
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Path of the `pitr` binary built by cargo for this test run.
pub fn pitr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pitr"))
}

fn pitr_command(args: &[&str], envs: &[(String, String)]) -> Command {
    let mut cmd = Command::new(pitr_bin());
    cmd.args(args).stdin(Stdio::null());
    // Logs are what a failing test shows: default to info unless the test
    // or the environment says otherwise.
    if std::env::var_os("RUST_LOG").is_none() && !envs.iter().any(|(k, _)| k == "RUST_LOG") {
        cmd.env("RUST_LOG", "info");
    }
    cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// A long-running `pitr` process (e.g. the archiver). stdout and stderr go
/// to files in its own temporary directory; dropping it kills the process.
pub struct PitrProcess {
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Mutex<ManagedChild>,
}

impl PitrProcess {
    /// Spawns `pitr <args>` with `envs` added to the environment.
    pub fn spawn(args: &[&str], envs: &[(String, String)]) -> PitrProcess {
        let dir = temp_dir("pitr-proc");
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout.log");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let mut cmd = pitr_command(args, envs);
        cmd.stdout(stdout).stderr(stderr);
        let child = ManagedChild::spawn("pitr", &mut cmd);
        PitrProcess {
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: Mutex::new(child),
        }
    }

    fn guard(&self) -> MutexGuard<'_, ManagedChild> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.guard().pid()
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Its directory (stdout.log, stderr.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        let b = std::fs::read(self.dir.path().join("stdout.log")).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        let b = std::fs::read(self.dir.path().join("stderr.log")).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// stdout and stderr so far, with headers.
    pub fn log(&self) -> String {
        format!(
            "--- pitr {:?} stdout ---\n{}\n--- pitr stderr ---\n{}",
            self.args,
            self.stdout(),
            self.stderr()
        )
    }

    /// The last `lines` lines of stdout and of stderr, with headers.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- pitr {:?} stdout (tail) ---\n{}\n--- pitr stderr (tail) ---\n{}",
            self.args,
            read_tail(&self.dir.path().join("stdout.log"), lines),
            read_tail(&self.dir.path().join("stderr.log"), lines)
        )
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.guard().is_running()
    }

    /// Exit status if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.guard().try_wait()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        self.guard().wait_timeout(timeout)
    }

    /// SIGKILL and reap.
    pub fn kill9(&self) -> ExitStatus {
        self.guard().kill9()
    }

    /// Sends SIGTERM (`kill -TERM <pid>`), without waiting.
    pub fn sigterm(&self) -> bool {
        self.guard().signal("TERM")
    }

    /// Sends SIGINT, without waiting.
    pub fn sigint(&self) -> bool {
        self.guard().signal("INT")
    }

    /// Sends any signal by name (`STOP`, `CONT`, `HUP`, ...), without waiting.
    pub fn signal(&self, name: &str) -> bool {
        self.guard().signal(name)
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; panics with the
    /// log if it does not exit in time or exits unsuccessfully.
    pub fn stop_gracefully(&self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        match self.wait_timeout(timeout) {
            Some(st) if st.success() => st,
            Some(st) => panic!("pitr exited with {st} after SIGTERM\n{}", self.log()),
            None => {
                let log = self.log_tail(80);
                self.kill9();
                panic!("pitr did not exit within {timeout:?} after SIGTERM\n{log}")
            }
        }
    }

    /// Waits until stdout or stderr contains `needle`; panics with the log on
    /// timeout, or if the process exits first.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return;
            }
            if let Some(st) = self.try_wait() {
                if self.stdout().contains(needle) || self.stderr().contains(needle) {
                    return;
                }
                panic!(
                    "pitr exited with {st} before logging {needle:?}\n{}",
                    self.log_tail(80)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "pitr did not log {needle:?} within {timeout:?}\n{}",
                    self.log_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics with the log if the process has exited.
    #[track_caller]
    pub fn assert_running(&self) {
        if let Some(st) = self.try_wait() {
            panic!("pitr exited unexpectedly with {st}\n{}", self.log_tail(80));
        }
    }
}

/// Runs `pitr <args>` to completion (killed after 10 minutes) and returns
/// its output; does not check the exit status.
pub fn run_pitr(args: &[&str], envs: &[(String, String)]) -> Output {
    run_pitr_timeout(args, envs, RUN_TIMEOUT)
}

/// [`run_pitr`] with an explicit time limit (panics when it is exceeded).
pub fn run_pitr_timeout(args: &[&str], envs: &[(String, String)], timeout: Duration) -> Output {
    let mut cmd = pitr_command(args, envs);
    run_with_timeout(&format!("pitr {args:?}"), &mut cmd, timeout)
}

/// Runs `pitr <args>`, panics (showing stdout and stderr) unless it exits
/// with status 0, and returns stdout.
#[track_caller]
pub fn run_pitr_ok(args: &[&str], envs: &[(String, String)]) -> String {
    let out = run_pitr(args, envs);
    if !out.status.success() {
        panic!(
            "pitr {args:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
