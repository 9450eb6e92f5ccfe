//! `pitr restore --target … --via replication|commands|auto`: a live restore through
//! replication. The restore serves the moment itself ([`crate::serve`], up to the cut, no
//! PINGs after it so that offsets stay exact, one replica only, a one-time password), tells the
//! target `REPLICAOF <advertised host> <port>`, waits until the target's replication offset
//! reaches the cut with its link up, then `REPLICAOF NO ONE` and puts back the target's
//! `masterauth`/`masteruser`. The target loads the snapshot natively, never expires keys on its
//! own while it is a replica, and applies the stream as its master sent it: no TTL is moved.
//!
//! With `--db`/`--match` the moment is served filtered ([`moment::Filtered`]): the snapshot
//! re-encoded without the unselected keys, the stream without the commands a restore by
//! commands leaves out, under a fresh replication id; the wait is then for the snapshot's
//! offset plus the bytes served.
//!
//! `auto` takes this path when it can and today's one ([`crate::replay::restore`]: RESTORE and
//! commands) when it cannot, and says why: a shard's slot selection; a target that is a replica, that
//! refuses `CONFIG`/`REPLICAOF` (renamed, or not permitted, as on managed services), or whose
//! version cannot load the archived RDB; a stream with relative TTLs (a master older than
//! 7.0), which a replica would count from when it applies them; or a target that does not
//! reach the advertised address within [`ViaOptions::link_wait`]. A replica replaces its data
//! only once the RDB arrives, so a target that never connected still holds what it held
//! (but for the seconds it waited it was a replica: writes to it were refused, and its own
//! replicas were disconnected).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_protocol::resp2::types::OwnedFrame;
use tokio_util::sync::CancellationToken;

use crate::rdb::Magic;
use crate::replay::live::{LiveTarget, TargetError};
use crate::replay::plan::{self, Plan};
use crate::replay::restore::{self, Destination, Progress, Report, RestoreConfig, RestoreError};
use crate::replay::sink::RdbHeader;
use crate::serve::{moment, Mode, ServeConfig, ServeError, Server};

/// How a live restore reaches the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The target replicates the moment from the restore.
    Replication,
    /// RESTORE and commands, as an ordinary client.
    Commands,
    /// Replication when the target can, else commands.
    Auto,
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "replication" => Ok(Via::Replication),
            "commands" => Ok(Via::Commands),
            "auto" => Ok(Via::Auto),
            _ => Err(format!("{s:?}: expected replication, commands or auto")),
        }
    }
}

/// How the replication path is set up.
#[derive(Clone, Debug)]
pub struct ViaOptions {
    pub via: Via,
    /// Where the restore listens for the target.
    pub listen: SocketAddr,
    /// `host:port` the target dials, when it is not the listening address.
    pub advertise: Option<String>,
    /// `auto`: how long the target may take to connect and start its sync before the restore
    /// falls back to commands.
    pub link_wait: Duration,
}

/// The short wait of `auto` for the target to reach the restore.
pub const LINK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ViaError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Serve(ServeError),
    /// `--via replication` into a target that cannot replicate this moment.
    #[error("the target cannot restore through replication: {0} (restore with --via commands)")]
    Refused(String),
}

impl From<ServeError> for ViaError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Restore(r) => ViaError::Restore(r),
            ServeError::Store(s) => ViaError::Restore(RestoreError::Store(s)),
            e => ViaError::Serve(e),
        }
    }
}

impl From<TargetError> for ViaError {
    fn from(e: TargetError) -> Self {
        ViaError::Restore(RestoreError::Target(e))
    }
}

/// Why replication was not possible: `auto` falls back; `replication` fails with it.
enum Cannot {
    /// The target cannot do it (a reason for the report).
    Why(String),
    /// The target did not connect in time.
    NoLink(String),
    /// An error that ends the restore whatever the mode.
    Fail(ViaError),
}

impl From<ViaError> for Cannot {
    fn from(e: ViaError) -> Self {
        Cannot::Fail(e)
    }
}

impl From<RestoreError> for Cannot {
    fn from(e: RestoreError) -> Self {
        Cannot::Fail(e.into())
    }
}

impl From<ServeError> for Cannot {
    fn from(e: ServeError) -> Self {
        Cannot::Fail(e.into())
    }
}

impl From<TargetError> for Cannot {
    fn from(e: TargetError) -> Self {
        Cannot::Fail(e.into())
    }
}

/// Restores `plan` into `cfg`'s live destination as `opts` says (a files destination, or
/// `Via::Commands`, goes the usual way). The report's `via` and `via_reason` say which path
/// was taken and why.
pub async fn restore(
    cfg: &RestoreConfig,
    plan: &Plan,
    opts: &ViaOptions,
    progress: Arc<Progress>,
) -> Result<Report, ViaError> {
    let Destination::Live { url, password } = &cfg.destination else {
        return Ok(restore::restore(cfg, plan, progress).await?);
    };
    let reason = match opts.via {
        Via::Commands => None,
        via => {
            let strict = via == Via::Replication;
            match replicate(cfg, plan, opts, url, password.clone(), strict).await {
                Ok(r) => return Ok(r),
                Err(Cannot::Fail(e)) => return Err(e),
                Err(Cannot::Why(why)) if strict => return Err(ViaError::Refused(why)),
                Err(Cannot::NoLink(why)) if strict => {
                    return Err(TargetError::Timeout {
                        addr: crate::net::redact_url(url),
                        after: humantime::format_duration(cfg.target_timeout).to_string(),
                        waiting: why,
                        unanswered: 0,
                        partial: String::new(),
                    }
                    .into())
                }
                Err(Cannot::Why(why) | Cannot::NoLink(why)) => Some(why),
            }
        }
    };
    match &reason {
        Some(why) => {
            tracing::info!(via = "commands", reason = %why, "restoring by RESTORE and commands: {why}")
        }
        None => tracing::info!(
            via = "commands",
            "restoring by RESTORE and commands (--via commands)"
        ),
    }
    let mut report = restore::restore(cfg, plan, progress).await?;
    report.via = Some("commands".into());
    report.via_reason = Some(reason.unwrap_or_else(|| "--via commands".into()));
    Ok(report)
}

/// A field of an `INFO` text.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

/// Why a target of `INFO server` text `info` cannot load `rdb`, or `None`. Valkey: the rule of
/// `pitr serve` ([`crate::serve::conn::refusal`]); Redis: the RDB version its `redis_version`
/// loads ([`crate::replay::live::rdb_version_from_info`]).
pub fn cannot_load(info: &str, rdb: RdbHeader) -> Option<String> {
    if let Some(v) = field(info, "valkey_version") {
        return crate::serve::conn::refusal(Some(v), rdb);
    }
    let version = field(info, "redis_version").unwrap_or("?");
    let loads = match crate::replay::live::rdb_version_from_info(info) {
        // A Valkey that says only server_name:valkey.
        Ok(80) => return crate::serve::conn::refusal(Some(version), rdb),
        Ok(v) => v,
        Err(e) => return Some(format!("its version cannot be told: {e}")),
    };
    if rdb.magic == Magic::Redis && rdb.version <= u32::from(loads) {
        return None;
    }
    Some(format!(
        "the target (Redis {version}) loads REDIS RDB up to version {loads}; the archived snapshot is {} RDB version {}",
        rdb.magic, rdb.version
    ))
}

/// The snapshot's RDB header: its first bytes, read from the store.
async fn snapshot_header(cfg: &RestoreConfig, plan: &Plan) -> Result<RdbHeader, ViaError> {
    match moment::snapshot_header(&cfg.store, plan.snapshot.object, plan.snapshot.bytes).await? {
        Some(h) => Ok(h),
        None => Err(RestoreError::EmptySnapshot {
            object: plan.snapshot.name.clone(),
        }
        .into()),
    }
}

/// A one-time password for the restore's master.
fn one_time_password() -> String {
    crate::random_hex(24)
}

/// The target's replication settings before the restore, to be put back.
struct Before {
    masterauth: String,
    /// `None`: the target has no `masteruser` (before 6.0), or it was empty and was left alone.
    masteruser: Option<String>,
    /// `Some(value)`: `repl-diskless-load` was `value` (`disabled`) and is `on-empty-db` for
    /// the sync; `None`: the target has no such setting (before 6.0), or it was left alone.
    diskless_load: Option<String>,
}

/// What `repl-diskless-load` is set to for the sync: the replica parses the RDB from the
/// socket instead of writing it to a file first (the target is empty, or `--force` let it
/// replace its data, in which case `on-empty-db` loads through a file as before).
const DISKLESS_LOAD: &str = "on-empty-db";

/// `CONFIG GET <name>`: the value, `None` when the server has no such parameter.
async fn config_get(
    t: &mut LiveTarget,
    name: &str,
) -> Result<Result<Option<String>, String>, TargetError> {
    Ok(match t.command(&args(&["CONFIG", "GET", name])).await? {
        Err(e) => Err(format!("CONFIG GET {name}: {e}")),
        Ok(OwnedFrame::Array(items)) => Ok(match items.get(1) {
            Some(OwnedFrame::BulkString(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }),
        Ok(other) => Err(format!("CONFIG GET {name} answered {other:?}")),
    })
}

/// Sends `a`; an error reply is returned as text.
async fn call(t: &mut LiveTarget, a: &[&str]) -> Result<Result<(), String>, TargetError> {
    Ok(t.command(&args(a)).await?.map(drop))
}

/// Puts the target back as a master with its own settings (best effort: logged).
async fn detach(t: &mut LiveTarget, before: &Before) -> Result<(), String> {
    let mut problems = Vec::new();
    match call(t, &["REPLICAOF", "NO", "ONE"]).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("REPLICAOF NO ONE: {e}")),
        Err(e) => problems.push(format!("REPLICAOF NO ONE: {e}")),
    }
    if let Err(p) = restore_settings(t, before).await {
        problems.push(p);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// What the target's `INFO replication` (and `persistence`) shows of the sync.
#[derive(Debug, PartialEq, Eq)]
struct SyncState {
    link_up: bool,
    in_progress: bool,
    replid: String,
    offset: Option<u64>,
    /// What changes while a sync moves: bytes read, bytes loaded, the offset.
    moving: String,
}

async fn sync_state(t: &mut LiveTarget) -> Result<SyncState, TargetError> {
    let repl = t.info("replication").await?;
    let pers = t.info("persistence").await?;
    let offset = field(&repl, "master_repl_offset")
        .or_else(|| field(&repl, "slave_repl_offset"))
        .and_then(|o| o.parse().ok());
    // Redis 5.0 has no master_sync_read_bytes, only what is left to read.
    let moving = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        field(&repl, "master_sync_read_bytes"),
        field(&repl, "master_sync_left_bytes"),
        field(&pers, "loading_loaded_bytes"),
        offset,
        field(&repl, "master_link_status"),
    );
    Ok(SyncState {
        link_up: field(&repl, "master_link_status") == Some("up"),
        in_progress: field(&repl, "master_sync_in_progress") == Some("1")
            || field(&pers, "loading") == Some("1"),
        replid: field(&repl, "master_replid").unwrap_or("").to_string(),
        offset,
        moving,
    })
}

const POLL: Duration = Duration::from_millis(50);

/// The replication path; `Cannot::Why` or `Cannot::NoLink` when the target cannot take it.
async fn replicate(
    cfg: &RestoreConfig,
    plan: &Plan,
    opts: &ViaOptions,
    url: &str,
    password: Option<String>,
    strict: bool,
) -> Result<Report, Cannot> {
    let started = Instant::now();
    if cfg.filter.slots.is_some() {
        return Err(Cannot::Why(
            "a shard's keys are selected by slot owner, which a served snapshot is not filtered by"
                .into(),
        ));
    }
    let mut t = LiveTarget::connect_with_timeout(url, password, cfg.target_timeout).await?;
    t.set_reply_timeout(cfg.target_timeout);
    let addr = t.addr().to_string();
    let repl = t.info("replication").await?;
    if field(&repl, "role") == Some("slave") {
        return Err(Cannot::Why(format!(
            "the target is a replica of {}:{}",
            field(&repl, "master_host").unwrap_or("?"),
            field(&repl, "master_port").unwrap_or("?")
        )));
    }
    let keys = t.key_count().await?;
    if keys > 0 && !cfg.force {
        return Err(RestoreError::TargetNotEmpty { keys }.into());
    }
    let server_info = t.info("server").await?;
    let header = snapshot_header(cfg, plan).await?;
    if let Some(why) = cannot_load(&server_info, header) {
        return Err(Cannot::Why(why));
    }
    let relative = moment::sends_relative_ttls(header);
    let (mut m, counts) = moment::moment_of_plan(&cfg.store, plan, relative).await?;
    // --db/--match: the snapshot re-encoded without the unselected keys, the stream without
    // the commands that touch none, under a fresh replication id (see `moment::Filtered`).
    let filtered = (!cfg.filter.is_all()).then(|| {
        Arc::new(moment::Filtered {
            filter: cfg.filter.clone(),
            replid: crate::random_hex(20),
            eof_mark: crate::random_hex(20),
            served: Default::default(),
        })
    });
    m.filtered = filtered.clone();
    if counts.relative_ttls > 0 {
        let why = format!(
            "the archived master (RDB version {}) sent {} commands with relative TTLs up to the cut, which a replica counts from when it applies them (a replay by commands makes them absolute)",
            header.version, counts.relative_ttls
        );
        if !strict {
            return Err(Cannot::Why(why));
        }
        tracing::warn!("--via replication: {why}");
    }
    let cut = m.cut.unwrap_or(m.offset());
    // No PINGs: the archived id, or (filtered) the moment's own.
    let replid = m.served_replid(false);
    // Where the target's offset ends: the cut, or (filtered) the snapshot's offset plus the
    // bytes served, known once the served stream reached the cut.
    let snapshot_offset = m.offset();
    let goal = || match &filtered {
        None => Some(cut),
        Some(f) => f
            .served
            .lock()
            .expect("not poisoned")
            .as_ref()
            .filter(|s| s.stream_done)
            .map(|s| snapshot_offset + s.stream_bytes),
    };
    let one_time = one_time_password();
    let server = Server::bind_moment(
        ServeConfig {
            store: cfg.store.clone(),
            mode: Mode::To(cfg.target),
            listen: opts.listen,
            password: Some(one_time.clone()),
            ping_interval: Duration::ZERO,
            timeout: cfg.target_timeout,
            poll_interval: Duration::from_secs(1),
        },
        m.clone(),
    )
    .await?
    .one_replica();
    let local = server
        .local_addr()
        .map_err(|e| Cannot::Why(format!("the listening socket: {e}")))?;
    let advertise = match &opts.advertise {
        Some(a) => a.clone(),
        None if local.ip().is_unspecified() => {
            return Err(Cannot::Why(format!(
                "listening on {local}, which the target cannot dial: give --advertise <host:port>"
            )))
        }
        None => local.to_string(),
    };
    let Some((host, port)) = advertise.rsplit_once(':') else {
        return Err(Cannot::Why(format!(
            "--advertise {advertise}: not host:port"
        )));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = port.to_string();

    // The target's settings, to be put back.
    let masterauth = match config_get(&mut t, "masterauth").await? {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => return Err(Cannot::Why(format!("the target refused {e}"))),
    };
    let masteruser = match config_get(&mut t, "masteruser").await? {
        Ok(Some(u)) if !u.is_empty() => Some(u),
        _ => None,
    };
    // `disabled` (the default) writes the RDB to a file before loading it; a setting the
    // user chose otherwise (`swapdb`, `on-empty-db`, …) is theirs to keep.
    let diskless_load = match config_get(&mut t, "repl-diskless-load").await? {
        Ok(Some(v)) if v == "disabled" => Some(v),
        _ => None,
    };
    let mut before = Before {
        masterauth,
        masteruser,
        diskless_load: None,
    };
    if let Err(e) = call(&mut t, &["CONFIG", "SET", "masterauth", &one_time]).await? {
        return Err(Cannot::Why(format!(
            "the target refused CONFIG SET masterauth: {e}"
        )));
    }
    if before.masteruser.is_some() {
        if let Err(e) = call(&mut t, &["CONFIG", "SET", "masteruser", ""]).await? {
            let _ = restore_settings(&mut t, &before).await;
            return Err(Cannot::Why(format!(
                "the target refused CONFIG SET masteruser: {e}"
            )));
        }
    }
    if let Some(was) = diskless_load {
        // Best effort: the sync works either way.
        match call(
            &mut t,
            &["CONFIG", "SET", "repl-diskless-load", DISKLESS_LOAD],
        )
        .await
        {
            Ok(Ok(())) => before.diskless_load = Some(was),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "the target refused CONFIG SET repl-diskless-load {DISKLESS_LOAD}: it loads through a file")
            }
            Err(e) => {
                let _ = restore_settings(&mut t, &before).await;
                return Err(e.into());
            }
        }
    }
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(stop.clone()));
    tracing::info!(via = "replication", target = %addr, advertise = %advertise, listen = %local,
        generation = %m.generation, snapshot_offset = m.offset(), cut, "restoring through replication: REPLICAOF {host} {port}");
    if let Err(e) = call(&mut t, &["REPLICAOF", &host, &port]).await? {
        stop.cancel();
        let _ = restore_settings(&mut t, &before).await;
        return Err(Cannot::Why(format!("the target refused REPLICAOF: {e}")));
    }
    let waited = drive(&mut t, opts, cfg, strict, &advertise, &replid, &goal).await;
    let detached = detach(&mut t, &before).await;
    stop.cancel();
    let _ = serving.await;
    match waited {
        Ok(()) => {}
        Err(Cannot::NoLink(why)) => {
            if let Err(p) = detached {
                return Err(Cannot::Fail(ViaError::Refused(format!(
                    "{why}; then putting the target back failed: {p}"
                ))));
            }
            return Err(Cannot::NoLink(why));
        }
        Err(e) => {
            if let Err(p) = detached {
                tracing::warn!(problems = %p, "putting the target's replication settings back failed");
            }
            return Err(e);
        }
    }
    if let Err(p) = detached {
        return Err(Cannot::Fail(ViaError::Refused(format!(
            "the target holds the restored moment, but putting its replication settings back failed: {p}"
        ))));
    }
    let keys = t.key_count().await?;
    // A replica loads whatever its master sends, maxmemory or not (replica-ignore-maxmemory).
    if let Ok(mem) = t.info("memory").await {
        let n = |f: &str| field(&mem, f).and_then(|v| v.parse::<u64>().ok());
        if let (Some(used), Some(max)) = (n("used_memory"), n("maxmemory")) {
            if max > 0 && used > max {
                tracing::warn!(used_memory = used, maxmemory = max, policy = field(&mem, "maxmemory_policy").unwrap_or("?"),
                    "the target holds more than its maxmemory after the sync (a replica loads what its master sends): it now evicts, or refuses writes with OOM under noeviction");
            }
        }
    }
    let served = filtered
        .as_ref()
        .and_then(|f| f.served.lock().expect("not poisoned").clone());
    let (commands, internal) = match &served {
        Some(s) => (s.commands, counts.internal + s.commands_internal),
        None => (counts.commands, counts.internal),
    };
    Ok(Report {
        offset: cut,
        time_ms: m.cut_ms,
        time: plan::fmt_ms(m.cut_ms),
        generation: plan.generation.to_string(),
        keys,
        commands,
        commands_internal: internal,
        keys_skipped: served.as_ref().map_or(0, |s| s.keys_skipped),
        commands_skipped: served.as_ref().map_or(0, |s| s.commands_skipped),
        commands_mixed: served.as_ref().map_or(0, |s| s.commands_mixed),
        commands_from_unselected: served.as_ref().map_or(0, |s| s.commands_from_unselected),
        transaction_left_out: counts.transaction_left_out,
        seconds: started.elapsed().as_secs_f64(),
        bytes_read: plan.snapshot.bytes + counts.bytes_read,
        via: Some("replication".into()),
        via_reason: Some(if strict {
            "--via replication".into()
        } else {
            "the target replicates from the restore".into()
        }),
        ..Default::default()
    })
}

/// Puts back the settings changed before `REPLICAOF` was sent (best effort: each one is
/// tried; what failed is returned).
async fn restore_settings(t: &mut LiveTarget, before: &Before) -> Result<(), String> {
    let mut sets = vec![("masterauth", before.masterauth.as_str())];
    if let Some(u) = &before.masteruser {
        sets.push(("masteruser", u));
    }
    if let Some(v) = &before.diskless_load {
        sets.push(("repl-diskless-load", v));
    }
    let mut problems = Vec::new();
    for (name, value) in sets {
        match call(t, &["CONFIG", "SET", name, value]).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("CONFIG SET {name}: {e}")),
            Err(e) => problems.push(format!("CONFIG SET {name}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Waits until the target reached the restore (its sync started, within the link wait for
/// `auto`), then until its link is up at the cut; a wait that sees nothing move for the
/// target timeout fails, naming what it waited for.
async fn drive(
    t: &mut LiveTarget,
    opts: &ViaOptions,
    cfg: &RestoreConfig,
    strict: bool,
    advertise: &str,
    replid: &str,
    goal: &dyn Fn() -> Option<u64>,
) -> Result<(), Cannot> {
    let link_wait = if strict {
        cfg.target_timeout
    } else {
        opts.link_wait
    };
    let since = Instant::now();
    loop {
        let s = sync_state(t).await?;
        if s.link_up || s.in_progress {
            break;
        }
        if since.elapsed() >= link_wait {
            return Err(Cannot::NoLink(format!(
                "the target to connect to {advertise} and start its sync (master_link_status:up or master_sync_in_progress:1) within {}",
                humantime::format_duration(link_wait)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let mut last = String::new();
    let mut moved = Instant::now();
    loop {
        let s = sync_state(t).await?;
        let cut = goal();
        if s.link_up && s.replid == replid && s.offset.is_some_and(|o| cut.is_some_and(|c| o >= c))
        {
            if s.offset != cut {
                tracing::warn!(offset = ?s.offset, cut, "the target's offset is past the cut");
            }
            return Ok(());
        }
        if s.moving != last {
            last = s.moving.clone();
            moved = Instant::now();
        } else if moved.elapsed() >= cfg.target_timeout {
            return Err(Cannot::Fail(
                TargetError::Timeout {
                    addr: t.addr().to_string(),
                    after: humantime::format_duration(cfg.target_timeout).to_string(),
                    waiting: format!(
                        "the target's replication offset to reach the cut at {} with master_link_status:up (it is at {:?}, link {}, replication id {}); the target may hold a partial restore: restore again with --force",
                        cut.map_or("(the end of the stream served)".to_string(), |c| c.to_string()),
                        s.offset,
                        if s.link_up { "up" } else { "down" },
                        s.replid
                    ),
                    unanswered: 0,
                    partial: String::new(),
                }
                .into(),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(magic: Magic, version: u32) -> RdbHeader {
        RdbHeader { magic, version }
    }

    #[test]
    fn targets_that_cannot_load_the_rdb_are_named() {
        let redis = |v: &str| format!("# Server\r\nredis_version:{v}\r\n");
        assert_eq!(cannot_load(&redis("7.0.15"), h(Magic::Redis, 10)), None);
        assert_eq!(cannot_load(&redis("7.4.1"), h(Magic::Redis, 12)), None);
        assert_eq!(cannot_load(&redis("5.0.14"), h(Magic::Redis, 9)), None);
        let e = cannot_load(&redis("7.0.15"), h(Magic::Redis, 11)).unwrap();
        assert!(e.contains("7.0.15") && e.contains("version 11"), "{e}");
        assert!(cannot_load(&redis("7.4.1"), h(Magic::Valkey, 80)).is_some());
        let valkey = "redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.0\r\n";
        assert_eq!(cannot_load(valkey, h(Magic::Valkey, 80)), None);
        assert_eq!(cannot_load(valkey, h(Magic::Redis, 11)), None);
        let e = cannot_load(valkey, h(Magic::Redis, 12)).unwrap();
        assert!(e.contains("9.1.0") && e.contains("RDB version 12"), "{e}");
    }

    #[test]
    fn via_parses() {
        assert_eq!("auto".parse::<Via>(), Ok(Via::Auto));
        assert_eq!("replication".parse::<Via>(), Ok(Via::Replication));
        assert_eq!("commands".parse::<Via>(), Ok(Via::Commands));
        assert!("rdb".parse::<Via>().is_err());
    }
}
