//! An archive in format version 1, made by the release before version 2
//! (`tests/fixtures/archive-v1`), read by this one: `ls`, `verify`, and restores to each
//! checkpoint, live and as files, equal to the master of the time (its `DEBUG DIGEST`).

use std::path::{Path, PathBuf};

use crate::support::archiving::Archive;
use crate::support::state::logical_state_con;
use crate::support::util::temp_dir;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archive-v1")
}

/// `(offset, digest)` of each checkpoint.
fn checkpoints() -> Vec<(u64, String)> {
    std::fs::read_to_string(fixture().join("expected.txt"))
        .expect("tests/fixtures/archive-v1/expected.txt")
        .lines()
        .map(|l| {
            let (off, digest) = l.split_once(' ').expect("offset and digest");
            (off.parse().expect("an offset"), digest.to_string())
        })
        .collect()
}

/// A copy of the fixture, so that nothing a reader might write lands in the repository.
fn copy() -> (tempfile::TempDir, Archive) {
    let dir = temp_dir("archive-v1");
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(fixture().join("default"))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let archive = Archive::at(dir.path().to_string_lossy().into_owned(), Vec::new());
    (dir, archive)
}

fn digest(con: &mut redis::Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(con)
        .expect("DEBUG DIGEST")
}

#[test]
fn a_version_1_archive_lists_and_verifies() {
    let (_dir, archive) = copy();
    let v = archive.verify();
    assert_eq!(v["segments"], 4, "{v:#}");
    assert_eq!(v["snapshots"], 1, "{v:#}");
    archive.ls_summary();
    let ls = archive.ls();
    let g = &ls["generations"][0];
    assert_eq!(
        ls["generations"].as_array().map(|a| a.len()),
        Some(1),
        "{ls:#}"
    );
    assert_eq!(g["first_offset"], 0, "{ls:#}");
    assert_eq!(g["last_offset"], 2511, "{ls:#}");
}

#[test]
fn a_version_1_archive_restores_each_checkpoint_live_and_as_files() {
    let (_dir, archive) = copy();
    for (offset, want) in checkpoints() {
        let to = format!("offset:{offset}");
        let (server, report) = archive.restore_into_new_server(&to, &[]);
        assert_eq!(report["offset"], offset, "{report:#}");
        assert_eq!(
            digest(&mut server.client()),
            want,
            "live restore to {offset}"
        );

        let files = archive.restore_as_files_and_start(&to, &[]);
        assert_eq!(files.report["offset"], offset, "{:#}", files.report);
        // The restored server may refuse DEBUG: its logical state is compared with that of
        // the live restore, whose digest is the master's.
        let files_state = logical_state_con(&mut files.con(), 0);
        let live_state = logical_state_con(&mut server.client(), 0);
        assert!(live_state.to_string().contains("base:list"), "{live_state}");
        assert_eq!(files_state, live_state, "files restore to {offset}");
    }
}
