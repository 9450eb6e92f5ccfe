//! A throw-away single-node Garage (S3-compatible object store) server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use object_store::ObjectStore;

use super::process::{run_with_timeout, ManagedChild};
use super::util::{free_port, poll, random_hex, read_tail, require_binary, temp_dir, LOCALHOST};

/// How long Garage may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `garage` CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

const BUCKET: &str = "pitr";
const KEY_NAME: &str = "pitr-test";
const REGION: &str = "garage";

/// The `garage` binary (`$GARAGE_BIN`, else on PATH or in ~/.cargo/bin).
pub fn garage_bin() -> PathBuf {
    let name = std::env::var("GARAGE_BIN").unwrap_or_else(|_| "garage".to_string());
    require_binary(&name)
}

/// A single-node Garage 2.x in a temporary directory, with bucket `pitr`
/// and key `pitr-test` (read, write, owner on the bucket).
///
/// All methods take `&self`. Dropping it kills the server and removes its
/// directory (metadata and data).
pub struct Garage {
    dir: tempfile::TempDir,
    bin: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    admin_port: u16,
    admin_token: String,
    access_key: String,
    secret_key: String,
    process: Mutex<Option<ManagedChild>>,
}

impl Garage {
    /// Starts the server, waits until it is up, assigns the single-node
    /// layout, creates key `pitr-test` and bucket `pitr`, and waits until
    /// the S3 API answers.
    pub fn start() -> Garage {
        let bin = garage_bin();
        let mut last_err = String::new();
        for _ in 0..4 {
            let mut g = Garage {
                dir: temp_dir("garage"),
                bin: bin.clone(),
                s3_port: free_port(),
                rpc_port: free_port(),
                admin_port: free_port(),
                admin_token: random_hex(32),
                access_key: String::new(),
                secret_key: String::new(),
                process: Mutex::new(None),
            };
            g.write_config();
            match g.launch() {
                Ok(()) => {
                    g.setup();
                    return g;
                }
                Err(e) if e.contains("in use") => last_err = e,
                Err(e) => panic!("garage did not start: {e}"),
            }
        }
        panic!("garage did not start (ports always taken): {last_err}");
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let engine = db_engine();
        let config = format!(
            r#"# Written by the redis-pitr test harness.
metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "{engine}"
metadata_fsync = false
data_fsync = false
disable_scrub = true

replication_factor = 1

rpc_bind_addr = "{LOCALHOST}:{rpc}"
rpc_public_addr = "{LOCALHOST}:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "{LOCALHOST}:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "{LOCALHOST}:{admin}"
admin_token = "{admin_token}"
metrics_token = "{metrics_token}"
"#,
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            rpc = self.rpc_port,
            secret = random_hex(32),
            s3 = self.s3_port,
            admin = self.admin_port,
            admin_token = self.admin_token,
            metrics_token = random_hex(32),
        );
        std::fs::write(self.config_path(), config).expect("write garage.toml");
    }

    /// Spawns `garage server` and waits until `garage status` answers.
    fn launch(&self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open garage.log");
        let log2 = log.try_clone().expect("clone file handle");
        let mut cmd = self.command();
        cmd.arg("server")
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("PITR_TEST_GARAGE_LOG").unwrap_or_else(|_| "garage=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        *self.proc_guard() = Some(ManagedChild::spawn("garage", &mut cmd));

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.proc_guard().as_mut().and_then(|c| c.try_wait()) {
                return Err(format!(
                    "garage server exited with {st} during start; log tail:\n{}",
                    self.log_tail()
                ));
            }
            if self.cli_quiet(&["status"]).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(c) = self.proc_guard().as_mut() {
                    c.kill9();
                }
                return Err(format!(
                    "garage status did not succeed within {START_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// First-start configuration: layout, key, bucket, permissions.
    fn setup(&mut self) {
        let out = self.cli_ok(&["node", "id", "-q"]);
        let node_id = out.trim().split('@').next().unwrap_or_default().to_string();
        assert!(
            node_id.len() >= 16 && node_id.chars().all(|c| c.is_ascii_hexdigit()),
            "unexpected `garage node id` output: {out:?}"
        );
        self.cli_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        self.cli_ok(&["layout", "apply", "--version", "1"]);
        let healthy = poll(START_TIMEOUT, || self.cli_quiet(&["health"]).is_ok());
        assert!(
            healthy,
            "garage not healthy after `layout apply`:\n{}",
            self.log_tail()
        );

        let out = self.cli_ok(&["key", "create", KEY_NAME]);
        self.access_key = table_field(&out, "Key ID:")
            .unwrap_or_else(|| panic!("no `Key ID:` in `garage key create` output:\n{out}"));
        self.secret_key = table_field(&out, "Secret key:")
            .unwrap_or_else(|| panic!("no `Secret key:` in `garage key create` output:\n{out}"));

        self.cli_ok(&["bucket", "create", BUCKET]);
        let key_id = self.access_key.clone();
        self.cli_ok(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key_id,
        ]);
        self.wait_s3_ready();
    }

    /// Waits until the S3 API answers an HTTP request.
    fn wait_s3_ready(&self) {
        let ok = poll(START_TIMEOUT, || self.s3_answers());
        if !ok {
            panic!(
                "garage S3 API on port {} did not answer within {START_TIMEOUT:?}; log tail:\n{}",
                self.s3_port,
                self.log_tail()
            );
        }
    }

    /// Whether the S3 port answers an (unauthenticated) HTTP request with an
    /// HTTP response.
    pub fn s3_answers(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.s3_port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /{BUCKET}/ HTTP/1.1\r\nHost: {LOCALHOST}:{}\r\nConnection: close\r\n\r\n",
            self.s3_port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < buf.len() {
            match s.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        buf[..n].starts_with(b"HTTP/1.")
    }

    fn proc_guard(&self) -> MutexGuard<'_, Option<ManagedChild>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `garage -c <config> <args>`; `Err(output)` on failure or timeout.
    fn cli_quiet(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cli(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "status {}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `garage -c <config> <args>` and returns its stdout; panics with
    /// its output and the server log when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.cli_quiet(args).unwrap_or_else(|e| {
            panic!(
                "`garage {}` failed: {e}\nserver log tail:\n{}",
                args.join(" "),
                self.log_tail()
            )
        })
    }

    /// Runs `garage -c <config> <args>` (RUST_LOG=warn, 60 s timeout).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
        run_with_timeout("garage cli", &mut cmd, CLI_TIMEOUT)
    }

    /// `garage -c <config>`, without any `GARAGE_*` variable of the test's
    /// environment (they would override the config file).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GARAGE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("-c").arg(self.config_path());
        cmd
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{LOCALHOST}:{}", self.s3_port)
    }

    /// S3 API port.
    pub fn s3_port(&self) -> u16 {
        self.s3_port
    }

    /// Admin API port (bearer token: [`Garage::admin_token`]).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Admin API bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// `pitr`.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// Access key id of key `pitr-test`.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Secret of key `pitr-test`.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// `garage`.
    pub fn region(&self) -> &str {
        REGION
    }

    /// Environment for a process that talks to this Garage through
    /// `object_store`'s `AmazonS3Builder::from_env` (or the AWS SDKs).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `s3://pitr/<prefix>` (slashes around `prefix` trimmed; `s3://pitr`
    /// for an empty prefix).
    pub fn store_url(&self, prefix: &str) -> String {
        let p = prefix.trim_matches('/');
        if p.is_empty() {
            format!("s3://{BUCKET}")
        } else {
            format!("s3://{BUCKET}/{p}")
        }
    }

    /// An `object_store` client for bucket `pitr` (path-style, plain HTTP).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            self.s3_builder()
                .build()
                .expect("build AmazonS3 for garage"),
        )
    }

    /// An `object_store` client for bucket `pitr` seeing only `prefix`.
    pub fn object_store_at(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = self
            .s3_builder()
            .build()
            .expect("build AmazonS3 for garage");
        Arc::new(object_store::prefix::PrefixStore::new(
            s3,
            prefix.trim_matches('/'),
        ))
    }

    /// Creates bucket `name` with the test key allowed to read, write and own it; returns
    /// the store URL of `prefix` in it.
    pub fn create_bucket(&self, name: &str, prefix: &str) -> String {
        self.cli_ok(&["bucket", "create", name]);
        self.cli_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.access_key,
        ]);
        format!("s3://{name}/{}", prefix.trim_matches('/'))
    }

    /// An `object_store` client for bucket `bucket` seeing only `prefix`.
    pub fn object_store_in(&self, bucket: &str, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = self
            .s3_builder()
            .with_bucket_name(bucket)
            .build()
            .expect("build AmazonS3 for garage");
        Arc::new(object_store::prefix::PrefixStore::new(
            s3,
            prefix.trim_matches('/'),
        ))
    }

    /// The configured builder behind [`Garage::object_store`].
    pub fn s3_builder(&self) -> object_store::aws::AmazonS3Builder {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(REGION)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_bucket_name(BUCKET)
            .with_virtual_hosted_style_request(false)
    }

    /// Directory of the server (config, log, meta/, data/).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// Path of the server log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// The last 60 lines of the server log.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), 60)
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.proc_guard()
            .as_mut()
            .map(|c| c.is_running())
            .unwrap_or(false)
    }

    /// Stops the server: SIGTERM, then SIGKILL if it is still running 2 s
    /// later (on SIGTERM Garage waits up to ~10 s for open client
    /// connections, e.g. an `object_store` keep-alive pool, to close).
    /// Data is kept; the S3 port refuses connections until
    /// [`Garage::start_again`].
    pub fn stop(&self) {
        self.stop_with_grace(Duration::from_secs(2));
    }

    /// SIGTERM, then SIGKILL after `grace`. Data is kept.
    pub fn stop_with_grace(&self, grace: Duration) {
        if let Some(mut c) = self.proc_guard().take() {
            c.terminate(grace);
        }
    }

    /// SIGKILL; data is kept.
    pub fn kill9(&self) {
        if let Some(mut c) = self.proc_guard().take() {
            c.kill9();
        }
    }

    /// Starts the server again after [`Garage::stop`] with the same
    /// directory, ports, key and bucket, and waits until the S3 API answers.
    pub fn start_again(&self) {
        assert!(!self.is_running(), "start_again: garage is still running");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => break,
                // The old sockets may linger for a moment.
                Err(e) if e.contains("in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("garage did not restart: {e}"),
            }
        }
        // `garage health` exits 0 once all partitions have quorum.
        let healthy = poll(START_TIMEOUT, || self.cli_quiet(&["health"]).is_ok());
        if !healthy {
            panic!(
                "garage is not healthy {START_TIMEOUT:?} after a restart: {}\nlog tail:\n{}",
                self.cli_quiet(&["health"]).unwrap_err(),
                self.log_tail()
            );
        }
        self.wait_s3_ready();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut c) = self.proc_guard().take() {
            c.kill9();
        }
    }
}

/// `garage`'s metadata engine: `$PITR_TEST_GARAGE_DB_ENGINE`, else `lmdb`
/// if the installed build has it (its `--version` lists the features), else
/// `sqlite`.
fn db_engine() -> String {
    if let Ok(e) = std::env::var("PITR_TEST_GARAGE_DB_ENGINE") {
        return e;
    }
    static ENGINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let out = Command::new(garage_bin())
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            if out.contains("lmdb") || !out.contains("sqlite") {
                "lmdb".to_string()
            } else {
                "sqlite".to_string()
            }
        })
        .clone()
}

/// The value after `label` on a line of a `garage` table (`Key ID:   GK...`).
fn table_field(out: &str, label: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}
