//! Passwords never leak: `pitr archive`, `pitr snapshot`, `pitr restore --target` and
//! `pitr drill --target` run with a distinctive password given by the environment, by
//! `<NAME>_FILE` and by the `--*-password-file` flags (text and JSON logs), and fail on
//! purpose (a wrong password, a store that cannot be reached). The password (and the wrong one)
//! is looked for in the archiver's `/proc/<pid>/cmdline` while it runs, in every command's
//! arguments, stdout and stderr, and in the `/metrics` body: it is never there. The search is
//! shown to find it where it is: in the server's own `CONFIG GET requirepass`, and the file's
//! path in the cmdline of the run that names it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::metrics::get_ok;
use crate::support::archiving::*;
use crate::support::redis_server::value_to_string;
use crate::support::util::random_hex;
use crate::support::*;

/// Exit codes (README, "Exit codes").
const EXIT_UNREACHABLE: i32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Env,
    File,
    Flag,
}

/// The secrets to look for.
struct Secrets {
    good: String,
    wrong: String,
}

impl Secrets {
    fn shown_in(&self, text: &str) -> bool {
        [&self.good, &self.wrong]
            .iter()
            .any(|s| text.contains(s.as_str()))
    }

    #[track_caller]
    fn assert_absent(&self, what: &str, text: &str) {
        assert!(!self.shown_in(text), "{what} shows a password:\n{text}");
    }

    fn assert_output_clean(&self, what: &str, args: &[String], out: &Output) {
        self.assert_absent(&format!("{what}: arguments"), &args.join(" "));
        self.assert_absent(
            &format!("{what}: stdout"),
            &String::from_utf8_lossy(&out.stdout),
        );
        self.assert_absent(
            &format!("{what}: stderr"),
            &String::from_utf8_lossy(&out.stderr),
        );
    }
}

/// The arguments and environment that give `password` to a command through `via`: the
/// variable `var`, its `_FILE`, or `flag`, with the file written under `dir`.
fn give(
    via: Via,
    var: &str,
    flag: &str,
    password: &str,
    dir: &Path,
) -> (Vec<String>, Vec<(String, String)>) {
    let file = dir.join(format!("{var}-{}", random_hex(4)));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let file = file.to_string_lossy().into_owned();
    match via {
        Via::Env => (vec![], vec![(var.to_string(), password.to_string())]),
        Via::File => (vec![], vec![(format!("{var}_FILE"), file)]),
        Via::Flag => (vec![flag.to_string(), file], vec![]),
    }
}

fn run(args: &[String], envs: &[(String, String)]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_pitr(&a, envs)
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn passwords_never_leak() {
    let secrets = Secrets {
        good: format!("Leak{}", random_hex(8)),
        wrong: format!("Wrong{}", random_hex(8)),
    };
    let dir = temp_dir("pitr-secrets");
    let master = RedisServer::start(&[("requirepass", &secrets.good)]);
    let target = RedisServer::start(&[("requirepass", &secrets.good)]);
    // The search finds the password where it is.
    let shown = value_to_string(&master.cmd(&["CONFIG", "GET", "requirepass"]));
    assert!(
        secrets.shown_in(&shown),
        "the search does not find the password in {shown:?}"
    );
    let archive = Archive::local();
    let source = plain_url(&master);
    let target_url = plain_url(&target);
    let store = archive.store().to_string();

    for (i, via) in [Via::Env, Via::File, Via::Flag].into_iter().enumerate() {
        let log = if via == Via::File { "json" } else { "text" };
        let what = |cmd: &str| format!("{cmd} ({via:?}, {log} logs)");
        let (src_args, src_env) = give(
            via,
            "PITR_SOURCE_PASSWORD",
            "--source-password-file",
            &secrets.good,
            dir.path(),
        );
        let (tgt_args, tgt_env) = give(
            via,
            "PITR_TARGET_PASSWORD",
            "--target-password-file",
            &secrets.good,
            dir.path(),
        );

        // The archiver: its cmdline while it runs, /metrics, its output.
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let mut args = vec!["--log-format", log, "--metrics-addr", &metrics];
        args.extend(src_args.iter().map(String::as_str));
        let p = archive.archiver_with(&source, &args, &src_env);
        wait_online(&master, Duration::from_secs(60));
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("archive"), "{cmdline}");
        if via == Via::Flag {
            // The search finds what is there: the file's path.
            assert!(cmdline.contains(&src_args[1]), "{cmdline}");
        }
        secrets.assert_absent(&what("archive: /proc/<pid>/cmdline"), &cmdline);
        let mut con = master.client();
        exec(&mut con, &["SET", &format!("k{i}"), "v"]);
        assert_eq!(wait_archived(&mut con, 5000), 1, "{}", p.log_tail(20));
        let (status, body) = get_ok(port, "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("pitr_"), "{body}");
        secrets.assert_absent(&what("archive: /metrics"), &body);

        // pitr snapshot beside it, with the source password given the same way.
        let mut args = strings(&[
            "snapshot",
            "--store",
            &store,
            "--source",
            &source,
            "--timeout",
            "60s",
            "--json",
            "--log-format",
            log,
        ]);
        args.extend(src_args.clone());
        let out = run(&args, &src_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("snapshot"), &args, &out);

        p.stop_gracefully(Duration::from_secs(30));
        secrets.assert_absent(&what("archive: stdout and stderr"), &p.log());

        // A wrong password: the archiver stops (exit 5) without showing either.
        let (bad_args, bad_env) = give(
            via,
            "PITR_SOURCE_PASSWORD",
            "--source-password-file",
            &secrets.wrong,
            dir.path(),
        );
        let mut args = strings(&[
            "archive",
            "--source",
            &source,
            "--store",
            &store,
            "--metrics-addr",
            "off",
            "--log-format",
            log,
        ]);
        args.extend(bad_args);
        let out = run(&args, &bad_env);
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNREACHABLE),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("WRONGPASS"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("archive, wrong password"), &args, &out);

        // pitr restore --target.
        target.cmd(&["FLUSHALL"]);
        let mut args = strings(&[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--target",
            &target_url,
            "--json",
            "--log-format",
            log,
        ]);
        args.extend(tgt_args.clone());
        let out = run(&args, &tgt_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("restore --target"), &args, &out);
        assert_eq!(
            value_to_string(&target.cmd(&["GET", &format!("k{i}")])),
            "v",
            "the restore did not use the password it was given"
        );

        // pitr drill --target.
        target.cmd(&["FLUSHALL"]);
        let mut args = strings(&[
            "drill",
            "--store",
            &store,
            "--target",
            &target_url,
            "--json",
            "--log-format",
            log,
        ]);
        args.extend(tgt_args.clone());
        let out = run(&args, &tgt_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("drill --target"), &args, &out);

        // A wrong target password: exit 5.
        target.cmd(&["FLUSHALL"]);
        let (bad_args, bad_env) = give(
            via,
            "PITR_TARGET_PASSWORD",
            "--target-password-file",
            &secrets.wrong,
            dir.path(),
        );
        let mut args = strings(&[
            "restore",
            "--store",
            &store,
            "--to",
            "latest",
            "--target",
            &target_url,
            "--log-format",
            log,
        ]);
        args.extend(bad_args);
        let out = run(&args, &bad_env);
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNREACHABLE),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("restore, wrong password"), &args, &out);

        // A store that cannot be reached (its secret key given the same way): exit 5.
        let closed = free_port();
        let mut key_env = match via {
            Via::Env => vec![("AWS_SECRET_ACCESS_KEY".to_string(), secrets.good.clone())],
            // No flag for the store's keys: the file through the variable.
            Via::File | Via::Flag => {
                let file = dir.path().join(format!("aws-{i}"));
                std::fs::write(&file, &secrets.good).unwrap();
                vec![(
                    "AWS_SECRET_ACCESS_KEY_FILE".to_string(),
                    file.to_string_lossy().into_owned(),
                )]
            }
        };
        key_env.extend([
            ("AWS_ACCESS_KEY_ID".to_string(), "GK0123456789".to_string()),
            ("AWS_REGION".to_string(), "garage".to_string()),
            (
                "AWS_ENDPOINT_URL".to_string(),
                format!("http://127.0.0.1:{closed}"),
            ),
            ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
        ]);
        key_env.extend(tgt_env.clone());
        let mut args = strings(&[
            "drill",
            "--store",
            "s3://nowhere/pitr",
            "--target",
            &target_url,
            "--log-format",
            log,
        ]);
        args.extend(tgt_args.clone());
        let out = run(&args, &key_env);
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNREACHABLE),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secrets.assert_output_clean(&what("drill, store unreachable"), &args, &out);
    }
}
