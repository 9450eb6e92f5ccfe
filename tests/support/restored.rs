//! Starting a stock redis-server on the files a restore wrote.

use std::time::Duration;

use super::process::ManagedChild;
use super::util::{free_port, require_binary, wait_until_msg};

/// Starts `redis-server` with the command line `pitr restore --output-dir` printed (plus a free
/// loopback port, and no saving), waits until it has loaded everything, and returns it (killed
/// on drop) with its port.
pub fn start_from(command_line: &str) -> (ManagedChild, u16) {
    let port = free_port();
    let words: Vec<&str> = command_line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"redis-server"), "{command_line}");
    let mut cmd = std::process::Command::new(require_binary("redis-server"));
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
