//! The restoring half: a pure plan from a listing ([`plan`]), the snapshot through the RDB
//! parser and the archived commands up to the cut ([`cut`]), selected ([`filter`]) and converted
//! ([`keys`]), into a destination behind one trait ([`sink`]): a live server ([`live_sink`], over
//! the connection in [`live`]) or files a stock server loads ([`files`]). [`restore`] runs a
//! plan. Never imports `ingest`.

pub mod cut;
pub mod files;
pub mod filter;
pub mod keys;
pub mod live;
pub mod live_sink;
pub mod plan;
pub mod restore;
pub mod sink;
pub mod via;

pub use restore::{make_plan, restore, Destination, Progress, Report, RestoreConfig, RestoreError};

/// A redis-server of the machine's own (`redis-server` on the `PATH`) for the unit tests of
/// the destinations, on a free port, killed when dropped.
#[cfg(test)]
pub(crate) mod test_server {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct Server {
        child: Child,
        pub port: u16,
    }

    impl Server {
        /// `args[0]` run with `args[1..]`, a free `--port` and no saving; waits until it
        /// answers `PING` (so an AOF is loaded).
        pub fn start(args: &[String]) -> Server {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(&args[0])
                .args(&args[1..])
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--bind",
                    "127.0.0.1",
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", args[0]));
            let mut server = Server { child, port };
            let start = Instant::now();
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("{} exited: {status}", args[0]);
                }
                if server.ping() {
                    return server;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "no PONG");
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// A plain server in a directory of its own.
        pub fn plain(dir: &std::path::Path) -> Server {
            Server::start(&[
                "redis-server".into(),
                "--dir".into(),
                dir.display().to_string(),
                "--appendonly".into(),
                "no".into(),
            ])
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn ping(&self) -> bool {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 64];
            c.write_all(b"PING\r\n").is_ok()
                && c.read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
