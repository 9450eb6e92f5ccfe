//! Secrets from files: for every variable that carries a secret, `<NAME>_FILE` names a file
//! that holds it (as systemd credentials, Kubernetes and Docker secrets provide them). The file
//! is read once at the start, before the arguments are parsed, and its content (less one
//! trailing newline) becomes the variable for this process only. Setting both is an error, so
//! that which one counts is never a guess. Errors name the variable and the file, never the
//! content.

use std::ffi::OsString;

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

/// A `<NAME>_FILE` that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{var}_FILE and {var} are both set: set one of them")]
    Both { var: &'static str },
    #[error("{var}_FILE: cannot read {path:?}: {source}")]
    Read {
        var: &'static str,
        path: OsString,
        source: std::io::Error,
    },
    #[error("{var}_FILE: {path:?} is empty")]
    Empty { var: &'static str, path: OsString },
    #[error("{var}_FILE: {path:?} does not hold UTF-8 text")]
    NotText { var: &'static str, path: OsString },
}

/// The secrets to set: (variable, value) for every `<NAME>_FILE` that is set, read with
/// `get` (the environment) and `read` (the file system).
fn from_files(
    get: impl Fn(&str) -> Option<OsString>,
    read: impl Fn(&OsString) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<(&'static str, String)>, SecretFileError> {
    let mut found = Vec::new();
    for &var in SECRET_VARS {
        let Some(path) = get(&format!("{var}_FILE")).filter(|p| !p.is_empty()) else {
            continue;
        };
        if get(var).is_some_and(|v| !v.is_empty()) {
            return Err(SecretFileError::Both { var });
        }
        let bytes = read(&path).map_err(|source| SecretFileError::Read {
            var,
            path: path.clone(),
            source,
        })?;
        let mut text = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText {
            var,
            path: path.clone(),
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(SecretFileError::Empty { var, path });
        }
        found.push((var, text));
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
}
