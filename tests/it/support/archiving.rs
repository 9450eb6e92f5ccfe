//! An archive under test and the master it archives: running `pitr archive`, `ls`, `verify`
//! and `restore` on it, and waiting for the archiver from the master's side.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::pitr::{run_pitr, run_pitr_ok, PitrProcess};
use super::redis_server::RedisServer;
use super::util::{temp_dir, wait_until_msg};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// The master's `master_repl_offset`.
pub fn master_offset(r: &RedisServer) -> u64 {
    r.info("replication")["master_repl_offset"]
        .parse()
        .expect("master_repl_offset is a number")
}

/// Waits until the archiver is an online replica of `r`.
pub fn wait_online(r: &RedisServer, timeout: Duration) {
    wait_until_msg(timeout, "the archiver to be an online replica", || {
        r.info("replication")
            .get("slave0")
            .is_some_and(|s| s.contains("state=online"))
    });
}

/// `WAIT 1 <ms>` on the connection that made the writes: how many replicas acked them.
pub fn wait_archived(con: &mut redis::Connection, ms: u64) -> i64 {
    redis::cmd("WAIT")
        .arg(1)
        .arg(ms)
        .query(con)
        .expect("WAIT answers")
}

/// Runs one command on `con`, panicking on an error reply.
pub fn exec(con: &mut redis::Connection, args: &[&str]) {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query::<redis::Value>(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// `redis://127.0.0.1:<port>` (no password).
pub fn plain_url(r: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", r.port())
}

/// One archive: a local directory, or a store URL with the environment it needs.
pub struct Archive {
    store: String,
    envs: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Archive {
    /// A new archive in a temporary directory.
    pub fn local() -> Archive {
        let dir = temp_dir("pitr-archive");
        Archive {
            store: dir.path().to_string_lossy().into_owned(),
            envs: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// An archive at `store` (for example `s3://…`), reached with `envs`.
    pub fn at(store: String, envs: Vec<(String, String)>) -> Archive {
        Archive {
            store,
            envs,
            _dir: None,
        }
    }

    pub fn store(&self) -> &str {
        &self.store
    }

    /// `pitr archive` of `source` into this archive, with more arguments and environment.
    pub fn archiver_with(
        &self,
        source: &str,
        extra_args: &[&str],
        extra_envs: &[(String, String)],
    ) -> PitrProcess {
        let mut args = vec!["archive", "--source", source, "--store", &self.store];
        args.extend_from_slice(extra_args);
        let mut envs = self.envs.clone();
        envs.extend_from_slice(extra_envs);
        PitrProcess::spawn(&args, &envs)
    }

    /// `pitr archive` of the (password-less) master `r`.
    pub fn archiver(&self, r: &RedisServer, extra_args: &[&str]) -> PitrProcess {
        self.archiver_with(&plain_url(r), extra_args, &[])
    }

    /// `pitr <command> --store <this> <args…> --json`, which must succeed; its JSON.
    pub fn json(&self, command: &str, args: &[&str]) -> Value {
        let mut all = vec![command, "--store", &self.store];
        all.extend_from_slice(args);
        all.push("--json");
        let out = run_pitr_ok(&all, &self.envs);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("pitr {command} --json: {e}\n{out}"))
    }

    /// `pitr ls --objects`: every object listed.
    pub fn ls(&self) -> Value {
        self.json("ls", &["--objects"])
    }

    /// `pitr ls` as users run it: each generation by its snapshots and newest objects. Checks
    /// that it agrees with `--objects` on every generation's window and snapshots (call it
    /// while nothing writes to the archive).
    pub fn ls_summary(&self) -> Value {
        let summary = self.json("ls", &[]);
        let whole = self.ls();
        let window = |v: &Value| -> Vec<Value> {
            v["generations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    serde_json::json!([
                        g["id"],
                        g["first_offset"],
                        g["last_offset"],
                        g["first_time_ms"],
                        g["last_time_ms"],
                        g["snapshots"],
                        g["replid"]
                    ])
                })
                .collect()
        };
        assert_eq!(
            window(&summary),
            window(&whole),
            "pitr ls and pitr ls --objects disagree:\n{summary:#}\n{whole:#}"
        );
        summary
    }

    /// `pitr snapshot --source <r> --timeout 60s --json` beside a running archiver, which must
    /// succeed; its JSON.
    pub fn snapshot_now(&self, r: &RedisServer) -> Value {
        self.json("snapshot", &["--source", &plain_url(r), "--timeout", "60s"])
    }

    /// `pitr verify`, which must find the archive sound.
    pub fn verify(&self) -> Value {
        let out = run_pitr(&["verify", "--store", &self.store, "--json"], &self.envs);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success() && v["ok"] == true,
            "verify failed: {v:#}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        v
    }

    /// `pitr restore --to <to> <args…> --json`.
    pub fn restore(&self, to: &str, args: &[&str]) -> Value {
        let mut all = vec!["--to", to];
        all.extend_from_slice(args);
        self.json("restore", &all)
    }

    /// Waits until the newest generation ends at the master's current offset; returns it.
    pub fn caught_up(&self, r: &RedisServer, timeout: Duration) -> Value {
        let want = master_offset(r);
        wait_until_msg(timeout, "the archive to catch up", || {
            self.ls()["generations"]
                .as_array()
                .and_then(|g| g.last())
                .is_some_and(|g| g["last_offset"].as_u64() == Some(want))
        });
        self.ls()["generations"]
            .as_array()
            .and_then(|g| g.last())
            .cloned()
            .expect("a generation")
    }

    /// Archives `r` until `after` (writes made while the archiver is attached) is archived,
    /// then stops the archiver cleanly.
    pub fn archive_while(&self, r: &RedisServer, after: impl FnOnce(&mut redis::Connection)) {
        let p = self.archiver(r, &[]);
        wait_online(r, Duration::from_secs(60));
        let mut con = r.client();
        after(&mut con);
        assert_eq!(
            wait_archived(&mut con, 5000),
            1,
            "the writes were not archived"
        );
        p.stop_gracefully(Duration::from_secs(30));
    }
}
