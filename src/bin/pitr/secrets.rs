//! Secrets from files: for every variable that carries a secret, `<NAME>_FILE` names a file
//! that holds it (as systemd credentials, Kubernetes and Docker secrets provide them). The file
//! is read once at the start, before the arguments are parsed, and its content (less one
//! trailing newline) becomes the variable for this process only. Setting both is an error, so
//! that which one counts is never a guess. Errors name the variable and the file, never the
//! content.
//!
//! The password flags (`--source-password-file`, `--target-password-file`,
//! `--sentinel-password-file`) are the same thing on the command line: each is read by the same
//! rules into the variable its `<NAME>_FILE` would set ([`load_flags`], after the arguments are
//! parsed and before any command reads the variables).

use std::ffi::OsString;
use std::path::PathBuf;

/// The variables that carry secrets, each of which may come from `<NAME>_FILE`.
pub const SECRET_VARS: &[&str] = &[
    "PITR_SOURCE_PASSWORD",
    "REDISCLI_AUTH",
    "PITR_TARGET_PASSWORD",
    "PITR_SENTINEL_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
];

/// A `<NAME>_FILE` or a password flag that could not be used. `origin` is what named the file:
/// the variable (`PITR_SOURCE_PASSWORD_FILE`) or the flag (`--source-password-file`).
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{origin} and {other} are both set: set one of them")]
    Both { origin: String, other: String },
    #[error("{origin}: cannot read {path:?}: {source}")]
    Read {
        origin: String,
        path: OsString,
        source: std::io::Error,
    },
    #[error("{origin}: {path:?} is empty")]
    Empty { origin: String, path: OsString },
    #[error("{origin}: {path:?} does not hold UTF-8 text")]
    NotText { origin: String, path: OsString },
}

/// The secret held in the file at `path`, less one trailing newline (`\n` or `\r\n`), read
/// with `read`. Errors name `origin` and the path, never the content.
fn read_secret(
    origin: &str,
    path: OsString,
    read: impl Fn(&OsString) -> std::io::Result<Vec<u8>>,
) -> Result<String, SecretFileError> {
    let bytes = read(&path).map_err(|source| SecretFileError::Read {
        origin: origin.to_string(),
        path: path.clone(),
        source,
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText {
        origin: origin.to_string(),
        path: path.clone(),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(SecretFileError::Empty {
            origin: origin.to_string(),
            path,
        });
    }
    Ok(text)
}

/// The secrets to set: (variable, value) for every `<NAME>_FILE` that is set, read with
/// `get` (the environment) and `read` (the file system).
fn from_files(
    get: impl Fn(&str) -> Option<OsString>,
    read: impl Fn(&OsString) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<(&'static str, String)>, SecretFileError> {
    let mut found = Vec::new();
    for &var in SECRET_VARS {
        let origin = format!("{var}_FILE");
        let Some(path) = get(&origin).filter(|p| !p.is_empty()) else {
            continue;
        };
        if get(var).is_some_and(|v| !v.is_empty()) {
            return Err(SecretFileError::Both {
                origin,
                other: var.to_string(),
            });
        }
        found.push((var, read_secret(&origin, path, &read)?));
    }
    Ok(found)
}

/// A password flag: `--<flag> <PATH>` holds the value of `var`, as `<var>_FILE` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFlag {
    /// The flag, such as `--source-password-file`.
    pub flag: &'static str,
    /// The variable it sets, such as `PITR_SOURCE_PASSWORD`.
    pub var: &'static str,
    /// The path given, if the flag was.
    pub path: Option<PathBuf>,
}

/// `--source-password-file`: the master's password (`pitr archive`, `pitr snapshot`).
pub const SOURCE_FLAG: (&str, &str) = ("--source-password-file", "PITR_SOURCE_PASSWORD");
/// `--target-password-file`: the live target's password (`pitr restore`, `pitr drill`).
pub const TARGET_FLAG: (&str, &str) = ("--target-password-file", "PITR_TARGET_PASSWORD");
/// `--sentinel-password-file`: the Sentinels' password (`pitr archive`).
pub const SENTINEL_FLAG: (&str, &str) = ("--sentinel-password-file", "PITR_SENTINEL_PASSWORD");

impl FileFlag {
    pub fn new((flag, var): (&'static str, &'static str), path: Option<PathBuf>) -> Self {
        FileFlag { flag, var, path }
    }
}

/// The secrets the given flags set, as [`from_files`] does for the variables. `get` is the
/// environment as [`load`] left it, so a flag is refused beside its variable whether that was
/// set directly or through `<NAME>_FILE` (which is then the one named).
fn from_flags(
    flags: &[FileFlag],
    get: impl Fn(&str) -> Option<OsString>,
    read: impl Fn(&OsString) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<(&'static str, String)>, SecretFileError> {
    let mut found = Vec::new();
    for f in flags {
        let Some(path) = f.path.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        let file_var = format!("{}_FILE", f.var);
        for other in [file_var.as_str(), f.var] {
            if get(other).is_some_and(|v| !v.is_empty()) {
                return Err(SecretFileError::Both {
                    origin: f.flag.to_string(),
                    other: other.to_string(),
                });
            }
        }
        found.push((f.var, read_secret(f.flag, path.clone().into(), &read)?));
    }
    Ok(found)
}

/// Reads every `<NAME>_FILE` and sets `<NAME>`. Called first thing in `main`, while the
/// process has one thread.
pub fn load() -> Result<(), SecretFileError> {
    let found = from_files(|k| std::env::var_os(k), |p: &OsString| std::fs::read(p))?;
    for (var, value) in found {
        std::env::set_var(var, value);
    }
    Ok(())
}

/// Reads the file of every password flag given and sets its variable. Called in `main` once
/// the arguments are parsed, before the runtime starts (while the process has one thread) and
/// before any command reads the variables.
pub fn load_flags(flags: &[FileFlag]) -> Result<(), SecretFileError> {
    let found = from_flags(
        flags,
        |k| std::env::var_os(k),
        |p: &OsString| std::fs::read(p),
    )?;
    for (var, value) in found {
        std::env::set_var(var, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn files(path: &OsString) -> std::io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/run/secret/pw") => Ok(b"s3cret\n".to_vec()),
            Some("/run/secret/crlf") => Ok(b"key\r\n".to_vec()),
            Some("/run/secret/two-lines") => Ok(b"a\nb\n".to_vec()),
            Some("/run/secret/empty") => Ok(b"\n".to_vec()),
            Some("/run/secret/binary") => Ok(vec![0xff, 0xfe]),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    #[test]
    fn files_become_variables_less_one_newline() {
        let got = from_files(
            env(&[
                ("PITR_SOURCE_PASSWORD_FILE", "/run/secret/pw"),
                ("AWS_SECRET_ACCESS_KEY_FILE", "/run/secret/crlf"),
                ("PITR_TARGET_PASSWORD_FILE", "/run/secret/two-lines"),
                ("AWS_REGION_FILE", "/run/secret/pw"),
            ]),
            files,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("PITR_SOURCE_PASSWORD", "s3cret".to_string()),
                ("PITR_TARGET_PASSWORD", "a\nb".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "key".to_string()),
            ]
        );
    }

    #[test]
    fn errors_name_the_variable_and_file_never_the_secret() {
        let e = from_files(
            env(&[
                ("PITR_SOURCE_PASSWORD_FILE", "/run/secret/pw"),
                ("PITR_SOURCE_PASSWORD", "x"),
            ]),
            files,
        )
        .unwrap_err();
        assert!(matches!(e, SecretFileError::Both { .. }), "{e}");
        for (path, what) in [
            ("/run/secret/none", "cannot read"),
            ("/run/secret/empty", "is empty"),
            ("/run/secret/binary", "UTF-8"),
        ] {
            let e = from_files(env(&[("REDISCLI_AUTH_FILE", path)]), files)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("REDISCLI_AUTH_FILE: "), "{e}");
            assert!(e.contains(path) && e.contains(what), "{e}");
        }
        let e = from_files(
            env(&[("PITR_SOURCE_PASSWORD_FILE", "/run/secret/none")]),
            files,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    fn flag(f: (&'static str, &'static str), path: Option<&str>) -> FileFlag {
        FileFlag::new(f, path.map(PathBuf::from))
    }

    #[test]
    fn flags_become_their_variables_as_the_files_do() {
        let got = from_flags(
            &[
                flag(SOURCE_FLAG, Some("/run/secret/pw")),
                flag(TARGET_FLAG, None),
                flag(SENTINEL_FLAG, Some("/run/secret/crlf")),
            ],
            env(&[("REDISCLI_AUTH", "other")]),
            files,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("PITR_SOURCE_PASSWORD", "s3cret".to_string()),
                ("PITR_SENTINEL_PASSWORD", "key".to_string()),
            ]
        );
        // The same file through the variable gives the same value.
        let by_var = from_files(
            env(&[("PITR_SENTINEL_PASSWORD_FILE", "/run/secret/crlf")]),
            files,
        )
        .unwrap();
        assert_eq!(by_var, [("PITR_SENTINEL_PASSWORD", "key".to_string())]);
        assert!(from_flags(&[flag(SOURCE_FLAG, None)], env(&[]), files)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn flag_errors_name_the_flag_and_path_never_the_secret() {
        for other in ["PITR_TARGET_PASSWORD", "PITR_TARGET_PASSWORD_FILE"] {
            let e = from_flags(
                &[flag(TARGET_FLAG, Some("/run/secret/pw"))],
                env(&[(other, "/run/secret/pw")]),
                files,
            )
            .unwrap_err();
            assert!(matches!(e, SecretFileError::Both { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                format!("--target-password-file and {other} are both set: set one of them")
            );
        }
        for (path, what) in [
            ("/run/secret/none", "cannot read"),
            ("/run/secret/empty", "is empty"),
            ("/run/secret/binary", "UTF-8"),
        ] {
            let e = from_flags(&[flag(SOURCE_FLAG, Some(path))], env(&[]), files)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--source-password-file: "), "{e}");
            assert!(e.contains(path) && e.contains(what), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
