//! The configuration file, `pitr --config pitr.toml <command>` (README, "Configuration file").
//!
//! Top-level keys are the global flags (`log-format`); a table per command (`[archive]`,
//! `[restore]`, …) holds that command's flags; `[common]` holds flags for every command that has
//! them (`store`, `name`). Keys are the long flag names, in kebab-case or snake_case.
//!
//! Nothing here lists the flags: they are read from the clap command (its subcommands and their
//! arguments), so a flag or a command added later is covered as it is.
//!
//! How the file's values reach a command: the command line is parsed first with every
//! requirement lifted, which tells, for each flag, whether the command line or its environment
//! variable set it ([`ArgMatches::value_source`]). The file's value of every other flag is then
//! appended to the command line as `--flag=value`, and the whole is parsed again as usual, so
//! clap checks it as it checks what is typed. A file value is also left out when it conflicts
//! with a flag that was set on the command line or through the environment (`--target` given,
//! `output-dir` in the file): the command line decides.
//!
//! The whole file is checked before anything runs: tables, keys, the type of each value, and
//! each value through its flag's own value parser. `${VAR}` references are expanded only in the
//! tables the command reads (top level, `[common]`, its own), so that a secret of another
//! command need not be set; their values are checked after expansion.
//!
//! A value is never shown in an error when it is a secret flag's (its name holds `password`,
//! `secret`, `key`, `token` or `credential`) or when it holds a `${VAR}` reference.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Looks up an environment variable, for `${VAR}`.
pub type Lookup<'a> = dyn Fn(&str) -> Option<OsString> + 'a;

/// The id of the global `--config` flag.
pub const CONFIG_ID: &str = "config";

/// The table whose flags apply to every command that has them.
const COMMON: &str = "common";

/// A flag whose name holds one of these never has its value shown.
const SECRET_WORDS: [&str; 5] = ["password", "secret", "key", "token", "credential"];

/// What the file holds that cannot be used: every problem found, each with its line and key.
/// Always a usage error (exit 2), found before any work starts.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// `archive.flush-interval`, `log-format`, `[archiv]`; empty for the file as a whole.
    pub key: String,
    pub what: String,
}

impl ConfigError {
    fn one(file: &Path, line: Option<usize>, key: &str, what: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                line,
                key: key.to_string(),
                what: what.into(),
            }],
        }
    }

    /// One line per problem: `pitr.toml:12: archive.flush-interval: <what>`.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        self.problems
            .iter()
            .map(|p| {
                let at = match p.line {
                    Some(l) => format!("{file}:{l}"),
                    None => format!("{file}"),
                };
                if p.key.is_empty() {
                    format!("{at}: {}", p.what)
                } else {
                    format!("{at}: {}: {}", p.key, p.what)
                }
            })
            .collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// The command line to parse: the one given, plus the file's values for what it leaves unset.
#[derive(Debug)]
pub struct Applied {
    pub args: Vec<OsString>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The keys whose values were appended (`archive.store`, `common.name`, `log-format`).
    pub from_file: Vec<String>,
}

impl Applied {
    /// What to add to a command-line error that the file's values may have caused.
    pub fn note(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        if self.from_file.is_empty() {
            return Some(format!("note: {} set no flag here", file.display()));
        }
        Some(format!(
            "note: from {}: {}",
            file.display(),
            self.from_file.join(", ")
        ))
    }
}

/// Reads the configuration file named by `--config` (or its environment variable) on the
/// command line `args` of `cmd`, checks it, and returns the command line with the file's values
/// added. Without `--config`, or when the command line does not parse (help, a typo: the
/// caller's own parse reports it), `args` comes back as it is. `env` looks up the variables of
/// `${VAR}`.
pub fn apply(cmd: &Command, args: Vec<OsString>, env: &Lookup<'_>) -> Result<Applied, ConfigError> {
    let unchanged = |args| {
        Ok(Applied {
            args,
            file: None,
            from_file: Vec::new(),
        })
    };
    let Ok(pre) = relaxed(cmd.clone()).try_get_matches_from(&args) else {
        return unchanged(args);
    };
    let sub = pre.subcommand();
    let path = sub
        .and_then(|(_, m)| config_path(m))
        .or_else(|| config_path(&pre));
    let Some(path) = path else {
        return unchanged(args);
    };
    let Some((sub_name, sub_m)) = sub else {
        return unchanged(args);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::one(&path, None, "", format!("cannot read: {e}")))?;
    let mut built = cmd.clone();
    built.build();
    let settings = check(&built, &path, &text, sub_name, env)?;

    let mut args = args;
    let mut from_file = Vec::new();
    let running = built
        .find_subcommand(sub_name)
        .expect("the parsed subcommand exists");
    let explicit = |id: &str| is_explicit(sub_m, id) || is_explicit(&pre, id);
    for s in settings {
        let Some(arg) = running
            .get_arguments()
            .find(|a| a.get_id().as_str() == s.id)
        else {
            continue;
        };
        if s.args.is_empty() || explicit(&s.id) || conflicts_with_explicit(running, arg, &explicit)
        {
            continue;
        }
        args.extend(s.args);
        from_file.push(s.key);
    }
    Ok(Applied {
        args,
        file: Some(path),
        from_file,
    })
}

/// The environment of the process, for `${VAR}`.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn config_path(m: &ArgMatches) -> Option<PathBuf> {
    m.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten().cloned()
}

/// Set on the command line or through its environment variable.
fn is_explicit(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.try_contains_id(id)
            .ok()
            .and_then(|set| set.then(|| m.value_source(id)).flatten()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Whether `arg` conflicts with a flag set explicitly: through either one's `conflicts_with`,
/// or as two members of a group that takes one of them.
fn conflicts_with_explicit(cmd: &Command, arg: &Arg, explicit: &dyn Fn(&str) -> bool) -> bool {
    let id = arg.get_id();
    if cmd
        .get_arg_conflicts_with(arg)
        .iter()
        .any(|o| explicit(o.get_id().as_str()))
    {
        return true;
    }
    for other in cmd.get_arguments() {
        if other.get_id() != id
            && explicit(other.get_id().as_str())
            && cmd
                .get_arg_conflicts_with(other)
                .iter()
                .any(|o| o.get_id() == id)
        {
            return true;
        }
    }
    cmd.get_groups().any(|g| {
        let members: Vec<_> = g.get_args().collect();
        !g.clone().is_multiple()
            && members.contains(&id)
            && members.iter().any(|m| *m != id && explicit(m.as_str()))
    })
}

/// The command with nothing required, so that a command line that leaves a required flag to
/// the file parses.
fn relaxed(cmd: Command) -> Command {
    let cmd = lift_requirements(cmd);
    cmd.mut_subcommands(lift_requirements)
}

fn lift_requirements(cmd: Command) -> Command {
    let groups: Vec<String> = cmd
        .get_groups()
        .map(|g| g.get_id().as_str().to_string())
        .collect();
    let mut cmd = cmd.mut_args(|a| a.required(false));
    for g in groups {
        cmd = cmd.mut_group(g, |g| g.required(false));
    }
    cmd
}

/// How a flag takes its value, and so which TOML types it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// No value (`--force`): a boolean.
    Flag,
    /// Counted (`-v -v`): a boolean or a count.
    Count,
    /// One value: a string, number or datetime (a boolean too if the flag parses one).
    One { takes_bool: bool },
    /// Repeatable, or several values at once: an array of those, or one.
    Many { takes_bool: bool, repeat: bool },
}

/// A flag the file can set.
struct Flag<'a> {
    arg: &'a Arg,
    long: &'a str,
    kind: Kind,
    secret: bool,
}

impl<'a> Flag<'a> {
    fn of(arg: &'a Arg) -> Option<Self> {
        let long = arg.get_long()?;
        if arg.get_id().as_str() == CONFIG_ID {
            return None;
        }
        let takes_bool = arg.get_value_parser().type_id() == std::any::TypeId::of::<bool>();
        let multi = arg.get_num_args().is_some_and(|r| r.max_values() > 1);
        let kind = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => Kind::Flag,
            ArgAction::Count => Kind::Count,
            ArgAction::Append => Kind::Many {
                takes_bool,
                repeat: true,
            },
            ArgAction::Set if multi => Kind::Many {
                takes_bool,
                repeat: false,
            },
            ArgAction::Set => Kind::One { takes_bool },
            // --help, --version and whatever else does not set a value.
            _ => return None,
        };
        let lower = long.to_ascii_lowercase();
        let secret = SECRET_WORDS.iter().any(|w| lower.contains(w));
        Some(Flag {
            arg,
            long,
            kind,
            secret,
        })
    }
}

/// A command's flags, by long name.
fn flags(cmd: &Command) -> BTreeMap<&str, Flag<'_>> {
    cmd.get_arguments()
        .filter_map(Flag::of)
        .map(|f| (f.long, f))
        .collect()
}

/// The flags of the top level: the global ones.
fn global_flags(cmd: &Command) -> BTreeMap<&str, Flag<'_>> {
    let mut f = flags(cmd);
    f.retain(|_, f| f.arg.is_global_set());
    f
}

/// The commands the file can have a table for (not clap's own `help`).
fn commands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect()
}

/// `flush_interval` is `flush-interval`.
fn normal(key: &str) -> String {
    key.replace('_', "-")
}

/// One flag's value from the file, for the running command.
#[derive(Debug)]
struct Setting {
    /// The arg's id.
    id: String,
    /// As in errors: `archive.store`.
    key: String,
    /// What to append to the command line.
    args: Vec<OsString>,
}

/// A TOML value, in the form the flag takes.
enum Given {
    Bool(bool),
    Count(u8),
    /// Each a string to parse (strings before `${VAR}` expansion).
    Values(Vec<Text>),
}

/// A string from the file, or the text of a number or datetime.
struct Text {
    raw: String,
    /// A TOML string, in which `${VAR}` is expanded.
    template: bool,
}

/// Where a table's values apply.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Top,
    Common,
    Command(&'a str),
}

struct Checker<'a> {
    cmd: &'a Command,
    /// The command with nothing required and no environment variables, to run values through
    /// their flags' parsers alone.
    probe: Command,
    text: &'a str,
    running: &'a str,
    env: &'a dyn Fn(&str) -> Option<OsString>,
    problems: Vec<Problem>,
    /// For the running command, by arg id: top level first, then `[common]`, then its own table.
    settings: BTreeMap<String, (u8, Setting)>,
}

/// Checks the whole file; returns the running command's settings.
fn check(
    cmd: &Command,
    path: &Path,
    text: &str,
    running: &str,
    env: &Lookup<'_>,
) -> Result<Vec<Setting>, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| {
        // The message alone: the excerpt of the file that the error's Display shows may hold a
        // secret.
        let line = e.span().map(|s| line_of(text, s.start));
        ConfigError::one(path, line, "", format!("not valid TOML: {}", e.message()))
    })?;
    let probe = relaxed(cmd.clone())
        .mut_args(|a| a.env(None))
        .mut_subcommands(|s| s.mut_args(|a| a.env(None)));
    let mut c = Checker {
        cmd,
        probe,
        text,
        running,
        env,
        problems: Vec::new(),
        settings: BTreeMap::new(),
    };
    c.document(doc.get_ref());
    if !c.problems.is_empty() {
        let mut problems = c.problems;
        problems.sort_by_key(|p| p.line);
        problems.dedup();
        return Err(ConfigError {
            file: path.to_path_buf(),
            problems,
        });
    }
    let mut settings: Vec<_> = c.settings.into_values().map(|(_, s)| s).collect();
    settings.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(settings)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl<'a> Checker<'a> {
    fn problem(&mut self, span: std::ops::Range<usize>, key: impl Into<String>, what: String) {
        self.problems.push(Problem {
            line: Some(line_of(self.text, span.start)),
            key: key.into(),
            what,
        });
    }

    fn document(&mut self, doc: &DeTable<'_>) {
        let cmd = self.cmd;
        let top = global_flags(cmd);
        let subs = commands(cmd);
        let names: Vec<&str> = subs.iter().map(|s| s.get_name()).collect();
        // Each table once, whatever its spelling.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (key, item) in doc.iter() {
            let written = key.get_ref().as_ref();
            let name = normal(written);
            let span = key.span();
            if let Some(first) = seen.insert(name.clone(), written.to_string()) {
                self.problem(
                    span,
                    written,
                    format!("given twice (as `{first}` and `{written}`)"),
                );
                continue;
            }
            let is_table = name == COMMON || names.contains(&name.as_str());
            if is_table {
                let DeValue::Table(t) = item.get_ref() else {
                    self.problem(
                        span,
                        written,
                        format!(
                            "must be a table ([{name}]), not {}",
                            item.get_ref().type_str()
                        ),
                    );
                    continue;
                };
                if name == COMMON {
                    self.table(t, COMMON, Scope::Common);
                } else {
                    let sub = subs.iter().find(|s| s.get_name() == name).unwrap();
                    self.table(t, sub.get_name(), Scope::Command(sub.get_name()));
                }
            } else if top.contains_key(name.as_str()) {
                self.entry(Scope::Top, "", written, &name, item);
            } else if name == CONFIG_ID {
                self.problem(span, written, "the file cannot name another file".into());
            } else if let DeValue::Table(_) = item.get_ref() {
                let mut tables = vec![COMMON];
                tables.extend(&names);
                self.problem(
                    span,
                    format!("[{written}]"),
                    format!(
                        "unknown table{}; the tables are [{}]",
                        suggest(&name, tables.iter().copied()),
                        tables.join("], [")
                    ),
                );
            } else {
                let what = self.unknown_top_key(&name, &top);
                self.problem(span, written, what);
            }
        }
    }

    fn unknown_top_key(&self, name: &str, top: &BTreeMap<&str, Flag<'_>>) -> String {
        let has: Vec<&str> = commands(self.cmd)
            .into_iter()
            .filter(|s| flags(s).contains_key(name))
            .map(|s| s.get_name())
            .collect();
        if !has.is_empty() {
            return format!(
                "unknown key at the top level, which holds the global flags only: --{name} is a flag of {}; put it under [common] or [{}]",
                has.join(", "),
                has[0]
            );
        }
        format!(
            "unknown key{}",
            suggest(
                name,
                top.keys()
                    .copied()
                    .chain(commands(self.cmd).iter().map(|s| s.get_name()))
            )
        )
    }

    fn table(&mut self, t: &DeTable<'_>, table: &str, scope: Scope<'_>) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (key, item) in t.iter() {
            let written = key.get_ref().as_ref();
            let name = normal(written);
            let label = format!("{table}.{written}");
            if let Some(first) = seen.insert(name.clone(), written.to_string()) {
                self.problem(
                    key.span(),
                    label,
                    format!("given twice (as `{first}` and `{written}`)"),
                );
                continue;
            }
            if name == CONFIG_ID {
                self.problem(
                    key.span(),
                    label,
                    "the file cannot name another file".into(),
                );
                continue;
            }
            let known = match scope {
                Scope::Command(c) => {
                    let sub = self.cmd.find_subcommand(c).unwrap();
                    flags(sub).contains_key(name.as_str())
                }
                _ => commands(self.cmd)
                    .iter()
                    .any(|s| flags(s).contains_key(name.as_str())),
            };
            if !known {
                let what = self.unknown_key(&name, scope);
                self.problem(key.span(), label, what);
                continue;
            }
            self.entry(scope, table, written, &name, item);
        }
    }

    fn unknown_key(&self, name: &str, scope: Scope<'_>) -> String {
        match scope {
            Scope::Command(c) => {
                let sub = self.cmd.find_subcommand(c).unwrap();
                let here = flags(sub);
                let elsewhere: Vec<&str> = commands(self.cmd)
                    .into_iter()
                    .filter(|s| flags(s).contains_key(name))
                    .map(|s| s.get_name())
                    .collect();
                if elsewhere.is_empty() {
                    format!(
                        "unknown key: pitr {c} has no --{name}{}",
                        suggest(name, here.keys().copied())
                    )
                } else {
                    format!(
                        "unknown key: pitr {c} has no --{name} (a flag of {})",
                        elsewhere.join(", ")
                    )
                }
            }
            _ => {
                let all: Vec<String> = commands(self.cmd)
                    .iter()
                    .flat_map(|s| flags(s).into_keys().map(str::to_string))
                    .collect();
                format!(
                    "unknown key: no command has --{name}{}",
                    suggest(name, all.iter().map(String::as_str))
                )
            }
        }
    }

    /// One key with its value: checked against each command it applies to.
    fn entry(
        &mut self,
        scope: Scope<'_>,
        table: &str,
        written: &str,
        name: &str,
        item: &Spanned<DeValue<'_>>,
    ) {
        let label = if table.is_empty() {
            written.to_string()
        } else {
            format!("{table}.{written}")
        };
        let cmd = self.cmd;
        // (the command whose flag it is, or None for a top-level one; its flag)
        let targets: Vec<(Option<&Command>, Arg)> = match scope {
            Scope::Top => vec![(None, global_flags(cmd)[name].arg.clone())],
            Scope::Common => commands(cmd)
                .into_iter()
                .filter_map(|s| flags(s).get(name).map(|f| (Some(s), f.arg.clone())))
                .collect(),
            Scope::Command(c) => {
                let s = cmd.find_subcommand(c).unwrap();
                vec![(Some(s), flags(s)[name].arg.clone())]
            }
        };
        for (sub, arg) in targets {
            let flag = Flag::of(&arg).expect("a flag of the file");
            let given = match given(&flag, item.get_ref()) {
                Ok(g) => g,
                Err(what) => {
                    self.problem(item.span(), label.clone(), what);
                    // The type is wrong for every command alike.
                    return;
                }
            };
            let sub_name = sub.map(|s| s.get_name());
            // Top-level flags and the running command's are used: their `${VAR}` are expanded.
            let used = sub_name.is_none_or(|s| s == self.running);
            match self.values(&flag, sub_name, &label, item.span(), given, used) {
                Some(args) if used => {
                    let rank = match scope {
                        Scope::Top => 0,
                        Scope::Common => 1,
                        Scope::Command(_) => 2,
                    };
                    let id = arg.get_id().as_str().to_string();
                    let keep = self.settings.get(&id).is_none_or(|(r, _)| *r < rank);
                    if keep {
                        let s = Setting {
                            id: id.clone(),
                            key: label.clone(),
                            args,
                        };
                        self.settings.insert(id, (rank, s));
                    }
                }
                _ => {}
            }
        }
    }

    /// Expands and checks the values; returns the command-line arguments that set them.
    fn values(
        &mut self,
        flag: &Flag<'_>,
        sub: Option<&str>,
        label: &str,
        span: std::ops::Range<usize>,
        given: Given,
        used: bool,
    ) -> Option<Vec<OsString>> {
        let long = flag.long;
        match given {
            Given::Bool(false) => Some(Vec::new()),
            Given::Bool(true) if matches!(flag.kind, Kind::Flag | Kind::Count) => {
                Some(vec![format!("--{long}").into()])
            }
            Given::Count(n) => Some((0..n).map(|_| format!("--{long}").into()).collect()),
            Given::Bool(true) => unreachable!("booleans of value flags are texts"),
            Given::Values(texts) => {
                let mut values = Vec::new();
                let mut ok = true;
                for t in texts {
                    let (value, hidden) = if t.template {
                        match expand(&t.raw, used.then_some(self.env)) {
                            Ok(Some(v)) => {
                                let named = matches!(expand(&t.raw, None), Ok(None));
                                (v, flag.secret || named)
                            }
                            // Not used: the syntax is right, the variables are left alone.
                            Ok(None) => continue,
                            Err(what) => {
                                self.problem(span.clone(), label, what);
                                ok = false;
                                continue;
                            }
                        }
                    } else {
                        (t.raw, flag.secret)
                    };
                    if let Err(what) = self.parse(sub, flag, &value, hidden) {
                        let whose = match sub {
                            Some(s) if label.starts_with(COMMON) => format!(" (for pitr {s})"),
                            _ => String::new(),
                        };
                        self.problem(span.clone(), label, format!("{what}{whose}"));
                        ok = false;
                        continue;
                    }
                    values.push(value);
                }
                if !ok {
                    return None;
                }
                if values.is_empty() {
                    return Some(Vec::new());
                }
                let repeat = !matches!(flag.kind, Kind::Many { repeat: false, .. });
                if repeat {
                    Some(
                        values
                            .into_iter()
                            .map(|v| OsString::from(format!("--{long}={v}")))
                            .collect(),
                    )
                } else {
                    let mut args: Vec<OsString> = vec![format!("--{long}").into()];
                    args.extend(values.into_iter().map(OsString::from));
                    Some(args)
                }
            }
        }
    }

    /// Runs the value through the flag's own parser (and its list of possible values).
    fn parse(
        &mut self,
        sub: Option<&str>,
        flag: &Flag<'_>,
        value: &str,
        hidden: bool,
    ) -> Result<(), String> {
        let mut argv: Vec<String> = vec!["pitr".into()];
        argv.extend(sub.map(str::to_string));
        argv.push(format!("--{}={value}", flag.long));
        let Err(e) = self.probe.try_get_matches_from_mut(argv) else {
            return Ok(());
        };
        match e.kind() {
            // The lone value parsed; the rest of the command line is the file's and clap's
            // second parse to judge.
            ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | ErrorKind::ArgumentConflict => return Ok(()),
            _ => {}
        }
        let rendered = e.render().to_string();
        let mut msg = rendered
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(rest) = msg.strip_prefix("error: ") {
            msg = rest.to_string();
        }
        if hidden && !value.is_empty() {
            msg = redact(&msg, value);
        }
        Err(msg)
    }
}

/// Removes a secret value from a message, as written and as escaped by `{:?}`.
fn redact(msg: &str, value: &str) -> String {
    let escaped = format!("{value:?}");
    let escaped = &escaped[1..escaped.len() - 1];
    msg.replace(value, "<hidden>").replace(escaped, "<hidden>")
}

/// Reads a TOML value as the flag takes it.
fn given(flag: &Flag<'_>, v: &DeValue<'_>) -> Result<Given, String> {
    let what = |expected: &str| format!("expected {expected}, found {}", article(v.type_str()));
    match flag.kind {
        Kind::Flag => match v {
            DeValue::Boolean(b) => Ok(Given::Bool(*b)),
            _ => Err(format!(
                "expected a boolean (--{} takes no value), found {}",
                flag.long,
                article(v.type_str())
            )),
        },
        Kind::Count => match v {
            DeValue::Boolean(b) => Ok(Given::Bool(*b)),
            DeValue::Integer(i) => integer(i)
                .and_then(|n| u8::try_from(n).ok())
                .map(Given::Count)
                .ok_or_else(|| "expected a count from 0 to 255".to_string()),
            _ => Err(what("a boolean or a count")),
        },
        Kind::One { takes_bool } => match scalar(v, takes_bool) {
            Some(t) => Ok(Given::Values(vec![t])),
            None if v.is_array() => Err(format!(
                "expected one value, found an array (--{} takes one value)",
                flag.long
            )),
            None => Err(what(if takes_bool {
                "a string, number or boolean"
            } else {
                "a string or a number"
            })),
        },
        Kind::Many { takes_bool, .. } => {
            if let DeValue::Array(a) = v {
                let mut out = Vec::new();
                for (i, e) in a.iter().enumerate() {
                    match scalar(e.get_ref(), takes_bool) {
                        Some(t) => out.push(t),
                        None => {
                            return Err(format!(
                                "element {i}: expected a string or a number, found {}",
                                article(e.get_ref().type_str())
                            ))
                        }
                    }
                }
                Ok(Given::Values(out))
            } else {
                scalar(v, takes_bool)
                    .map(|t| Given::Values(vec![t]))
                    .ok_or_else(|| what("an array, a string or a number"))
            }
        }
    }
}

fn article(type_str: &str) -> String {
    match type_str.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

fn integer(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

fn scalar(v: &DeValue<'_>, takes_bool: bool) -> Option<Text> {
    let raw = match v {
        DeValue::String(s) => {
            return Some(Text {
                raw: s.to_string(),
                template: true,
            })
        }
        DeValue::Integer(i) => match integer(i) {
            Some(n) => n.to_string(),
            None => i.to_string(),
        },
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Boolean(b) if takes_bool => b.to_string(),
        _ => return None,
    };
    Some(Text {
        raw,
        template: false,
    })
}

/// Expands `${VAR}` (and `$$`, a `$`). With no `env`, checks the syntax only, and returns
/// `None` if the string names a variable. The error names the variable, never the value.
fn expand(s: &str, env: Option<&Lookup<'_>>) -> Result<Option<String>, String> {
    let mut out = String::new();
    let mut rest = s;
    let mut named = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            return Err(
                "a `$` must start `${NAME}` (an environment variable) or be doubled (`$$`, a `$`)"
                    .into(),
            );
        };
        let Some(end) = body.find('}') else {
            return Err("`${` without its closing `}`".into());
        };
        let name = &body[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}`: a variable name is letters, digits and `_`, not starting with a digit"
            ));
        }
        named = true;
        if let Some(env) = env {
            match env(name) {
                Some(v) => match v.into_string() {
                    Ok(v) => out.push_str(&v),
                    Err(_) => {
                        return Err(format!("environment variable {name} is not valid UTF-8"))
                    }
                },
                None => return Err(format!("environment variable {name} is not set")),
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok((env.is_some() || !named).then_some(out))
}

/// ` (did you mean `x`?)` for the nearest name, if one is near.
fn suggest<'n>(name: &str, names: impl Iterator<Item = &'n str>) -> String {
    let best = names
        .map(|n| (strsim::levenshtein(name, n), n))
        .filter(|(d, n)| *d <= (n.len().max(name.len()) / 3).max(2))
        .min();
    match best {
        Some((_, n)) => format!(" (did you mean `{n}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::io::Write as _;

    use clap::{CommandFactory, Parser};

    use crate::Cli;

    /// A configuration file holding `text` (removed on drop).
    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .prefix("pitr-config-")
            .suffix(".toml")
            .tempfile()
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).map(OsString::from)
    }

    /// `pitr --config <file of text> <args>` through `apply` on `cmd`.
    fn apply_on(
        cmd: &Command,
        text: &str,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> (Result<Applied, ConfigError>, tempfile::NamedTempFile) {
        let f = file(text);
        let mut argv: Vec<OsString> = vec!["pitr".into(), "--config".into(), f.path().into()];
        argv.extend(args.iter().map(OsString::from));
        (apply(cmd, argv, &env_of(vars)), f)
    }

    /// The matches of the running command after the file is applied; must parse.
    fn parsed_on(cmd: &Command, text: &str, args: &[&str], vars: &[(&str, &str)]) -> ArgMatches {
        let (applied, _f) = apply_on(cmd, text, args, vars);
        let applied = applied.unwrap_or_else(|e| panic!("{e}"));
        let m = cmd
            .clone()
            .try_get_matches_from(&applied.args)
            .unwrap_or_else(|e| panic!("{:?}: {e}", applied.args));
        m.subcommand().expect("a subcommand").1.clone()
    }

    fn parsed(text: &str, args: &[&str]) -> ArgMatches {
        parsed_on(&Cli::command(), text, args, &[])
    }

    /// The problems of a file that must be refused.
    fn refused_on(cmd: &Command, text: &str, args: &[&str], vars: &[(&str, &str)]) -> Vec<String> {
        let (applied, f) = apply_on(cmd, text, args, vars);
        let e = applied.expect_err("the file is refused");
        let lines = e.lines();
        let name = f.path().display().to_string();
        for l in &lines {
            assert!(l.starts_with(&name), "the file is named: {l}");
        }
        lines
    }

    fn refused(text: &str, args: &[&str]) -> Vec<String> {
        refused_on(&Cli::command(), text, args, &[])
    }

    /// The one value of `id`, as given.
    fn raw(m: &ArgMatches, id: &str) -> Option<String> {
        m.get_raw(id)
            .and_then(|mut v| v.next())
            .map(|v| v.to_string_lossy().into_owned())
    }

    fn raws(m: &ArgMatches, id: &str) -> Vec<String> {
        m.get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect()
    }

    const ARCHIVE: &str = r#"
[common]
store = "/var/lib/pitr"
name = "cache"

[archive]
source = "redis://10.0.0.5:6379"
flush-interval = "250ms"
retain_snapshots = 3
takeover = true
"#;

    #[test]
    fn the_file_fills_what_the_command_line_leaves() {
        // --source is required: the file alone gives it.
        let m = parsed(ARCHIVE, &["archive"]);
        assert_eq!(raw(&m, "source").as_deref(), Some("redis://10.0.0.5:6379"));
        assert_eq!(raw(&m, "store").as_deref(), Some("/var/lib/pitr"));
        assert_eq!(raw(&m, "name").as_deref(), Some("cache"));
        assert_eq!(
            m.get_one::<std::time::Duration>("flush_interval").copied(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(m.get_one::<usize>("retain_snapshots").copied(), Some(3));
        assert_eq!(m.get_one::<bool>("takeover").copied(), Some(true));
        // What neither gives keeps its default.
        assert_eq!(raw(&m, "read_timeout").as_deref(), Some("60s"));
        assert_eq!(
            m.value_source("read_timeout"),
            Some(ValueSource::DefaultValue)
        );
    }

    #[test]
    fn the_command_line_beats_the_file_which_beats_the_default() {
        let m = parsed(
            ARCHIVE,
            &["archive", "--flush-interval", "2s", "--store", "/elsewhere"],
        );
        assert_eq!(raw(&m, "flush_interval").as_deref(), Some("2s"));
        assert_eq!(raw(&m, "store").as_deref(), Some("/elsewhere"));
        // The others still from the file.
        assert_eq!(raw(&m, "name").as_deref(), Some("cache"));
        // Without the key, the default.
        let m = parsed("[archive]\nsource = \"redis://h:1\"\n", &["archive"]);
        assert_eq!(raw(&m, "flush_interval").as_deref(), Some("1s"));
        assert_eq!(raw(&m, "store").as_deref(), Some("./pitr-archive"));
    }

    #[test]
    fn the_environment_beats_the_file() {
        // clap reads a flag's variable when the command is built; PATH is set in any test
        // environment, so nothing here changes the process environment.
        let path = std::env::var("PATH").expect("PATH is set");
        let cmd = Command::new("pitr")
            .arg(
                Arg::new(CONFIG_ID)
                    .long("config")
                    .global(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("search").long("search").env("PATH"))
                    .arg(Arg::new("other").long("other")),
            );
        let text = "[run]\nsearch = \"/from/file\"\nother = \"x\"\n";
        let m = parsed_on(&cmd, text, &["run"], &[]);
        assert_eq!(raw(&m, "search"), Some(path));
        assert_eq!(m.value_source("search"), Some(ValueSource::EnvVariable));
        assert_eq!(raw(&m, "other").as_deref(), Some("x"));
        // And the command line beats the environment, as clap has it.
        let m = parsed_on(&cmd, text, &["run", "--search", "/typed"], &[]);
        assert_eq!(raw(&m, "search").as_deref(), Some("/typed"));
    }

    #[test]
    fn a_command_table_beats_common_which_beats_the_top_level() {
        let text = r#"
log-format = "json"
[common]
store = "/common"
json = true
[ls]
store = "/ls"
log_format = "text"
json = false
"#;
        let ls = parsed(text, &["ls"]);
        assert_eq!(raw(&ls, "store").as_deref(), Some("/ls"));
        assert_eq!(raw(&ls, "log_format").as_deref(), Some("text"));
        // `false` leaves the flag unset, whatever [common] says.
        assert_eq!(ls.get_one::<bool>("json").copied(), Some(false));
        let verify = parsed(text, &["verify"]);
        assert_eq!(raw(&verify, "store").as_deref(), Some("/common"));
        assert_eq!(raw(&verify, "log_format").as_deref(), Some("json"));
        assert_eq!(verify.get_one::<bool>("json").copied(), Some(true));
    }

    #[test]
    fn arrays_set_repeatable_flags() {
        let text = "[restore]\nto = \"latest\"\ndb = [0, 3]\nmatch = [\"user:*\", \"cart:*\"]\n";
        let m = parsed(text, &["restore", "--output-dir", "/tmp/x"]);
        assert_eq!(raws(&m, "dbs"), ["0", "3"]);
        assert_eq!(raws(&m, "patterns"), ["user:*", "cart:*"]);
        // A single value is an array of one; the command line replaces the file's list.
        let text = "[restore]\nto = \"latest\"\ndb = 5\n";
        let m = parsed(text, &["restore", "--output-dir", "/tmp/x"]);
        assert_eq!(raws(&m, "dbs"), ["5"]);
        let m = parsed(text, &["restore", "--output-dir", "/tmp/x", "--db", "1"]);
        assert_eq!(raws(&m, "dbs"), ["1"]);
    }

    #[test]
    fn a_file_value_that_conflicts_with_the_command_line_gives_way() {
        // --target and --output-dir are one or the other.
        let text = "[restore]\nto = \"latest\"\noutput-dir = \"/srv/restore\"\n";
        let m = parsed(text, &["restore", "--target", "redis://h:1"]);
        assert_eq!(raw(&m, "target").as_deref(), Some("redis://h:1"));
        assert_eq!(raw(&m, "output_dir"), None);
        // --confirm and --report-only, declared on one side only: both ways round.
        let m = parsed("[prune]\nconfirm = true\n", &["prune", "--report-only"]);
        assert_eq!(m.get_one::<bool>("confirm").copied(), Some(false));
        let m = parsed("[prune]\nreport-only = true\n", &["prune", "--confirm"]);
        assert_eq!(m.get_one::<bool>("report_only").copied(), Some(false));
        // Both from the file: clap refuses the command line, with a note naming the file.
        let (applied, _f) = apply_on(
            &Cli::command(),
            "[prune]\nconfirm = true\nreport-only = true\n",
            &["prune"],
            &[],
        );
        let applied = applied.unwrap();
        assert!(Cli::try_parse_from(&applied.args).is_err());
        let note = applied.note().unwrap();
        assert!(
            note.contains("prune.confirm") && note.contains("prune.report-only"),
            "{note}"
        );
    }

    #[test]
    fn variables_expand_in_the_tables_in_use() {
        let text = r#"
[archive]
source = "redis://:${SOURCE_PW}@h:1"
store = "/data/$${literal}/${DIR}"
[restore]
target = "redis://:${TARGET_PW}@h:2"
"#;
        let vars = [("SOURCE_PW", "s3cr3t"), ("DIR", "pitr")];
        // TARGET_PW is not set: [restore] is not read by `pitr archive`.
        let m = parsed_on(&Cli::command(), text, &["archive"], &vars);
        assert_eq!(raw(&m, "source").as_deref(), Some("redis://:s3cr3t@h:1"));
        assert_eq!(raw(&m, "store").as_deref(), Some("/data/${literal}/pitr"));
        // `pitr restore` reads it: the variable is missing.
        let lines = refused_on(&Cli::command(), text, &["restore", "--to", "latest"], &vars);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(":6: restore.target: environment variable TARGET_PW is not set"),
            "{lines:?}"
        );
    }

    #[test]
    fn each_kind_of_error_names_the_line_and_the_key() {
        let text = r#"log-format = "xml"
store = "/x"
[archiv]
[archive]
flush-interval = "soon"
annouce-port = 3
takeover = "yes"
retain = ["1d"]
segment-max-bytes = true
read-timeout = "$HOME"
[restore]
db = [0, "three"]
lease-ttl = "1s"
[common]
objectz = true
"#;
        let lines = refused(text, &["archive"]);
        let want = [
            ":1: log-format: invalid value 'xml'",
            ":2: store: unknown key at the top level",
            ":3: [archiv]: unknown table (did you mean `archive`?)",
            ":5: archive.flush-interval: invalid value 'soon'",
            ":6: archive.annouce-port: unknown key: pitr archive has no --annouce-port (did you mean `announce-port`?)",
            ":7: archive.takeover: expected a boolean (--takeover takes no value), found a string",
            ":8: archive.retain: expected one value, found an array",
            ":9: archive.segment-max-bytes: expected a string or a number, found a boolean",
            ":10: archive.read-timeout: a `$` must start `${NAME}`",
            // Tables of other commands are checked too.
            ":12: restore.db: invalid value 'three'",
            ":13: restore.lease-ttl: unknown key: pitr restore has no --lease-ttl (a flag of archive, compact, prune, ship)",
            ":15: common.objectz: unknown key: no command has --objectz (did you mean `objects`?)",
        ];
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (l, w) in lines.iter().zip(want) {
            assert!(l.contains(w), "{l}\nwant: {w}");
        }
        // Two spellings of one key, a table that is not one, another file named.
        let lines = refused("ls = 1\nconfig = \"other.toml\"\n[verify2]\n", &["ls"]);
        assert!(
            lines[0].contains(":1: ls: must be a table ([ls]), not integer"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains(":2: config: the file cannot name another file"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains(":3: [verify2]: unknown table (did you mean `verify`?)"),
            "{lines:?}"
        );
        let lines = refused("[ls]\njson = true\nJSON = 1\nj_s_o_n = 2\n[ls2]\n", &["ls"]);
        assert!(
            lines.iter().any(|l| l.contains("[ls2]: unknown table")),
            "{lines:?}"
        );
        let lines = refused("[verify]\nparallel = 4\nparallel = 5\n", &["verify"]);
        assert!(lines[0].contains("not valid TOML"), "{lines:?}");
        let lines = refused("[verify]\nparallel = 4\n[verify]\n", &["verify"]);
        assert!(lines[0].contains(":3: not valid TOML"), "{lines:?}");
        let lines = refused(
            "[archive]\nflush_interval = \"2s\"\nflush-interval = \"1s\"\n",
            &["archive"],
        );
        assert!(lines[0].contains("given twice"), "{lines:?}");
        // The parser's range: --parallel takes 1 to 256.
        let lines = refused("[verify]\nparallel = 0\n", &["verify"]);
        assert!(
            lines[0].contains(":2: verify.parallel: invalid value '0'"),
            "{lines:?}"
        );
        // A [common] value that one command refuses names that command.
        let lines = refused("[common]\nparallel = 1000\n", &["ls"]);
        assert!(
            lines.iter().any(|l| l.contains("(for pitr restore)")),
            "{lines:?}"
        );
        // An unset variable and a missing file.
        let lines = refused("[ls]\nstore = \"${PITR_TEST_SURELY_UNSET}\"\n", &["ls"]);
        assert!(
            lines[0]
                .contains(":2: ls.store: environment variable PITR_TEST_SURELY_UNSET is not set"),
            "{lines:?}"
        );
        let argv = ["pitr", "--config", "/nonexistent/pitr.toml", "ls"].map(OsString::from);
        let e = apply(&Cli::command(), argv.to_vec(), &env_of(&[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/pitr.toml: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        let cmd = Command::new("pitr")
            .arg(
                Arg::new(CONFIG_ID)
                    .long("config")
                    .global(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .subcommand(
                Command::new("push").arg(
                    Arg::new("api_token")
                        .long("api-token")
                        // Refuses anything, echoing it as parsers do.
                        .value_parser(|s: &str| Err::<String, _>(format!("{s:?} is too short"))),
                ),
            );
        let lines = refused_on(&cmd, "[push]\napi-token = \"hunter2\"\n", &["push"], &[]);
        assert!(
            lines[0].contains("push.api-token: invalid value"),
            "{lines:?}"
        );
        assert!(!lines.concat().contains("hunter2"), "{lines:?}");
        // A value from a variable is not shown either, whatever the flag.
        let lines = refused_on(
            &Cli::command(),
            "[archive]\nsource = \"x\"\nflush-interval = \"${INTERVAL}\"\n",
            &["archive"],
            &[("INTERVAL", "sooon")],
        );
        assert!(
            lines[0].contains("archive.flush-interval: invalid value"),
            "{lines:?}"
        );
        assert!(!lines.concat().contains("sooon"), "{lines:?}");
        // Nor the line of a TOML error.
        let lines = refused("[archive]\nsource = \"redis://:hunter2@h:1\n", &["archive"]);
        assert!(lines[0].contains(":2: not valid TOML"), "{lines:?}");
        assert!(!lines.concat().contains("hunter2"), "{lines:?}");
    }

    #[test]
    fn every_flag_of_every_command_is_a_key() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut text = String::new();
        let mut count = 0;
        for sub in commands(&cmd) {
            text.push_str(&format!("[{}]\n", sub.get_name()));
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
                    || long == "config"
                {
                    continue;
                }
                let value = match arg.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse => "true",
                    _ => "\"x\"",
                };
                // Every other one in snake_case.
                let key = if count % 2 == 0 {
                    long.to_string()
                } else {
                    long.replace('-', "_")
                };
                text.push_str(&format!("{key} = {value}\n"));
                count += 1;
            }
        }
        assert!(count > 40, "{count} flags");
        let e = check(&cmd, Path::new("all.toml"), &text, "ls", &env_of(&[])).unwrap_err();
        // "x" is no duration, size or number: the only problems are values.
        for p in &e.problems {
            assert!(p.what.starts_with("invalid value 'x'"), "{p:?}");
        }
    }

    #[test]
    fn flags_and_commands_added_later_are_covered() {
        let cmd = Cli::command()
            .mut_subcommand("ls", |s| s.arg(Arg::new("brand_new").long("brand-new")))
            .subcommand(
                Command::new("future").arg(
                    Arg::new("level")
                        .long("level")
                        .required(true)
                        .value_parser(clap::value_parser!(u8)),
                ),
            );
        let text = "[ls]\nbrand_new = \"v\"\n[future]\nlevel = 7\n";
        let m = parsed_on(&cmd, text, &["ls"], &[]);
        assert_eq!(raw(&m, "brand_new").as_deref(), Some("v"));
        let m = parsed_on(&cmd, text, &["future"], &[]);
        assert_eq!(m.get_one::<u8>("level").copied(), Some(7));
        let lines = refused_on(&cmd, "[future]\nlevel = 300\n", &["future"], &[]);
        assert!(
            lines[0].contains(":2: future.level: invalid value '300'"),
            "{lines:?}"
        );
    }

    #[test]
    fn without_config_or_with_a_bad_command_line_nothing_changes() {
        let argv: Vec<OsString> = ["pitr", "ls", "--json"].map(OsString::from).to_vec();
        let a = apply(&Cli::command(), argv.clone(), &env_of(&[])).unwrap();
        assert_eq!(a.args, argv);
        assert!(a.file.is_none());
        // A typo on the command line: clap's own parse reports it, the file is not read.
        let argv: Vec<OsString> = ["pitr", "--config", "/nonexistent.toml", "ls", "--jsn"]
            .map(OsString::from)
            .to_vec();
        let a = apply(&Cli::command(), argv.clone(), &env_of(&[])).unwrap();
        assert_eq!(a.args, argv);
    }

    #[test]
    fn the_sample_file_validates() {
        let text = include_str!("../../../deploy/pitr.toml");
        let mut cmd = Cli::command();
        cmd.build();
        let vars = [("REDIS_PASSWORD", "pw"), ("PITR_TARGET_PASSWORD", "pw2")];
        for sub in commands(&cmd) {
            let name = sub.get_name();
            check(
                &cmd,
                Path::new("deploy/pitr.toml"),
                text,
                name,
                &env_of(&vars),
            )
            .unwrap_or_else(|e| panic!("pitr {name}: {e}"));
        }
        // The secrets are variables: without them the commands that read them refuse.
        let e = check(
            &cmd,
            Path::new("deploy/pitr.toml"),
            text,
            "archive",
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("REDIS_PASSWORD is not set"), "{e}");
    }

    #[test]
    fn expansion_and_suggestions() {
        let env = env_of(&[("A", "1"), ("EMPTY", "")]);
        let env: &Lookup<'_> = &env;
        assert_eq!(
            expand("x${A}y$$z", Some(env)).unwrap().as_deref(),
            Some("x1y$z")
        );
        assert_eq!(expand("${EMPTY}", Some(env)).unwrap().as_deref(), Some(""));
        assert_eq!(
            expand("plain $$", None).unwrap().as_deref(),
            Some("plain $")
        );
        assert_eq!(expand("${A}", None).unwrap(), None);
        assert!(expand("${A", Some(env)).is_err());
        assert!(expand("${}", Some(env)).is_err());
        assert!(expand("${1A}", Some(env)).is_err());
        assert!(expand("$A", Some(env)).is_err());
        assert!(expand("${B}", Some(env))
            .unwrap_err()
            .contains("B is not set"));
        assert_eq!(
            suggest("retian", ["retain", "store"].into_iter()),
            " (did you mean `retain`?)"
        );
        assert_eq!(suggest("zzzzzz", ["retain", "store"].into_iter()), "");
    }
}
