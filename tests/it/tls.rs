//! TLS (`rediss://`) against real redis-server processes listening on a `tls-port` beside the
//! plain `port` the harness uses: certificates made here (a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a client certificate, and a CA that signed none of them).
//! Archiving over TLS and restoring (files, and a live TLS target that requires a client
//! certificate) give the master's data; a wrong CA, a wrong name and a missing client
//! certificate fail at once with a message naming the problem and the address;
//! `--tls-insecure` works and warns.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::support::archiving::*;
use crate::support::state::logical_state;
use crate::support::*;

/// PEM files in a temporary directory.
pub(crate) struct Certs {
    dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    /// A CA that signed none of the above.
    other_ca: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, &KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn make_certs() -> Certs {
    let dir = temp_dir("pitr-tls");
    let write = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (ca_params, ca_key, ca_pem) = ca("pitr test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (server_pem, server_key) = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    let (client_pem, client_key) = leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
    let (_, _, other_pem) = ca("another CA");
    Certs {
        ca: write("ca.pem", &ca_pem),
        server_cert: write("server.pem", &server_pem),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_pem),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &other_pem),
        dir,
    }
}

/// A redis-server with a plain `port` (for the harness) and a `tls-port`; `auth_clients`:
/// whether a TLS client must show a certificate.
fn tls_server(certs: &Certs, auth_clients: bool, extra: &[(&str, &str)]) -> (RedisServer, u16) {
    let tls_port = free_port().to_string();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (cert, key, ca) = (s(&certs.server_cert), s(&certs.server_key), s(&certs.ca));
    let mut config = vec![
        ("tls-port", tls_port.as_str()),
        ("tls-cert-file", cert.as_str()),
        ("tls-key-file", key.as_str()),
        ("tls-ca-cert-file", ca.as_str()),
        ("tls-replication", "yes"),
        ("tls-auth-clients", if auth_clients { "yes" } else { "no" }),
        ("repl-diskless-sync-delay", "0"),
    ];
    config.extend_from_slice(extra);
    let r = RedisServer::start(&config);
    (r, tls_port.parse().unwrap())
}

/// Keys of every kind, `n` of each, named with `tag`.
fn write_data(con: &mut redis::Connection, tag: &str, n: usize) {
    for i in 0..n {
        exec(con, &["SET", &format!("{tag}:s:{i}"), &format!("v{i}")]);
        exec(
            con,
            &[
                "HSET",
                &format!("{tag}:h:{}", i % 50),
                &format!("f{i}"),
                "x",
            ],
        );
        exec(
            con,
            &["RPUSH", &format!("{tag}:l:{}", i % 50), &format!("e{i}")],
        );
        exec(
            con,
            &["SADD", &format!("{tag}:set:{}", i % 50), &format!("m{i}")],
        );
        exec(
            con,
            &[
                "ZADD",
                &format!("{tag}:z:{}", i % 50),
                &i.to_string(),
                &format!("m{i}"),
            ],
        );
        if i % 10 == 0 {
            exec(
                con,
                &["XADD", &format!("{tag}:x"), "*", "i", &i.to_string()],
            );
        }
    }
    // One value larger than a TLS record, so that it spans several.
    exec(con, &["SET", &format!("{tag}:big"), &"b".repeat(200_000)]);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn archive_over_tls_and_restore_as_files_and_into_a_tls_target() {
    let certs = make_certs();
    let (master, tls_port) = tls_server(&certs, true, &[]);
    let mut con = master.client();
    write_data(&mut con, "before", 1000);
    let archive = Archive::local();
    // By name (the certificate's DNS name), with a client certificate: the master requires one.
    let source = format!("rediss://localhost:{tls_port}");
    let p = archive.archiver_with(
        &source,
        &[
            "--flush-interval",
            "100ms",
            "--tls-ca",
            path(&certs.ca),
            "--tls-cert",
            path(&certs.client_cert),
            "--tls-key",
            path(&certs.client_key),
        ],
        &[],
    );
    wait_online(&master, Duration::from_secs(60));
    write_data(&mut con, "after", 1000);
    assert_eq!(
        wait_archived(&mut con, 10_000),
        1,
        "the writes were not archived"
    );
    p.stop_gracefully(Duration::from_secs(30));
    assert!(
        !p.stderr().contains("--tls-insecure"),
        "no insecure warning without the flag:\n{}",
        p.stderr()
    );
    let want = logical_state(&master, 0);
    assert!(
        want.to_string().contains("after:big"),
        "the master holds the data"
    );

    // As files.
    let files = archive.restore_as_files_and_start("latest", &[]);
    let mut fc = files.con();
    let got = crate::support::state::logical_state_con(&mut fc, 0);
    assert_eq!(
        crate::support::state::diff(&want, &got),
        None,
        "files restored from an archive made over TLS"
    );

    // Into a live TLS target that requires a client certificate, by IP address (IP SAN).
    let (target, target_tls) = tls_server(&certs, true, &[]);
    let url = format!("rediss://127.0.0.1:{target_tls}");
    let report = archive.restore(
        "latest",
        &[
            "--target",
            &url,
            "--tls-ca",
            path(&certs.ca),
            "--tls-cert",
            path(&certs.client_cert),
            "--tls-key",
            path(&certs.client_key),
        ],
    );
    assert!(report["keys"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        crate::support::state::diff(&want, &logical_state(&target, 0)),
        None,
        "live restore over TLS"
    );
    // The same settings through the environment.
    target.cmd(&["FLUSHALL"]);
    let envs: Vec<(String, String)> = [
        ("PITR_TLS_CA", &certs.ca),
        ("PITR_TLS_CERT", &certs.client_cert),
        ("PITR_TLS_KEY", &certs.client_key),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), path(v).to_string()))
    .collect();
    let out = run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            "latest",
            "--target",
            &url,
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        crate::support::state::diff(&want, &logical_state(&target, 0)),
        None,
        "live restore over TLS, settings from PITR_TLS_*"
    );
}

/// `pitr restore --target <url> <args…>` of an archive holding one key, within a bound: what
/// a TLS failure must not exceed (no hang).
fn restore_into(archive: &Archive, url: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let mut all = vec![
        "restore",
        "--store",
        archive.store(),
        "--to",
        "latest",
        "--target",
        url,
        "--target-timeout",
        "20s",
    ];
    all.extend_from_slice(args);
    let start = Instant::now();
    let out = run_pitr_timeout(&all, &[], Duration::from_secs(60));
    (out, start.elapsed())
}

#[test]
fn certificate_problems_fail_at_once_naming_them_and_the_address() {
    let certs = make_certs();
    // An archive to restore from, made over plain TCP.
    let plain = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&plain, |con| exec(con, &["SET", "k", "v"]));

    let (open, open_tls) = tls_server(&certs, false, &[]);
    let (strict, strict_tls) = tls_server(&certs, true, &[]);
    let ip_url = format!("rediss://127.0.0.1:{open_tls}");
    let addr = format!("127.0.0.1:{open_tls}");

    // A CA that did not sign the server's certificate.
    let (out, took) = restore_into(&archive, &ip_url, &["--tls-ca", path(&certs.other_ca)]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
    assert!(err.contains(&addr), "names the address: {err}");
    assert!(
        err.contains("UnknownIssuer") && err.contains("--tls-ca"),
        "names the problem: {err}"
    );
    // No CA at all: the system's roots do not hold the test CA either.
    let (out, _) = restore_into(&archive, &ip_url, &[]);
    let err = stderr_of(&out);
    assert!(
        !out.status.success() && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(err.contains("the system's roots"), "{err}");

    // A name the certificate does not hold.
    let (out, _) = restore_into(
        &archive,
        &ip_url,
        &[
            "--tls-ca",
            path(&certs.ca),
            "--tls-server-name",
            "db.example",
        ],
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not valid for name") && err.contains("db.example") && err.contains(&addr),
        "{err}"
    );
    // The right name, given while dialling the address: works.
    let (out, _) = restore_into(
        &archive,
        &ip_url,
        &[
            "--tls-ca",
            path(&certs.ca),
            "--tls-server-name",
            "localhost",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        crate::support::state::diff(&logical_state(&plain, 0), &logical_state(&open, 0)),
        None
    );

    // A server that requires a client certificate, none given.
    let strict_url = format!("rediss://127.0.0.1:{strict_tls}");
    let (out, took) = restore_into(&archive, &strict_url, &["--tls-ca", path(&certs.ca)]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{strict_tls}")),
        "names the address: {err}"
    );
    assert!(
        err.contains("CertificateRequired") && err.contains("--tls-cert"),
        "names the problem: {err}"
    );
    assert_eq!(
        crate::support::redis_server::value_to_string(&strict.cmd(&["DBSIZE"])),
        "0"
    );

    // A TLS server dialled without TLS: refused with a message, no hang.
    let (out, took) = restore_into(&archive, &format!("redis://127.0.0.1:{open_tls}"), &[]);
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // Usage errors (exit 2): TLS flags with a plain URL, a certificate without its key, an
    // unreadable CA file, a key that does not match the certificate.
    let plain_url = plain_url(&open);
    for (args, want) in [
        (
            vec!["--target", plain_url.as_str(), "--tls-ca", path(&certs.ca)],
            "plain redis://",
        ),
        (
            vec![
                "--target",
                ip_url.as_str(),
                "--tls-cert",
                path(&certs.client_cert),
            ],
            "--tls-key",
        ),
        (
            vec![
                "--target",
                ip_url.as_str(),
                "--tls-key",
                path(&certs.client_key),
            ],
            "--tls-cert",
        ),
        (
            vec![
                "--target",
                ip_url.as_str(),
                "--tls-ca",
                path(&certs.path("missing.pem")),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--target",
                ip_url.as_str(),
                "--tls-ca",
                path(&certs.client_key),
            ],
            "client.key",
        ),
        (
            vec![
                "--target",
                ip_url.as_str(),
                "--tls-cert",
                path(&certs.client_cert),
                "--tls-key",
                path(&certs.server_key),
            ],
            "server.key",
        ),
    ] {
        let mut all = vec!["restore", "--store", archive.store(), "--to", "latest"];
        all.extend_from_slice(&args);
        let out = run_pitr(&all, &[]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wants {want:?} in {err}");
    }
}

#[test]
fn an_archiver_with_the_wrong_ca_says_why_and_insecure_works_with_a_warning() {
    let certs = make_certs();
    let (master, tls_port) = tls_server(&certs, false, &[]);
    master.cmd(&["SET", "k", "v"]);
    let archive = Archive::local();
    let source = format!("rediss://127.0.0.1:{tls_port}");
    let p = archive.archiver_with(&source, &["--tls-ca", path(&certs.other_ca)], &[]);
    let addr = format!("127.0.0.1:{tls_port}");
    wait_until_msg(
        Duration::from_secs(20),
        "the archiver to log the certificate problem",
        || {
            let e = p.stderr();
            e.contains("UnknownIssuer") && e.contains(&addr)
        },
    );
    assert!(master.info("replication")["connected_slaves"] == "0");
    drop(p);

    // A new archive: the killed archiver's lease holds the first one for a while.
    let archive = Archive::local();
    let p = archive.archiver_with(
        &source,
        &["--tls-insecure", "--flush-interval", "100ms"],
        &[],
    );
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    exec(&mut con, &["SET", "k2", "v2"]);
    assert_eq!(wait_archived(&mut con, 10_000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let warned = p
        .stderr()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("--tls-insecure"))
        .count();
    assert_eq!(warned, 1, "one warning:\n{}", p.stderr());
    let files = archive.restore_as_files_and_start("latest", &[]);
    let mut fc = files.con();
    assert_eq!(
        crate::support::state::diff(
            &logical_state(&master, 0),
            &crate::support::state::logical_state_con(&mut fc, 0)
        ),
        None
    );
}
