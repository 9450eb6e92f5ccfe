//! Argument types shared by the commands, their value parsers, and the usage error that a
//! value which parses but cannot be used becomes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;
use tokio_util::sync::CancellationToken;

use redis_pitr::archive::fetch::{self, FetchConfig};
use redis_pitr::archive::lease::{LeaseConfig, MIN_TTL};
use redis_pitr::archive::names::ArchiveName;
use redis_pitr::archive::store::{Store, StoreError};
use redis_pitr::maintain::compact::Levels;
use redis_pitr::net::tls::{self, Tls, TlsOptions, TlsPart};
use redis_pitr::net::Source;

/// A flag or value that cannot be used (exit 2). Found while the arguments are turned into a
/// command's configuration, before any work starts.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct Usage {
    /// The flag, such as `--output-dir`.
    pub flag: &'static str,
    /// What is wrong, naming the value where it holds no secret.
    pub reason: String,
}

impl Usage {
    pub fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        Usage {
            flag,
            reason: reason.into(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Where the archive lives: a path or file:///path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (credentials from the provider's standard environment variables),
    /// or memory:// (tests only).
    #[arg(long, env = "PITR_STORE", default_value = "./pitr-archive")]
    pub store: String,
    /// Archive name: keeps several masters apart in one store.
    #[arg(long, env = "PITR_NAME", default_value = "default")]
    pub name: ArchiveName,
}

impl StoreArgs {
    /// Opens the store. Nothing is read yet: an unusable URL is a usage error; anything else
    /// goes to the exit-code table as it is.
    pub fn open(&self) -> anyhow::Result<Store> {
        match Store::open(&self.store, &self.name) {
            Ok(s) => Ok(s),
            Err(StoreError::Config { reason, .. }) => {
                Err(Usage::new("--store", format!("{:?}: {reason}", self.store)).into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `--source-password-file`: what `archive` and `snapshot` take.
#[derive(Args, Debug, Clone, Default)]
pub struct SourcePasswordFile {
    /// Read the master's password from this file (as PITR_SOURCE_PASSWORD_FILE does: read once,
    /// one trailing newline dropped; refused beside PITR_SOURCE_PASSWORD or its _FILE).
    #[arg(long, value_name = "PATH")]
    pub source_password_file: Option<PathBuf>,
}

impl SourcePasswordFile {
    pub fn flag(&self) -> crate::secrets::FileFlag {
        crate::secrets::FileFlag::new(
            crate::secrets::SOURCE_FLAG,
            self.source_password_file.clone(),
        )
    }
}

/// `--target-password-file`: what `restore` and `drill` take (with `--target`).
#[derive(Args, Debug, Clone, Default)]
pub struct TargetPasswordFile {
    /// Read the live target's password from this file (as PITR_TARGET_PASSWORD_FILE does: read
    /// once, one trailing newline dropped; refused beside PITR_TARGET_PASSWORD or its _FILE).
    #[arg(long, value_name = "PATH")]
    pub target_password_file: Option<PathBuf>,
}

impl TargetPasswordFile {
    /// The flag is for a live target only: without `--target` it is a usage error. (clap's
    /// `requires` lets it through beside `--output-dir` or `--redis-server`, which conflict
    /// with `--target`.)
    pub fn check(&self, target: Option<&str>) -> Result<(), Usage> {
        match (&self.target_password_file, target) {
            (Some(_), None) => Err(Usage::new(
                "--target-password-file",
                "only with --target (the password of a live target)",
            )),
            _ => Ok(()),
        }
    }

    pub fn flag(&self) -> crate::secrets::FileFlag {
        crate::secrets::FileFlag::new(
            crate::secrets::TARGET_FLAG,
            self.target_password_file.clone(),
        )
    }
}

/// `--sentinel-password-file`: what `archive` takes.
#[derive(Args, Debug, Clone, Default)]
pub struct SentinelPasswordFile {
    /// Read the Sentinels' password from this file (as PITR_SENTINEL_PASSWORD_FILE does: read
    /// once, one trailing newline dropped; refused beside PITR_SENTINEL_PASSWORD or its _FILE).
    #[arg(long, value_name = "PATH")]
    pub sentinel_password_file: Option<PathBuf>,
}

impl SentinelPasswordFile {
    pub fn flag(&self) -> crate::secrets::FileFlag {
        crate::secrets::FileFlag::new(
            crate::secrets::SENTINEL_FLAG,
            self.sentinel_password_file.clone(),
        )
    }
}

/// TLS to the servers dialled (`rediss://`): what `archive`, `snapshot`, `restore` and `drill`
/// take. The same settings serve every server a command connects to (the source, a restore's
/// `--target`). A `rediss://` URL without them verifies against the system's roots.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// rediss://: trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long, env = "PITR_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// rediss://: the client certificate (PEM, with its chain) for a server that asks for one;
    /// needs --tls-key.
    #[arg(long, env = "PITR_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// rediss://: the client certificate's private key (PEM); needs --tls-cert.
    #[arg(long, env = "PITR_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// rediss://: the name to send (SNI) and to verify the server's certificate against,
    /// instead of the host in the URL (for a server dialled by IP address or another name).
    #[arg(long, env = "PITR_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// rediss://: accept any server certificate, unverified (encrypted, but not to a server
    /// known to be the right one). Only for tests and trusted networks; logged as a warning.
    #[arg(long, env = "PITR_TLS_INSECURE")]
    pub tls_insecure: bool,
    /// TLS to a sentinel:// or cluster:// source, or a cluster:// restore target (every
    /// sentinel and node), verified against the system's roots unless --tls-ca; any other
    /// --tls-* flag implies it. A single server takes rediss:// instead.
    #[arg(long, env = "PITR_TLS")]
    pub tls: bool,
}

impl TlsArgs {
    fn options(&self) -> TlsOptions {
        TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
            insecure: self.tls_insecure,
        }
    }

    /// Whether any `--tls-*` flag is set (on the command line or in the environment).
    pub fn given(&self) -> bool {
        self.options().is_set() || self.tls
    }

    /// Builds the settings the flags give and makes them what every `rediss://` URL of this
    /// process connects with; `None` when no flag is given (the system's roots then). An
    /// unreadable or unusable file is a usage error naming its flag and the file.
    pub fn install(&self) -> Result<Option<Arc<Tls>>, Usage> {
        let opts = self.options();
        if !opts.is_set() {
            return Ok(None);
        }
        let t = Arc::new(Tls::new(&opts).map_err(|e| {
            let flag = match e.part {
                TlsPart::Ca | TlsPart::SystemRoots => "--tls-ca",
                TlsPart::Cert => "--tls-cert",
                TlsPart::Key => "--tls-key",
                TlsPart::ServerName => "--tls-server-name",
            };
            Usage::new(flag, e.to_string())
        })?);
        if t.insecure() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "--tls-insecure: server certificates are not verified; the connection is \
                     encrypted but may be to anyone"
                )
            });
        }
        tls::set_default(t.clone());
        Ok(Some(t))
    }

    /// The settings for every connection of a `sentinel://` or `cluster://` URL: those of the
    /// flags (installed as by [`install`](Self::install)), the system's roots for `--tls`
    /// alone, or `None` (plain TCP).
    pub fn located(&self) -> Result<Option<Arc<Tls>>, Usage> {
        match self.install()? {
            Some(t) => Ok(Some(t)),
            None if self.tls => Ok(Some(
                tls::default_tls().map_err(|e| Usage::new("--tls", format!("TLS: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// Parses `url` (the value of `flag`) after [`install`](Self::install): a `rediss://` URL
    /// takes the flags' settings; a plain `redis://` one with flags given is a usage error.
    pub fn source(
        &self,
        url: &str,
        password: Option<String>,
        flag: &'static str,
    ) -> Result<Source, Usage> {
        let source = Source::parse(url, password).map_err(|reason| Usage::new(flag, reason))?;
        if source.tls.is_none() && self.given() {
            return Err(Usage::new(
                flag,
                format!(
                    "{:?} is plain redis:// but --tls-* flags (or PITR_TLS_* variables) are set: \
                     use rediss://host:port for TLS, or drop the flags",
                    redis_pitr::net::redact_url(url)
                ),
            ));
        }
        Ok(source)
    }
}

/// `--json` and the store: what `ls` and `verify` take.
#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The archive's lease: what `archive`, `compact` and `prune` take.
#[derive(Args, Debug, Clone, Copy)]
pub struct LeaseArgs {
    /// Take the archive's lease even while another process holds it. Only for a holder known
    /// to be gone (killed, its host down): if it still runs, it stops at its next renewal,
    /// but may write until then.
    #[arg(long)]
    pub takeover: bool,
    /// Time to live of the archive's lease (renewed every sixth of it). For tests.
    #[arg(long, env = "PITR_LEASE_TTL", default_value = "30s", value_parser = parse_duration, hide = true)]
    pub lease_ttl: Duration,
}

impl LeaseArgs {
    pub fn config(self) -> Result<LeaseConfig, Usage> {
        if self.lease_ttl < MIN_TTL {
            return Err(Usage::new("--lease-ttl", "at least 1s"));
        }
        Ok(LeaseConfig {
            ttl: self.lease_ttl,
            takeover: self.takeover,
        })
    }
}

/// `--parallel`: what `restore` and `verify` take.
#[derive(Args, Debug, Clone, Copy)]
pub struct FetchArgs {
    /// Segment GETs in flight at once, 1 to 256. An object store answers each GET after a
    /// round trip, so reading several at once runs at its throughput rather than its latency;
    /// 1 reads one segment at a time. Whatever this is, at most 64 MiB of segments (stored and
    /// raw) are held ahead of the replay or the check.
    #[arg(
        long,
        value_name = "N",
        default_value_t = fetch::DEFAULT_PARALLEL as u16,
        value_parser = clap::value_parser!(u16).range(1..=fetch::MAX_PARALLEL as i64),
    )]
    pub parallel: u16,
}

impl FetchArgs {
    pub fn config(self) -> FetchConfig {
        FetchConfig {
            parallel: usize::from(self.parallel),
            ..FetchConfig::default()
        }
    }
}

/// Durations such as `1s`, `250ms`, `2m`: at least 1 ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?}: must be at least 1ms"));
    }
    Ok(d)
}

/// Compaction levels such as `1m,1h,24h`, or `off`.
pub fn parse_levels(s: &str) -> Result<Levels, String> {
    s.parse()
}

/// An interval such as `24h`, `30m`, `3s` or `500ms`; `0` (or any zero duration) is off.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if !d.is_zero() && d < Duration::from_millis(100) {
        return Err(format!("{s:?}: at least 100ms (or 0: off)"));
    }
    Ok(d)
}

/// The largest size any flag takes (1 PiB).
const MAX_SIZE: u64 = 1 << 50;

/// Sizes such as `64MiB`, `1GiB`, `100MB`, `1.5GB`, `4096` (bytes): from 1 byte to 1 PiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = t
        .parse::<ByteSize>()
        .map_err(|_| format!("{s:?}: expected a size like 64MiB, 100MB or 4096"))?
        .as_u64();
    if !(1..=MAX_SIZE).contains(&n) {
        return Err(format!("{s:?}: out of range (1 byte to 1PiB)"));
    }
    Ok(n)
}

/// `--metrics-addr`: `None` for `off`; otherwise the address and whether it was given (the
/// default is `default`, or off when `default` is `None`).
pub fn metrics_addr(
    value: Option<&str>,
    default: Option<&str>,
) -> Result<Option<(String, bool)>, Usage> {
    match value.map(str::trim) {
        None => Ok(default.map(|d| (d.to_string(), false))),
        Some("off") => Ok(None),
        Some(a)
            if a.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Ok(Some((a.to_string(), true)))
        }
        Some(a) => Err(Usage::new(
            "--metrics-addr",
            format!("{a:?} is not host:port or off"),
        )),
    }
}

/// Serves /metrics, /healthz and /readyz at `addr` (from [`metrics_addr`]) until `stop`. An
/// address given that cannot be bound is a usage error; the default one, taken (by another
/// pitr on this host), only a warning.
pub async fn serve_metrics(
    addr: Option<(String, bool)>,
    ready: redis_pitr::metrics::Readiness,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some((addr, given)) = addr else {
        return Ok(());
    };
    match redis_pitr::metrics::serve(&addr, ready, stop).await {
        Ok(local) => tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz"),
        Err(e) if given => return Err(Usage::new("--metrics-addr", e.to_string()).into()),
        Err(e) => tracing::warn!(error = %e,
            "serving no metrics: the default address is taken (pass --metrics-addr HOST:PORT or off)"),
    }
    Ok(())
}

/// The compaction settings of a run size (`--compaction-max-run`, `--max-run`): runs of at
/// most `max_run` raw bytes, and at most that much fetched ahead (within the default budget),
/// so that a pass holds about `2 × max_run + min(max_run, 64 MiB)`.
pub fn compaction_with_run(
    base: redis_pitr::maintain::compact::CompactConfig,
    max_run: u64,
    flag: &'static str,
) -> Result<redis_pitr::maintain::compact::CompactConfig, Usage> {
    if max_run < 1 << 20 {
        return Err(Usage::new(flag, "at least 1MiB"));
    }
    Ok(redis_pitr::maintain::compact::CompactConfig {
        max_run_raw: max_run,
        fetch: redis_pitr::archive::fetch::FetchConfig {
            max_bytes: max_run.min(base.fetch.max_bytes),
            ..base.fetch
        },
        ..base
    })
}

/// A token cancelled at the first SIGTERM or SIGINT, after logging `what` ("shutdown
/// requested: <what>"); a second signal exits at once with 130 (128 + SIGINT), without waiting
/// for the orderly stop. Without a SIGTERM handler (it cannot be installed), only SIGINT stops.
pub fn stop_on_signal(what: &'static str) -> CancellationToken {
    let stop = CancellationToken::new();
    let request = stop.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { term.as_mut()?.recv().await } => {}
            }
            if n == 0 {
                tracing::info!("shutdown requested: {what}");
                request.cancel();
            } else {
                tracing::warn!("second signal: exiting without waiting for the orderly stop");
                std::process::exit(130);
            }
        }
    });
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("8mib").unwrap(), 8 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("2PiB").is_err());
        assert!(parse_size("99999999999EiB").is_err());
    }

    #[test]
    fn durations_parse() {
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn intervals_parse_and_zero_is_off() {
        assert_eq!(parse_interval("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_interval("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_interval("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_interval("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("daily").is_err());
    }
}
