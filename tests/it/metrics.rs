//! `pitr archive --metrics-addr`: /metrics, /healthz and /readyz against a real master, then a
//! real Prometheus scraping the archiver and answering queries about it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::archiving::{exec, master_offset, wait_archived, wait_online, Archive};
use crate::support::*;

/// `GET path` on `127.0.0.1:port` (HTTP/1.0, one request per connection, as a probe does):
/// the status code and the body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {LOCALHOST}:{port}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

pub(crate) fn get_ok(port: u16, path: &str) -> (u16, String) {
    get(port, path).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// The value of the sample `name` (with its labels, as written, if any) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub(crate) fn metric(port: u16, name: &str) -> f64 {
    let (status, text) = get_ok(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    sample(&text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// Waits until `cond` holds for the value of `name`, returning it.
fn wait_metric(port: u16, name: &str, what: &str, cond: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(port, name);
        if cond(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} = {v}: never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn archive_serves_metrics_health_and_readiness() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let port = free_port();
    let addr = format!("{LOCALHOST}:{port}");
    let a = archive.archiver(
        &r,
        &[
            "--metrics-addr",
            &addr,
            "--flush-interval",
            "200ms",
            "--retain",
            "2h",
        ],
    );
    wait_until_msg(Duration::from_secs(30), "the metrics server", || {
        get(port, "/healthz").is_ok()
    });
    assert_eq!(get_ok(port, "/healthz"), (200, "ok\n".to_string()));
    wait_online(&r, Duration::from_secs(30));
    wait_metric(port, "pitr_link_up", "1", |v| v == 1.0);

    let (status, text) = get_ok(port, "/metrics");
    assert_eq!(status, 200);
    for help in [
        "pitr_link_up",
        "pitr_link_reconnects",
        "pitr_received_offset",
        "pitr_durable_offset",
        "pitr_recovery_point_bytes",
        "pitr_recovery_point_seconds",
        "pitr_uploaded_objects",
        "pitr_uploaded_bytes",
        "pitr_upload_duration_seconds",
        "pitr_store_errors",
        "pitr_buffered_bytes",
        "pitr_newest_snapshot_age_seconds",
        "pitr_compaction_backlog_objects",
        "pitr_window_start_timestamp_seconds",
        "pitr_window_end_timestamp_seconds",
        "pitr_retention_seconds",
        "pitr_lease_held",
        "pitr_build_info",
    ] {
        assert!(
            text.contains(&format!("# HELP {help} ")),
            "no HELP for {help}"
        );
    }
    assert_eq!(sample(&text, "pitr_retention_seconds"), Some(7200.0));
    assert_eq!(sample(&text, "pitr_lease_held"), Some(1.0));
    assert_eq!(
        sample(&text, "pitr_uploaded_objects_total{kind=\"snapshot\"}"),
        Some(1.0)
    );
    assert!(
        sample(&text, "pitr_uploaded_bytes_total{kind=\"lease\"}").unwrap() > 0.0,
        "{text}"
    );
    assert!(text.contains(&format!(
        "pitr_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // Writes: the durable offset reaches the master's, and nothing is left waiting.
    let before = metric(port, "pitr_durable_offset");
    let segments_before = metric(port, "pitr_uploaded_objects_total{kind=\"segment\"}");
    let mut con = r.client();
    for i in 0..200 {
        exec(&mut con, &["SET", &format!("k{i}"), &"v".repeat(100)]);
    }
    assert_eq!(wait_archived(&mut con, 10_000), 1);
    let offset = master_offset(&r) as f64;
    assert!(offset > before + 200.0 * 100.0, "{offset} after {before}");
    wait_metric(port, "pitr_durable_offset", "the master's offset", |v| {
        v >= offset
    });
    wait_metric(port, "pitr_recovery_point_bytes", "0", |v| v == 0.0);
    assert_eq!(metric(port, "pitr_recovery_point_seconds"), 0.0);
    assert!(metric(port, "pitr_received_offset") >= offset);
    assert!(metric(port, "pitr_uploaded_objects_total{kind=\"segment\"}") > segments_before);
    let end = metric(port, "pitr_window_end_timestamp_seconds");
    let now = crate::support::archiving::now_ms() as f64 / 1000.0;
    assert!((now - 60.0..=now + 1.0).contains(&end), "{end} vs {now}");
    assert_eq!(get_ok(port, "/readyz").0, 200);

    // The master goes away: the link is down and the archiver is not ready, saying why.
    r.stop();
    wait_metric(port, "pitr_link_up", "0", |v| v == 0.0);
    let (status, body) = get_ok(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: not attached to the master") && body.lines().count() == 1,
        "{body}"
    );
    wait_metric(
        port,
        "pitr_link_reconnects_total{cause=\"refused\"}",
        "counting the refused reconnects",
        |v| v >= 1.0,
    );
    assert_eq!(get_ok(port, "/healthz").0, 200);
    assert_eq!(get_ok(port, "/nothing").0, 404);
    drop(a);
}

#[test]
fn a_metrics_address_that_cannot_be_bound_is_a_usage_error() {
    let r = RedisServer::start(&[]);
    let archive = Archive::local();
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_pitr(
        &[
            "archive",
            "--source",
            &crate::support::archiving::plain_url(&r),
            "--store",
            archive.store(),
            "--metrics-addr",
            &addr,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--metrics-addr") && stderr.contains(&addr),
        "{stderr}"
    );
    let out = run_pitr(
        &[
            "archive",
            "--source",
            &crate::support::archiving::plain_url(&r),
            "--store",
            archive.store(),
            "--metrics-addr",
            "nowhere",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// A Prometheus server in a temporary directory, scraping `targets` every second.
struct Prometheus {
    child: ManagedChild,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[String]) -> Prometheus {
        let bin = Path::new("/usr/bin/prometheus");
        let bin: PathBuf = if bin.exists() {
            bin.to_path_buf()
        } else {
            match which("prometheus") {
                Some(p) => p,
                None => panic!(
                    "prometheus is not installed: apt-get install prometheus (or scripts/install-deps.sh)"
                ),
            }
        };
        let dir = temp_dir("prometheus");
        let port = free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: pitr\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={LOCALHOST}:{port}"))
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = ManagedChild::spawn("prometheus", &mut cmd);
        let p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !get(port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        read_tail(&self.dir.path().join("prometheus.log"), 30)
    }

    /// The values of an instant query, one per series.
    fn query(&self, q: &str) -> Vec<f64> {
        let encoded: String = url_encode(q);
        let (status, body) = get_ok(self.port, &format!("/api/v1/query?query={encoded}"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Waits until `q` has exactly one series and `cond` holds for its value.
    fn wait_value(&self, q: &str, cond: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.query(q);
            if let [v] = r[..] {
                if cond(v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{q}: {r:?}, never as expected; prometheus:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.terminate(Duration::from_secs(10));
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_archiver() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let port = free_port();
    let target = format!("{LOCALHOST}:{port}");
    let _a = archive.archiver(
        &r,
        &["--metrics-addr", &target, "--flush-interval", "200ms"],
    );
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    for i in 0..50 {
        exec(&mut con, &["SET", &format!("p{i}"), "value"]);
    }
    assert_eq!(wait_archived(&mut con, 10_000), 1);
    let offset = master_offset(&r) as f64;
    let prom = Prometheus::start(std::slice::from_ref(&target));

    let up = prom.wait_value("up{job=\"pitr\"}", |v| v == 1.0);
    assert_eq!(up, 1.0);
    // The durable offset Prometheus holds is the master's, once the writes are acknowledged.
    let durable = prom.wait_value("pitr_durable_offset{job=\"pitr\"}", |v| v >= offset);
    assert!(
        durable >= offset && durable < offset + 10_000.0,
        "{durable} vs {offset}"
    );
    let rp = prom.wait_value("pitr_recovery_point_seconds{job=\"pitr\"}", |v| v == 0.0);
    assert_eq!(rp, 0.0);
    // More writes move the durable offset as Prometheus sees it.
    for i in 0..50 {
        exec(&mut con, &["SET", &format!("q{i}"), &"w".repeat(500)]);
    }
    assert_eq!(wait_archived(&mut con, 10_000), 1);
    let later = master_offset(&r) as f64;
    assert!(later > durable + 25_000.0);
    prom.wait_value("pitr_durable_offset{job=\"pitr\"}", |v| v >= later);
    let lag = prom.query("pitr_received_offset{job=\"pitr\"} - pitr_durable_offset{job=\"pitr\"}");
    assert_eq!(lag.len(), 1);
    assert!(lag[0] >= 0.0, "{lag:?}");
    let n = prom.wait_value(
        "sum(pitr_uploaded_objects_total{job=\"pitr\",kind=\"segment\"})",
        |v| v >= 1.0,
    );
    assert!(n >= 1.0);
}
