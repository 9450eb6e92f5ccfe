//! A throw-away `redis-server` (or Valkey, with `REDIS_SERVER_BIN`).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::process::ManagedChild;
use super::util::{free_port, read_tail, require_binary, temp_dir, LOCALHOST};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The server binary: `$REDIS_SERVER_BIN` (e.g. `valkey-server`) or `redis-server`.
pub fn redis_server_bin() -> PathBuf {
    let name = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string());
    require_binary(&name)
}

/// A `redis-server` on 127.0.0.1 and a free port, in its own temporary
/// directory (config file `redis.conf`, log `redis.log`, `dump.rdb`).
///
/// Defaults: `save ""`, `appendonly no`, `daemonize no`,
/// `enable-debug-command local`; `start`'s extra settings replace defaults of
/// the same name. All methods take `&self`, so a server can be shared with
/// other threads (e.g. behind an `Arc`). Dropping it kills the process and
/// removes the directory.
pub struct RedisServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: Mutex<u16>,
    config: Vec<(String, String)>,
    password: Option<String>,
    process: Mutex<Option<ManagedChild>>,
    conn: Mutex<Option<redis::Connection>>,
}

impl RedisServer {
    /// Starts a server with the default settings plus `extra_config`
    /// (`("requirepass", "s3cret")`, `("repl-diskless-sync", "no")`,
    /// `("repl-backlog-size", "1mb")`, ...). Values are written verbatim to
    /// the config file, so a multi-word value such as `("save", "900 1")`
    /// works; `""` is the empty value. Waits until it answers PING.
    pub fn start(extra_config: &[(&str, &str)]) -> RedisServer {
        RedisServer::start_with(&redis_server_bin(), extra_config)
    }

    /// Like [`start`](Self::start), with the server binary `bin` (another Redis version, or
    /// Valkey: see [`super::servers`]).
    pub fn start_with(bin: &Path, extra_config: &[(&str, &str)]) -> RedisServer {
        let mut config: Vec<(String, String)> = vec![
            ("save".into(), "\"\"".into()),
            ("appendonly".into(), "no".into()),
            ("daemonize".into(), "no".into()),
        ];
        // The setting came with 7.0; 6.x refuses to start on it.
        if super::servers::version(bin).0 >= 7 {
            config.push(("enable-debug-command".into(), "local".into()));
        }
        for (k, v) in extra_config {
            let key = k.to_ascii_lowercase();
            config.retain(|(ck, _)| *ck != key);
            let value = if v.is_empty() {
                "\"\"".to_string()
            } else {
                v.to_string()
            };
            config.push((key, value));
        }
        let password = config
            .iter()
            .rev()
            .find(|(k, _)| k == "requirepass")
            .map(|(_, v)| v.trim_matches('"').to_string())
            .filter(|v| !v.is_empty());
        let server = RedisServer {
            dir: temp_dir("redis"),
            bin: bin.to_path_buf(),
            port: Mutex::new(0),
            config,
            password,
            process: Mutex::new(None),
            conn: Mutex::new(None),
        };
        // A port can be taken by someone else between free_port() and the
        // bind: retry with a new one.
        let mut last_err = String::new();
        for _ in 0..5 {
            *server.port.lock().unwrap() = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(e) if e.contains("Address already in use") => last_err = e,
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        }
        panic!("redis-server did not start (port always taken): {last_err}");
    }

    fn write_config(&self) {
        let port = self.port();
        let mut text = String::new();
        text.push_str(&format!("bind {LOCALHOST}\n"));
        text.push_str(&format!("port {port}\n"));
        text.push_str(&format!("dir {}\n", self.dir.path().display()));
        text.push_str(&format!("logfile {}\n", self.log_path().display()));
        text.push_str("dbfilename dump.rdb\n");
        for (k, v) in &self.config {
            text.push_str(&format!("{k} {v}\n"));
        }
        std::fs::write(self.config_path(), text).expect("write redis.conf");
    }

    /// Spawns the process with the current port and config and waits for PING.
    fn launch(&self) -> Result<(), String> {
        self.write_config();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .expect("open redis stdout.log");
        let err = out.try_clone().expect("clone file handle");
        let mut cmd = Command::new(&self.bin);
        cmd.arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = ManagedChild::spawn("redis-server", &mut cmd);
        *self.conn.lock().unwrap() = None;
        *self.proc_guard() = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.proc_guard().as_mut().and_then(|c| c.try_wait()) {
                return Err(format!(
                    "redis-server exited with {st} during start (port {}); log tail:\n{}",
                    self.port(),
                    self.log_tail()
                ));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(c) = self.proc_guard().as_mut() {
                    c.kill9();
                }
                return Err(format!(
                    "redis-server did not answer PING within {START_TIMEOUT:?} (port {}); log tail:\n{}",
                    self.port(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PING answered with PONG (not LOADING, not an error).
    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
        matches!(redis::cmd("PING").query::<String>(&mut con), Ok(s) if s == "PONG")
    }

    fn proc_guard(&self) -> MutexGuard<'_, Option<ManagedChild>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until this replica's link to its master is up (`master_link_status:up`); `what`
    /// names the wait in the failure message.
    pub fn wait_in_sync(&self, what: &str) {
        super::util::wait_until_msg(Duration::from_secs(20), what, || {
            self.info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        });
    }

    /// TCP port (the same across restarts).
    pub fn port(&self) -> u16 {
        *self.port.lock().unwrap()
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        LOCALHOST
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.port())
    }

    /// `redis://127.0.0.1:<port>`, or `redis://:<password>@127.0.0.1:<port>`
    /// when `requirepass` is set.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{}@{LOCALHOST}:{}", percent_encode(p), self.port()),
            None => format!("redis://{LOCALHOST}:{}", self.port()),
        }
    }

    /// The `requirepass` value, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's directory (config, log, dump.rdb).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of `redis.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    /// Path of `redis.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Path of `dump.rdb` (exists only after a save).
    pub fn rdb_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// Pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        let mut g = self.proc_guard();
        let c = g.as_mut()?;
        if c.is_running() {
            Some(c.pid())
        } else {
            None
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// A new synchronous connection (5 s connect timeout, 60 s read and
    /// write timeouts); panics when the server cannot be reached.
    pub fn client(&self) -> redis::Connection {
        self.try_client().unwrap_or_else(|e| {
            panic!(
                "cannot connect to redis-server on port {}: {e}; log tail:\n{}",
                self.port(),
                self.log_tail()
            )
        })
    }

    /// Like [`RedisServer::client`], returning the error instead.
    pub fn try_client(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(60)))?;
        con.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(con)
    }

    /// Runs one command on a cached connection (reconnecting once if the
    /// connection broke). Server errors are returned as `Err`.
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        assert!(!args.is_empty(), "cmd: empty command");
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.try_client()?);
            }
            let con = guard.as_mut().unwrap();
            match c.query::<redis::Value>(con) {
                Ok(redis::Value::ServerError(e)) => return Err(e.into()),
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && (e.is_io_error() || e.is_connection_dropped()) => {
                    *guard = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Runs one command (`&["SET", "k", "v"]`) and returns its reply;
    /// panics on any error (with the log tail).
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args).unwrap_or_else(|e| {
            panic!(
                "redis command {args:?} failed on port {}: {e}; log tail:\n{}",
                self.port(),
                self.log_tail()
            )
        })
    }

    /// `INFO <section>` parsed into `field -> value`.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let v = self.cmd(&["INFO", section]);
        let text = value_to_string(&v);
        parse_info(&text)
    }

    /// The last 60 lines of `redis.log`.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), 60)
    }

    /// SIGKILL (no save, no goodbye to replicas).
    pub fn kill9(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut c) = self.proc_guard().take() {
            c.kill9();
        }
    }

    /// `SHUTDOWN NOSAVE` (graceful: Redis 7 first waits up to its
    /// `shutdown-timeout` for lagging replicas), then waits for the exit.
    pub fn stop(&self) {
        self.shutdown(false);
    }

    /// `SHUTDOWN SAVE` or `SHUTDOWN NOSAVE`, then waits for the process to
    /// exit (SIGTERM and then SIGKILL if it does not within 30 s). A no-op
    /// if it is not running.
    pub fn shutdown(&self, save: bool) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut guard = self.proc_guard();
        let Some(child) = guard.as_mut() else {
            return;
        };
        if !child.is_running() {
            *guard = None;
            return;
        }
        // The reply is normally a closed connection.
        if let Ok(client) = redis::Client::open(self.url()) {
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) {
                let _ = con.set_read_timeout(Some(STOP_TIMEOUT));
                let _ = redis::cmd("SHUTDOWN")
                    .arg(if save { "SAVE" } else { "NOSAVE" })
                    .query::<redis::Value>(&mut con);
            }
        }
        if child.wait_timeout(STOP_TIMEOUT).is_none() {
            child.terminate(Duration::from_secs(10));
        }
        *guard = None;
    }

    /// Starts the process again (same port, directory and config) after
    /// `stop`/`kill9`/`shutdown`, keeping the directory as it is: an existing
    /// `dump.rdb` is loaded. Panics if it is running.
    pub fn start_again(&self) {
        assert!(
            !self.is_running(),
            "start_again: redis-server is still running"
        );
        if let Err(e) = self.launch() {
            panic!("redis-server did not restart: {e}");
        }
    }

    /// Master restart without persistence: `SHUTDOWN NOSAVE` (if running),
    /// delete any `dump.rdb` (e.g. left by a disk-based full sync), start
    /// again on the same port. The dataset comes back empty and the server
    /// has a new replication id.
    pub fn restart(&self) {
        self.stop();
        let _ = std::fs::remove_file(self.rdb_path());
        self.start_again();
    }

    /// Restart keeping the data: `SHUTDOWN SAVE` (if running), start again
    /// on the same port loading `dump.rdb`. Redis 7 then has a new
    /// `master_replid` but keeps the old one as `master_replid2` (with
    /// `second_repl_offset`), so replicas can continue with PSYNC. Caveat:
    /// Redis writes the replication id into the RDB only if the master has a
    /// replication backlog, i.e. only if a replica has attached since it
    /// started; otherwise `master_replid2` is all zeros after the restart.
    pub fn restart_with_save(&self) {
        self.shutdown(true);
        self.start_again();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        if let Some(mut c) = self.proc_guard().take() {
            c.kill9();
        }
        // The TempDir field removes the directory afterwards.
    }
}

/// A reply as text (bulk/simple strings, integers, `OK`, nested arrays joined
/// by newlines).
pub fn value_to_string(v: &redis::Value) -> String {
    match v {
        redis::Value::Nil => String::new(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Okay => "OK".to_string(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Double(d) => d.to_string(),
        redis::Value::Boolean(b) => b.to_string(),
        redis::Value::Array(items) | redis::Value::Set(items) => items
            .iter()
            .map(value_to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    }
}

/// Parses `INFO` output (`field:value` lines; `#` headers skipped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
