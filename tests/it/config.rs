//! `pitr --config <file>`: one file that drives `pitr archive` against a real redis-server, then
//! `pitr ls` and `pitr restore --output-dir` of the same archive; each kind of error in a file
//! (exit 2, naming the file and the key); the command line and the environment over the file.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::*;

/// Writes `text` as `pitr.toml` in `dir`; returns its path.
fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("pitr.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_file_drives_archive_ls_and_restore() {
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    r.cmd(&["SET", "before", "1"]);
    let dir = temp_dir("pitr-config");
    let store = dir.path().join("archive");
    let out_dir = dir.path().join("restored");
    let text = format!(
        r#"log-format = "json"

[common]
store = "{store}"
name = "cfg"

[archive]
source = "${{CONFIG_TEST_SOURCE}}"
flush_interval = "100ms"
snapshot-interval = 0

[ls]
objects = true
json = true

[restore]
to = "latest"
output-dir = "{out_dir}"
json = true

[prune]
# Not read by the commands above: its variable need not be set.
retain = "${{CONFIG_TEST_UNSET}}"
"#,
        store = store.display(),
        out_dir = out_dir.display(),
    );
    let config = write_config(dir.path(), &text);
    // The source comes through a variable of the file.
    let envs = [("CONFIG_TEST_SOURCE".to_string(), plain_url(&r))];
    let p = PitrProcess::spawn(&["--config", &config, "archive"], &envs);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    exec(&mut con, &["SET", "after", "2"]);
    exec(&mut con, &["RPUSH", "list", "a", "b"]);
    assert_eq!(wait_archived(&mut con, 5000), 1, "{}", p.log());
    p.stop_gracefully(Duration::from_secs(30));
    // log-format = "json": every log line is a JSON object.
    let log = p.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{}", p.log());
    for l in &lines {
        assert!(
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {l}"
        );
    }
    // The archive went where the file said, under its name.
    assert!(
        files_under(&store)
            .iter()
            .any(|f| f.strip_prefix(&store).unwrap().starts_with("cfg")),
        "{:?}",
        files_under(&store)
    );

    // `pitr ls` from the same file: JSON, every object.
    let ls: Value = serde_json::from_str(&run_pitr_ok(&["--config", &config, "ls"], &[])).unwrap();
    let generations = ls["generations"].as_array().expect("generations");
    assert_eq!(generations.len(), 1, "{ls:#}");
    assert_eq!(
        generations[0]["last_offset"].as_u64(),
        Some(master_offset(&r)),
        "{ls:#}"
    );

    // `pitr restore` from the same file: --to and --output-dir from it.
    let report: Value =
        serde_json::from_str(&run_pitr_ok(&["--config", &config, "restore"], &[])).unwrap();
    let line = report["files"]["command_line"]
        .as_str()
        .unwrap_or_else(|| panic!("no command line in {report}"));
    assert!(line.contains(&out_dir.display().to_string()), "{line}");
    let (_server, port) = crate::support::restored::start_from(line);
    let mut c = crate::support::restored::connect(port);
    let got: (Option<String>, Option<String>, Vec<String>) = redis::pipe()
        .cmd("GET")
        .arg("before")
        .cmd("GET")
        .arg("after")
        .cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        got,
        (
            Some("1".into()),
            Some("2".into()),
            vec!["a".into(), "b".into()]
        )
    );

    // The same `prune` does read [prune]: its variable is missing, a usage error.
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("retain = "))
        .unwrap();
    let out = run_pitr(&["--config", &config, "prune"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{config}:{line}: prune.retain: environment variable CONFIG_TEST_UNSET is not set"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_kind_of_error_exits_2_naming_the_file_and_the_key() {
    let dir = temp_dir("pitr-config");
    let cases: [(&str, &str); 7] = [
        ("[lss]\n", "pitr.toml:1: [lss]: unknown table (did you mean `ls`?)"),
        (
            "[ls]\nobject = true\n",
            "pitr.toml:2: ls.object: unknown key: pitr ls has no --object (did you mean `objects`?)",
        ),
        (
            "[ls]\njson = \"yes\"\n",
            "pitr.toml:2: ls.json: expected a boolean (--json takes no value), found a string",
        ),
        (
            "[archive]\nflush-interval = \"soon\"\n",
            "pitr.toml:2: archive.flush-interval: invalid value 'soon' for '--flush-interval",
        ),
        (
            "[common]\nname = \"${CONFIG_TEST_UNSET}\"\n",
            "pitr.toml:2: common.name: environment variable CONFIG_TEST_UNSET is not set",
        ),
        (
            "log-format = \"xml\"\n",
            "pitr.toml:1: log-format: invalid value 'xml' for '--log-format",
        ),
        ("[ls\n", "pitr.toml:1: not valid TOML"),
    ];
    for (text, want) in cases {
        let config = write_config(dir.path(), text);
        let out = run_pitr(&["--config", &config, "ls"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}:\n{err}\nwant: {want}");
        assert!(err.contains(&config), "the file is named in full: {err}");
        // Nothing ran: no output at all.
        assert!(out.stdout.is_empty(), "{text}");
    }
    // PITR_CONFIG names the file as well; a value from a variable is not shown.
    let config = write_config(dir.path(), "[verify]\nparallel = \"${CONFIG_TEST_N}\"\n");
    let out = run_pitr(
        &["verify"],
        &[
            ("PITR_CONFIG".into(), config.clone()),
            ("CONFIG_TEST_N".into(), "123456789".into()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{config}:2: verify.parallel: invalid value")),
        "{err}"
    );
    assert!(!err.contains("123456789"), "{err}");
    // A file that is not there.
    let missing = dir.path().join("missing.toml");
    let out = run_pitr(&["--config", missing.to_str().unwrap(), "ls"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

/// `pitr ls` of an empty archive names it: which `--name` won.
fn name_used(config: &str, args: &[&str], envs: &[(String, String)]) -> String {
    let mut all = vec!["--config", config, "ls"];
    all.extend_from_slice(args);
    let out = run_pitr(&all, envs);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "an empty archive: {err}");
    let start = err.find("archive \"").unwrap_or_else(|| panic!("{err}")) + 9;
    let end = start + err[start..].find('"').unwrap();
    err[start..end].to_string()
}

#[test]
fn the_command_line_and_the_environment_beat_the_file() {
    let dir = temp_dir("pitr-config");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[common]\nstore = \"{}\"\nname = \"from-file\"\n",
            store.display()
        ),
    );
    let env = |v: &str| vec![("PITR_NAME".to_string(), v.to_string())];
    assert_eq!(name_used(&config, &[], &[]), "from-file");
    assert_eq!(
        name_used(&config, &["--name", "from-flag"], &[]),
        "from-flag"
    );
    assert_eq!(name_used(&config, &[], &env("from-env")), "from-env");
    assert_eq!(
        name_used(&config, &["--name", "from-flag"], &env("from-env")),
        "from-flag"
    );
    // Without the key, the default.
    let bare = write_config(
        dir.path(),
        &format!("[common]\nstore = \"{}\"\n", store.display()),
    );
    assert_eq!(name_used(&bare, &[], &[]), "default");
}
