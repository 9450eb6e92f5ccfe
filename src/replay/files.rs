//! `--output-dir`: files that a stock redis-server loads natively, the fastest way back.
//!
//! - The cut is at the snapshot: `dump.rdb`, the snapshot's RDB bytes exactly as archived.
//! - Commands after it, Redis 7+ (RDB ≥ 10) or Valkey: a multi-part AOF, `appendonlydir/` with
//!   its manifest, the snapshot as the base RDB and the commands as the incremental AOF.
//! - Commands after it, Redis 6 and older: one `appendonly.aof` with the snapshot as its RDB
//!   preamble, followed by the commands.
//! - With `--db`/`--match`: an empty base RDB, and the selected keys as `RESTORE` commands
//!   (the server loads its own version's payloads) in the AOF, before the replayed commands.
//!
//! Everything is written in a staging directory inside the output directory, fsync'd, and
//! moved into place only when complete, so a failed restore leaves nothing a server would load.
//!
//! [`FilesOpener`] and [`FilesWriter`] are this destination's [`Opener`] and [`Sink`]. All file
//! work goes through `tokio::fs` or the base RDB's own writer thread, never a runtime thread.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use tokio::fs::File;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::filter::Filter;
use super::keys::{ConvertConfig, KeyConverter};
use super::restore::Report;
use super::sink::{CommandSink, Opener, Outgoing, RdbHeader, Sink, SnapshotNeeds};
use super::RestoreError;
use crate::rdb::{self, Event, Magic};

/// An output directory to restore into, before the snapshot's header is known.
#[derive(Clone, Debug)]
pub struct FilesOpener {
    pub dir: PathBuf,
    pub filter: Filter,
    /// Write into a non-empty directory.
    pub force: bool,
    /// A selective restore: values larger than this go as batched commands, not one RESTORE.
    pub max_restore_bytes: usize,
}

impl Opener for FilesOpener {
    type Sink = FilesWriter;

    /// The whole snapshot is copied as it is: its events are not needed. A selective restore
    /// writes the selected keys as commands, `RESTORE` where a value fits.
    fn needs(&self) -> SnapshotNeeds {
        let all = self.filter.is_all();
        SnapshotNeeds {
            events: !all,
            max_raw_value: if all { 0 } else { self.max_restore_bytes },
        }
    }

    async fn open(self, header: RdbHeader) -> Result<FilesWriter, RestoreError> {
        FilesWriter::create(
            &self.dir,
            header.magic,
            header.version,
            &self.filter,
            self.force,
            self.max_restore_bytes,
        )
        .await
    }
}

/// What was written, and how to start a server on it.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    pub dir: String,
    /// `rdb`, `aof-multipart` or `aof-preamble`.
    pub layout: &'static str,
    pub files: Vec<String>,
    /// `args`, quoted for a shell.
    pub command_line: String,
    /// The server binary and its arguments that load the files.
    #[serde(skip)]
    pub args: Vec<String>,
}

pub struct FilesWriter {
    dir: PathBuf,
    staging: PathBuf,
    magic: Magic,
    version: u32,
    base: BaseWriter,
    /// The incremental AOF; `None` while the executor has it ([`Sink::commands_apart`]).
    cmds: Option<CommandFile>,
    /// For a selective restore: the selected keys become commands.
    conv: Option<KeyConverter>,
    /// The snapshot came from Valkey: its command line names `valkey-server`.
    valkey: bool,
    /// Snapshot bytes seen so far (the aux fields that name the server come first).
    seen: u64,
    /// The staging directory is gone (moved into place, or removed after a failure).
    cleaned: bool,
}

/// Every this many bytes of the base RDB, its data is pushed to disk in the background, so
/// that the final fsync finds little left and the disk works while decompression goes on.
const SYNC_EVERY: u64 = 64 << 20;

/// The commands were asked of a writer that had lent its AOF out: a bug of the executor,
/// reported as an error rather than a panic.
fn lent(path: &Path) -> RestoreError {
    fio(path, "write", std::io::Error::other("the AOF is lent out"))
}

/// The incremental AOF of a restore: the commands after the snapshot, in a file of their own,
/// so that the executor can write them while the snapshot is still being copied.
pub struct CommandFile {
    aof: BufWriter<File>,
    path: PathBuf,
    scratch: Vec<u8>,
}

impl CommandFile {
    /// A command already encoded as RESP.
    pub async fn command_encoded(&mut self, encoded: &[u8]) -> Result<(), RestoreError> {
        self.aof
            .write_all(encoded)
            .await
            .map_err(|e| fio(&self.path, "write", e))
    }

    pub async fn command(&mut self, args: &[Bytes]) -> Result<(), RestoreError> {
        self.scratch.clear();
        crate::replay::cut::encode_args(args, &mut self.scratch);
        self.aof
            .write_all(&self.scratch)
            .await
            .map_err(|e| fio(&self.path, "write", e))
    }
}

impl CommandSink for CommandFile {
    async fn command(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
        match cmd {
            Outgoing::Archived { raw, .. } => self.command_encoded(raw).await,
            Outgoing::Args(args) => CommandFile::command(self, args).await,
        }
    }

    async fn delete_slots(
        &mut self,
        _db: u32,
        ranges: &[(u16, u16)],
        _filter: &Filter,
    ) -> Result<bool, RestoreError> {
        CommandFile::command(self, &trim_slots_script(ranges)).await?;
        Ok(true)
    }
}

/// `TRIMSLOTS RANGES n start end…` as a command every server loads from an AOF: only a Redis
/// 8.4+ cluster node knows `TRIMSLOTS`, and which keys it deletes is known only once the
/// files are loaded (the snapshot is copied as it is, its keys not listed). So the AOF gets a
/// script that deletes, in the database selected there, every key whose slot (computed as
/// `keyHashSlot` does: CRC16 of the key or its hash tag) is in the ranges. The keys the
/// files hold are all this shard's (a selective restore wrote only the selected ones), so
/// that is exactly what `TRIMSLOTS` deleted. `SCAN` in a script that then writes needs
/// effects replication before Redis 5, hence `redis.replicate_commands()` where it exists.
pub fn trim_slots_script(ranges: &[(u16, u16)]) -> Vec<Bytes> {
    let mut args = Vec::with_capacity(3 + 2 * ranges.len());
    args.push(Bytes::from_static(b"EVAL"));
    args.push(Bytes::from_static(TRIM_SLOTS_LUA.as_bytes()));
    args.push(Bytes::from_static(b"0"));
    for &(a, b) in ranges {
        args.push(Bytes::from(a.to_string()));
        args.push(Bytes::from(b.to_string()));
    }
    args
}

const TRIM_SLOTS_LUA: &str = r#"-- pitr: TRIMSLOTS RANGES as deletes
if redis.replicate_commands then redis.replicate_commands() end
local band, bxor, lshift = bit.band, bit.bxor, bit.lshift
local ranges = {}
for i = 1, #ARGV - 1, 2 do
  ranges[#ranges + 1] = {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}
end
local function crc16(s, from, to)
  local crc = 0
  for p = from, to do
    crc = bxor(crc, lshift(string.byte(s, p), 8))
    for _ = 1, 8 do
      if band(crc, 0x8000) ~= 0 then
        crc = band(bxor(lshift(crc, 1), 0x1021), 0xffff)
      else
        crc = band(lshift(crc, 1), 0xffff)
      end
    end
  end
  return crc
end
local function slot(k)
  local from, to = 1, #k
  local open = string.find(k, '{', 1, true)
  if open then
    local close = string.find(k, '}', open + 1, true)
    if close and close > open + 1 then from, to = open + 1, close - 1 end
  end
  return band(crc16(k, from, to), 0x3fff)
end
local cursor, deleted = '0', 0
repeat
  local r = redis.call('SCAN', cursor, 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local s = slot(k)
    for _, g in ipairs(ranges) do
      if s >= g[1] and s <= g[2] then
        deleted = deleted + redis.call('DEL', k)
        break
      end
    end
  end
until cursor == '0'
return deleted
"#;

/// A file operation of the restore failed: `op` says what it was doing ("create", "write"...).
fn fio(path: &Path, op: &'static str, source: std::io::Error) -> RestoreError {
    RestoreError::FileIo {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The size of each write of the files. Larger writes let the kernel back the page cache
/// with large folios, which on a virtual machine can come from memory the host has reclaimed:
/// writes of 1 MiB then cost several times the CPU of writes of 128 KiB.
const WRITE_PIECE: usize = 128 << 10;

const BASE: &str = "base.rdb";
const INCR: &str = "incr.aof";

impl FilesWriter {
    pub async fn create(
        dir: &Path,
        magic: Magic,
        version: u32,
        filter: &Filter,
        force: bool,
        max_restore_bytes: usize,
    ) -> Result<FilesWriter, RestoreError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fio(dir, "create", e))?;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| fio(dir, "list", e))?;
        if entries
            .next_entry()
            .await
            .map_err(|e| fio(dir, "list", e))?
            .is_some()
            && !force
        {
            return Err(RestoreError::OutputNotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        let staging = dir.join(format!(".pitr-restore-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| fio(&staging, "create", e))?;
        match FilesWriter::open(
            dir,
            staging.clone(),
            magic,
            version,
            filter,
            max_restore_bytes,
        )
        .await
        {
            Ok(w) => Ok(w),
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                Err(e)
            }
        }
    }

    /// The writer on a staging directory just made.
    async fn open(
        dir: &Path,
        staging: PathBuf,
        magic: Magic,
        version: u32,
        filter: &Filter,
        max_restore_bytes: usize,
    ) -> Result<FilesWriter, RestoreError> {
        let open = |name: &str| {
            let p = staging.join(name);
            async move {
                File::create(&p)
                    .await
                    .map(|f| BufWriter::with_capacity(WRITE_PIECE, f))
                    .map_err(|e| fio(&p, "create", e))
            }
        };
        let conv = (!filter.is_all()).then(|| {
            KeyConverter::new(ConvertConfig {
                restore_version: u16::try_from(version).ok(),
                max_restore_bytes,
                max_batch_bytes: 1 << 20,
                // A loading server expires nothing: payloads may keep their field TTLs.
                field_ttls_by_restore: true,
                // The server that loads the files is of the archive's version.
                stream_entries_added: magic == Magic::Valkey || version >= 10,
            })
        });
        Ok(FilesWriter {
            dir: dir.to_path_buf(),
            base: BaseWriter::create(&staging.join(BASE)).await?,
            cmds: Some(CommandFile {
                aof: open(INCR).await?,
                path: staging.join(INCR),
                scratch: Vec::with_capacity(64 << 10),
            }),
            staging,
            magic,
            version,
            conv,
            valkey: magic == Magic::Valkey,
            seen: 0,
            cleaned: false,
        })
    }

    /// Snapshot bytes and their (already filtered) events.
    pub async fn snapshot(&mut self, raw: &Bytes, events: &[Event]) -> Result<(), RestoreError> {
        if self.seen < 4096 {
            // Valkey 7.2 and 8 write `REDIS0011` and say who they are in an aux field.
            const VALKEY_AUX: &[u8] = b"\xfa\x0avalkey-ver";
            self.valkey |= raw.windows(VALKEY_AUX.len()).any(|w| w == VALKEY_AUX);
        }
        self.seen += raw.len() as u64;
        match &mut self.conv {
            None => self.base.write(raw.clone()).await,
            Some(conv) => {
                let mut cmds = Vec::new();
                for ev in events {
                    conv.push(ev, &mut cmds)?;
                }
                for c in cmds {
                    self.command(&c).await?;
                }
                Ok(())
            }
        }
    }

    /// The snapshot is complete. A selective restore's base is an empty RDB of the same
    /// version (the server loads it, then the AOF).
    pub async fn snapshot_done(&mut self) -> Result<(), RestoreError> {
        if self.conv.is_some() {
            let empty = empty_rdb(self.magic, self.version);
            self.base.write(Bytes::from(empty)).await?;
        }
        Ok(())
    }

    /// A command already encoded as RESP.
    pub async fn command_encoded(&mut self, encoded: &[u8]) -> Result<(), RestoreError> {
        self.commands()?.command_encoded(encoded).await
    }

    pub async fn command(&mut self, args: &[Bytes]) -> Result<(), RestoreError> {
        self.commands()?.command(args).await
    }

    fn commands(&mut self) -> Result<&mut CommandFile, RestoreError> {
        let path = &self.staging;
        self.cmds.as_mut().ok_or_else(|| lent(&path.join(INCR)))
    }

    /// Writes everything out and moves it into place. `has_commands`: whether any command
    /// after the snapshot was replayed (otherwise a plain `dump.rdb` is enough).
    pub async fn finish(mut self, has_commands: bool) -> Result<Written, RestoreError> {
        let written = self.write_out(has_commands).await;
        if written.is_err() {
            let _ = tokio::fs::remove_dir_all(&self.staging).await;
        }
        self.cleaned = true;
        written
    }

    async fn write_out(&mut self, has_commands: bool) -> Result<Written, RestoreError> {
        let base_path = self.staging.join(BASE);
        let incr_path = self.staging.join(INCR);
        // Both files are synced at once: the disk flushes them together.
        let Some(cmds) = &mut self.cmds else {
            return Err(lent(&incr_path));
        };
        let aof = &mut cmds.aof;
        let (base, incr) = tokio::join!(self.base.finish(), async {
            aof.flush().await?;
            aof.get_mut().sync_all().await
        });
        base?;
        incr.map_err(|e| fio(&incr_path, "write and sync", e))?;
        let dir = self.dir.clone();
        let server = if self.valkey {
            "valkey-server"
        } else {
            "redis-server"
        };
        let multipart = self.magic == Magic::Valkey || self.version >= 10;
        let (layout, files, args) = if !has_commands && self.conv.is_none() {
            let dest = dir.join("dump.rdb");
            remove_stale(&dir, "dump.rdb").await?;
            rename(&base_path, &dest).await?;
            (
                "rdb",
                vec!["dump.rdb".to_string()],
                args(
                    server,
                    &dir,
                    &["--dbfilename", "dump.rdb", "--appendonly", "no"],
                ),
            )
        } else if multipart {
            let aofdir = self.staging.join("appendonlydir");
            tokio::fs::create_dir_all(&aofdir)
                .await
                .map_err(|e| fio(&aofdir, "create", e))?;
            let base_name = "appendonly.aof.1.base.rdb";
            let incr_name = "appendonly.aof.1.incr.aof";
            rename(&base_path, &aofdir.join(base_name)).await?;
            rename(&incr_path, &aofdir.join(incr_name)).await?;
            let manifest =
                format!("file {base_name} seq 1 type b\nfile {incr_name} seq 1 type i\n");
            let mp = aofdir.join("appendonly.aof.manifest");
            write_synced(&mp, manifest.as_bytes()).await?;
            let dest = dir.join("appendonlydir");
            if tokio::fs::metadata(&dest).await.is_ok() {
                tokio::fs::remove_dir_all(&dest)
                    .await
                    .map_err(|e| fio(&dest, "remove", e))?;
            }
            remove_stale(&dir, "appendonlydir").await?;
            rename(&aofdir, &dest).await?;
            (
                "aof-multipart",
                vec![
                    format!("appendonlydir/{base_name}"),
                    format!("appendonlydir/{incr_name}"),
                    "appendonlydir/appendonly.aof.manifest".to_string(),
                ],
                args(
                    server,
                    &dir,
                    &[
                        "--appendonly",
                        "yes",
                        "--appenddirname",
                        "appendonlydir",
                        "--appendfilename",
                        "appendonly.aof",
                    ],
                ),
            )
        } else {
            // One file: the RDB preamble, then the commands.
            let mut base = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&base_path)
                .await
                .map_err(|e| fio(&base_path, "open", e))?;
            let mut incr = File::open(&incr_path)
                .await
                .map_err(|e| fio(&incr_path, "open", e))?;
            tokio::io::copy(&mut incr, &mut base)
                .await
                .map_err(|e| fio(&base_path, "append the commands to", e))?;
            base.sync_all()
                .await
                .map_err(|e| fio(&base_path, "sync", e))?;
            remove_stale(&dir, "appendonly.aof").await?;
            rename(&base_path, &dir.join("appendonly.aof")).await?;
            (
                "aof-preamble",
                vec!["appendonly.aof".to_string()],
                args(
                    server,
                    &dir,
                    &[
                        "--appendonly",
                        "yes",
                        "--appendfilename",
                        "appendonly.aof",
                        "--aof-use-rdb-preamble",
                        "yes",
                    ],
                ),
            )
        };
        let _ = tokio::fs::remove_dir_all(&self.staging).await;
        if let Ok(d) = File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(Written {
            dir: dir.display().to_string(),
            layout,
            files,
            command_line: args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            args,
        })
    }
}

/// The base RDB, written by a thread of its own straight from the pieces it is handed (no
/// copy on the way), pushed to disk in the background every [`SYNC_EVERY`] bytes, so that the
/// final fsync finds little left.
struct BaseWriter {
    path: PathBuf,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<std::fs::File>>>,
}

impl BaseWriter {
    async fn create(path: &Path) -> Result<BaseWriter, RestoreError> {
        let mut file = File::create(path)
            .await
            .map_err(|e| fio(path, "create", e))?
            .into_std()
            .await;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(super::restore::PIECES_QUEUED);
        let thread = std::thread::Builder::new()
            .name("restore-base-writer".into())
            .spawn(move || {
                use std::io::Write;
                let mut unsynced = 0u64;
                while let Some(piece) = rx.blocking_recv() {
                    for w in piece.chunks(WRITE_PIECE) {
                        file.write_all(w)?;
                    }
                    unsynced += piece.len() as u64;
                    if unsynced >= SYNC_EVERY {
                        unsynced = 0;
                        if let Ok(f) = file.try_clone() {
                            // Best effort: the final fsync is what the restore relies on.
                            std::thread::spawn(move || f.sync_data());
                        }
                    }
                }
                Ok(file)
            })
            .map_err(|e| fio(path, "start the writer thread for", e))?;
        Ok(BaseWriter {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    async fn write(&mut self, piece: Bytes) -> Result<(), RestoreError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(piece).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The thread stopped on a write error: finish() reports it.
            self.finish().await.and(Err(fio(
                &self.path,
                "write",
                std::io::Error::other("the writer thread stopped"),
            )))
        }
    }

    /// Waits for every piece to be written, then fsyncs the file.
    async fn finish(&mut self) -> Result<(), RestoreError> {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let file = thread
                .join()
                .map_err(|_| {
                    fio(
                        &path,
                        "write",
                        std::io::Error::other("the writer thread panicked"),
                    )
                })?
                .map_err(|e| fio(&path, "write", e))?;
            file.sync_all().map_err(|e| fio(&path, "sync", e))
        })
        .await
        .map_err(|e| fio(&self.path, "sync", std::io::Error::other(e)))?
    }
}

impl FilesWriter {
    /// Removes the staging directory, after the base writer has stopped.
    pub async fn abort(mut self) {
        self.base.tx = None;
        if let Some(thread) = self.base.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.staging).await;
        self.cleaned = true;
    }
}

impl Drop for FilesWriter {
    /// A restore abandoned without [`FilesWriter::abort`] (its future dropped) leaves no
    /// staging files behind either: they are removed by a thread of its own, since this may
    /// run on a runtime thread.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let staging = std::mem::take(&mut self.staging);
        let base = self.base.thread.take();
        self.base.tx = None;
        let removal = std::thread::Builder::new()
            .name("restore-cleanup".into())
            .spawn(move || {
                if let Some(thread) = base {
                    let _ = thread.join();
                }
                let _ = std::fs::remove_dir_all(&staging);
            });
        if let Err(e) = removal {
            tracing::warn!("cannot start a thread to remove the restore's staging files: {e}");
        }
    }
}

impl CommandSink for FilesWriter {
    async fn command(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
        match cmd {
            Outgoing::Archived { raw, .. } => self.command_encoded(raw).await,
            Outgoing::Args(args) => FilesWriter::command(self, args).await,
        }
    }

    /// `TRIMSLOTS` as a script that deletes the keys of those slots ([`trim_slots_script`]).
    async fn delete_slots(
        &mut self,
        _db: u32,
        ranges: &[(u16, u16)],
        _filter: &Filter,
    ) -> Result<bool, RestoreError> {
        FilesWriter::command(self, &trim_slots_script(ranges)).await?;
        Ok(true)
    }
}

impl Sink for FilesWriter {
    /// A selective restore writes `RESTORE` commands for the values that fit.
    fn values_by_restore(&self) -> bool {
        self.conv.is_some()
    }

    async fn snapshot(&mut self, raw: &Bytes, events: &mut [Event]) -> Result<(), RestoreError> {
        FilesWriter::snapshot(self, raw, events).await
    }

    async fn snapshot_done(
        &mut self,
        _keys: u64,
        _report: &mut Report,
    ) -> Result<(), RestoreError> {
        FilesWriter::snapshot_done(self).await
    }

    /// Without `--db`/`--match` the AOF holds only the commands after the snapshot: they can
    /// be written while the snapshot is copied to the base RDB.
    fn commands_apart(&mut self) -> Option<CommandFile> {
        match self.conv {
            None => self.cmds.take(),
            Some(_) => None,
        }
    }

    fn commands_back(&mut self, part: CommandFile) {
        self.cmds = Some(part);
    }

    async fn finish(self, report: &mut Report) -> Result<(), RestoreError> {
        report.files = Some(FilesWriter::finish(self, report.commands > 0).await?);
        Ok(())
    }

    async fn abort(self) {
        FilesWriter::abort(self).await
    }
}

/// What a restore writes, in each layout: `dump.rdb`, `appendonlydir/` (Redis 7+ and Valkey),
/// `appendonly.aof` (Redis 6 and older).
const LAYOUT_NAMES: [&str; 3] = ["dump.rdb", "appendonlydir", "appendonly.aof"];

/// Removes from `dir` what an earlier restore (`--force`) left there in the layouts other than
/// `keep`, so that a server started there loads only the files just written: a server with
/// `appendonly yes` would load an old `appendonlydir/` and ignore a new `dump.rdb`, and one
/// without would load an old `dump.rdb` beside a new AOF.
async fn remove_stale(dir: &Path, keep: &str) -> Result<(), RestoreError> {
    for name in LAYOUT_NAMES.into_iter().filter(|n| *n != keep) {
        let path = dir.join(name);
        let removed = match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&path).await,
            Ok(_) => tokio::fs::remove_file(&path).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        removed.map_err(|e| fio(&path, "remove what an earlier restore left", e))?;
    }
    Ok(())
}

async fn rename(from: &Path, to: &Path) -> Result<(), RestoreError> {
    tokio::fs::rename(from, to)
        .await
        .map_err(|e| fio(to, "move the restored file into place", e))
}

async fn write_synced(path: &Path, data: &[u8]) -> Result<(), RestoreError> {
    let mut f = File::create(path)
        .await
        .map_err(|e| fio(path, "create", e))?;
    f.write_all(data).await.map_err(|e| fio(path, "write", e))?;
    f.sync_all().await.map_err(|e| fio(path, "sync", e))
}

/// `server --dir <dir> <rest…>`.
fn args(server: &str, dir: &Path, rest: &[&str]) -> Vec<String> {
    [server, "--dir", &dir.display().to_string()]
        .into_iter()
        .chain(rest.iter().copied())
        .map(String::from)
        .collect()
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"/._-+:".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// An RDB with no data: the header, the EOF opcode and the checksum.
pub fn empty_rdb(magic: Magic, version: u32) -> Vec<u8> {
    let mut v = match magic {
        Magic::Redis => format!("REDIS{version:04}").into_bytes(),
        Magic::Valkey => format!("VALKEY{version:03}").into_bytes(),
    };
    v.push(0xff);
    if version >= 5 {
        let crc = rdb::crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis 8.4's `TRIMSLOTS` in the files of a restore: redis-server 7.0 loads them (it has
    /// no `TRIMSLOTS`) and holds exactly the keys outside the trimmed slots, plus those written
    /// after the trim; the script computes the same slots as the crate (hash tags included).
    #[tokio::test]
    async fn trimslots_in_the_aof_delete_the_keys_of_those_slots_on_load() {
        use crate::cluster::slot::key_slot;
        use crate::replay::live::LiveTarget;
        use crate::replay::test_server::Server;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rdb = Bytes::from(empty_rdb(Magic::Redis, 10));
        let mut w = FilesWriter::create(d, Magic::Redis, 10, &Filter::default(), false, 1 << 20)
            .await
            .unwrap();
        w.snapshot(&rdb, &[]).await.unwrap();
        w.snapshot_done().await.unwrap();
        let mut cmds = Sink::commands_apart(&mut w).expect("the AOF apart");
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let keys: Vec<String> = (0..400)
            .map(|i| format!("key:{i}"))
            .chain((0..30).map(|i| format!("x{{user{i}}}y")))
            .chain(["{}a".to_string(), "a{}".to_string(), "{".to_string()])
            .collect();
        for k in &keys {
            CommandFile::command(&mut cmds, &[b("SET"), b(k), b("v")])
                .await
                .unwrap();
        }
        let ranges = [(100u16, 6000u16), (9000, 9000), (15000, 16383)];
        let trimmed = |k: &str| {
            let s = key_slot(k.as_bytes());
            ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
        };
        assert!(
            CommandSink::delete_slots(&mut cmds, 0, &ranges, &Filter::default())
                .await
                .unwrap()
        );
        let late: Vec<String> = keys
            .iter()
            .filter(|k| trimmed(k))
            .take(3)
            .cloned()
            .collect();
        for k in &late {
            CommandFile::command(&mut cmds, &[b("SET"), b(k), b("again")])
                .await
                .unwrap();
        }
        Sink::commands_back(&mut w, cmds);
        let written = w.finish(true).await.unwrap();
        assert_eq!(written.layout, "aof-multipart");

        let server = Server::start(&written.args);
        let mut t = LiveTarget::connect(&server.url(), None).await.unwrap();
        let mut got: Vec<String> = t
            .scan_keys(0, |_| true)
            .await
            .unwrap()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = keys
            .iter()
            .filter(|k| !trimmed(k))
            .chain(&late)
            .cloned()
            .collect();
        want.sort();
        let gone = keys.iter().filter(|k| trimmed(k)).count();
        assert!(gone > 50 && gone < keys.len() - 50, "{gone} keys trimmed");
        assert_eq!(got, want);
    }

    /// `--force` into a directory an earlier restore wrote in another layout: only the new
    /// layout is left, so a server started there cannot load the old one.
    #[tokio::test]
    async fn force_removes_the_stale_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rdb = Bytes::from(empty_rdb(Magic::Redis, 10));
        let write = |has_commands: bool| {
            let rdb = rdb.clone();
            async move {
                let mut w =
                    FilesWriter::create(d, Magic::Redis, 10, &Filter::default(), true, 1 << 20)
                        .await
                        .unwrap();
                w.snapshot(&rdb, &[]).await.unwrap();
                w.snapshot_done().await.unwrap();
                if has_commands {
                    w.command(&[
                        Bytes::from_static(b"SET"),
                        Bytes::from_static(b"k"),
                        Bytes::from_static(b"v"),
                    ])
                    .await
                    .unwrap();
                }
                w.finish(has_commands).await.unwrap()
            }
        };
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // An AOF, then a dump.rdb: the old appendonlydir/ goes.
        assert_eq!(write(true).await.layout, "aof-multipart");
        assert_eq!(names(), ["appendonlydir"]);
        assert_eq!(write(false).await.layout, "rdb");
        assert_eq!(names(), ["dump.rdb"]);
        // And the reverse: the old dump.rdb goes; so does a Redis 6 appendonly.aof.
        std::fs::write(d.join("appendonly.aof"), b"stale").unwrap();
        assert_eq!(write(true).await.layout, "aof-multipart");
        assert_eq!(names(), ["appendonlydir"]);
        // Other files are not touched.
        std::fs::write(d.join("notes.txt"), b"mine").unwrap();
        assert_eq!(write(false).await.layout, "rdb");
        assert_eq!(names(), ["dump.rdb", "notes.txt"]);
    }

    /// A failed restore leaves nothing in the directory: abort removes the staging files,
    /// and so does dropping the writer (on a thread of its own).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_and_drop_remove_the_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rdb = Bytes::from(empty_rdb(Magic::Redis, 10));
        let entries = || std::fs::read_dir(d).unwrap().count();
        let mut w = FilesWriter::create(d, Magic::Redis, 10, &Filter::default(), false, 1 << 20)
            .await
            .unwrap();
        w.snapshot(&rdb, &[]).await.unwrap();
        assert_eq!(entries(), 1, "the staging directory");
        Sink::abort(w).await;
        assert_eq!(entries(), 0);

        let mut w = FilesWriter::create(d, Magic::Redis, 10, &Filter::default(), false, 1 << 20)
            .await
            .unwrap();
        w.snapshot(&rdb, &[]).await.unwrap();
        drop(w);
        for _ in 0..500 {
            if entries() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("staging files left after the writer was dropped");
    }

    /// The command line a shell runs gives the server exactly `args`.
    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let a = args("valkey-server", Path::new("/tmp/it's here"), &["--x"]);
        assert_eq!(a, ["valkey-server", "--dir", "/tmp/it's here", "--x"]);
        let line: Vec<String> = a.iter().map(|w| shell_quote(w)).collect();
        assert_eq!(
            line.join(" "),
            r"valkey-server --dir '/tmp/it'\''s here' --x"
        );
        assert_eq!(shell_quote("/tmp/a"), "/tmp/a");
    }

    #[test]
    fn empty_rdbs_parse() {
        for (m, v) in [(Magic::Redis, 10), (Magic::Redis, 3), (Magic::Valkey, 80)] {
            let f = empty_rdb(m, v);
            let s = rdb::check(&f[..]).unwrap();
            assert_eq!((s.version, s.keys), (v, 0));
        }
    }
}
