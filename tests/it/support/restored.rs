//! Starting a stock redis-server on the files a restore wrote.

use std::time::Duration;

use super::process::ManagedChild;
use super::util::{free_port, require_binary, wait_until_msg};

/// Starts `redis-server` with the command line `pitr restore --output-dir` printed (plus a free
/// loopback port, and no saving), waits until it has loaded everything, and returns it (killed
/// on drop) with its port.
pub fn start_from(command_line: &str) -> (ManagedChild, u16) {
    start_from_with(&super::redis_server::redis_server_bin(), command_line)
}

/// Like [`start_from`], with the server binary `bin` in place of the line's first word
/// (`redis-server` or `valkey-server`).
pub fn start_from_with(bin: &std::path::Path, command_line: &str) -> (ManagedChild, u16) {
    let port = free_port();
    let words: Vec<&str> = command_line.split_whitespace().collect();
    assert!(
        matches!(words.first(), Some(&"redis-server" | &"valkey-server")),
        "{command_line}"
    );
    let mut cmd = std::process::Command::new(bin);
    cmd.args(&words[1..])
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = ManagedChild::spawn("redis-server", &mut cmd);
    let url = format!("redis://127.0.0.1:{port}");
    wait_until_msg(
        Duration::from_secs(60),
        "the restored server to load",
        || {
            let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
            else {
                return false;
            };
            redis::cmd("INFO")
            .arg("persistence")
            .query::<String>(&mut c)
            .is_ok_and(|i| i.contains("loading:0"))
            // A multi-part AOF loads file by file: PING answers only once all are loaded.
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        },
    );
    (child, port)
}

/// A connection to a local server.
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"))
}

/// A stock redis-server started on the files of a `--output-dir` restore.
pub struct RestoredFiles {
    /// The restore's `--json` report.
    pub report: serde_json::Value,
    pub port: u16,
    _server: ManagedChild,
    _dir: tempfile::TempDir,
}

impl RestoredFiles {
    pub fn con(&self) -> redis::Connection {
        connect(self.port)
    }
}

impl super::archiving::Archive {
    /// Restores `to` into a new, empty redis-server; returns it with the report.
    pub fn restore_into_new_server(
        &self,
        to: &str,
        extra: &[&str],
    ) -> (super::redis_server::RedisServer, serde_json::Value) {
        self.restore_into_new_server_with(&super::redis_server::redis_server_bin(), to, extra)
    }

    /// Like [`restore_into_new_server`](Self::restore_into_new_server), a server of `bin`.
    pub fn restore_into_new_server_with(
        &self,
        bin: &std::path::Path,
        to: &str,
        extra: &[&str],
    ) -> (super::redis_server::RedisServer, serde_json::Value) {
        let target = super::redis_server::RedisServer::start_with(bin, &[]);
        let url = super::archiving::plain_url(&target);
        let mut args = vec!["--target", url.as_str()];
        args.extend_from_slice(extra);
        let report = self.restore(to, &args);
        (target, report)
    }

    /// Restores `to` as files into a new directory and starts redis-server on them with the
    /// command line the restore printed.
    pub fn restore_as_files_and_start(&self, to: &str, extra: &[&str]) -> RestoredFiles {
        self.restore_as_files_and_start_with(&super::redis_server::redis_server_bin(), to, extra)
    }

    /// Like [`restore_as_files_and_start`](Self::restore_as_files_and_start), started with
    /// `bin`.
    pub fn restore_as_files_and_start_with(
        &self,
        bin: &std::path::Path,
        to: &str,
        extra: &[&str],
    ) -> RestoredFiles {
        let dir = super::util::temp_dir("pitr-restore");
        let out = dir.path().join("data").to_string_lossy().into_owned();
        let mut args = vec!["--output-dir", out.as_str()];
        args.extend_from_slice(extra);
        let report = self.restore(to, &args);
        let line = report["files"]["command_line"]
            .as_str()
            .unwrap_or_else(|| panic!("no command line in {report}"));
        let (server, port) = start_from_with(bin, line);
        RestoredFiles {
            report,
            port,
            _server: server,
            _dir: dir,
        }
    }
}
