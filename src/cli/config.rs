//! `strata config`: the effective configuration, each value with where it comes from (`default`,
//! `file:PATH`, `env:VAR`, `flag`), human (TOML with the origins as comments) or `--json`.
//!
//! Without arguments it shows the global options and whatever the file and the environment set
//! for each command; `strata config COMMAND ARGS...` parses that command line as strata would
//! and shows every option of the command. The origins come from clap's `value_source` and from
//! the record of which defaults the file set ([`crate::config::Origins`]).

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command};
use serde::Serialize;

use super::{json, EXIT_OK};
use crate::config::{self, FileOrigin, Parsed, Scalar, Table, Value};
use crate::Result;

/// `strata config`
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
    /// A command line to evaluate (e.g. `backup /srv/shop --exclude '*.log'`): shows every option
    /// of that command as it would run
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,
}

/// The name of the source a backup command line backs up, as `backup` names it: `--source-name`,
/// else the absolute path of SOURCE (`None` when it does not resolve).
pub fn backup_source_name(m: &ArgMatches) -> Option<String> {
    let raw = |id: &str| m.try_get_raw(id).ok().flatten()?.next();
    if let Some(name) = raw("source_name") {
        return Some(name.to_string_lossy().into_owned());
    }
    let source = std::fs::canonicalize(raw("source")?).ok()?;
    Some(source.to_string_lossy().into_owned())
}

/// A value as shown: typed as the option takes it.
#[derive(Serialize)]
#[serde(untagged)]
enum Shown {
    Flag(bool),
    Count(u64),
    List(Vec<String>),
    Text(String),
    Unset,
}

/// One setting of the report (a stable interface, documented in README.md).
#[derive(Serialize)]
struct Row {
    /// The command (`None`: a global option).
    command: Option<String>,
    /// The `[source."NAME"]` table the value is from.
    source: Option<String>,
    key: String,
    value: Shown,
    /// `default`, `file:PATH`, `env:VAR`, `flag` or `unset`.
    origin: String,
    /// The file's line, for values from the file.
    line: Option<usize>,
    /// The option's environment variable.
    env: Option<String>,
}

/// `strata config --json`.
#[derive(Serialize)]
struct ConfigJson<'a> {
    /// Where the file was looked for (`None`: no place to look).
    file: Option<String>,
    /// Whether it was there and read.
    file_found: bool,
    /// The command line evaluated (`strata config COMMAND ...`), if any.
    command: Option<String>,
    settings: &'a [Row],
}

/// Runs `strata config`.
pub fn run(outer: &Parsed, a: ConfigArgs) -> Result<i32> {
    let (parsed, evaluated);
    let p = if a.args.is_empty() {
        outer
    } else {
        let mut argv = vec![OsString::from("strata")];
        argv.extend(globals_given(&outer.command, &outer.matches));
        argv.extend(a.args.iter().cloned());
        parsed = match super::parse(&argv) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        &parsed
    };
    let file_path = p.file.as_ref().map(|f| f.path.display().to_string());
    let mut rows = global_rows(p, file_path.as_deref());
    match p.matches.subcommand() {
        Some((name, m)) if !a.args.is_empty() => {
            evaluated = Some(name.to_string());
            rows.extend(command_rows(p, name, m, file_path.as_deref()));
        }
        _ => {
            evaluated = None;
            rows.extend(configured_rows(p, file_path.as_deref()));
        }
    }
    let found = p.file.is_some();
    let looked = p.location.as_ref().map(|l| l.path.display().to_string());
    if a.json {
        let j = ConfigJson {
            file: looked,
            file_found: found,
            command: evaluated,
            settings: &rows,
        };
        outln!("{}", json::pretty(&j));
    } else {
        match (&looked, found) {
            (Some(path), true) => outln!("# Configuration file: {path}"),
            (Some(path), false) => outln!("# Configuration file: {path} (none there)"),
            (None, _) => {
                outln!("# No configuration file (neither XDG_CONFIG_HOME nor HOME is set)")
            }
        }
        print_rows(&rows, evaluated.is_some());
    }
    Ok(EXIT_OK)
}

/// The global options given on the outer command line (`strata --repo X config ...`), as
/// arguments for the evaluated one.
fn globals_given(cmd: &Command, m: &ArgMatches) -> Vec<OsString> {
    let mut out = Vec::new();
    for a in cmd.get_arguments().filter(|a| a.is_global_set()) {
        let (id, Some(long)) = (a.get_id().as_str(), a.get_long()) else {
            continue;
        };
        if m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        match a.get_action() {
            ArgAction::Count => {
                let n = m.try_get_one::<u8>(id).ok().flatten().copied().unwrap_or(0);
                out.extend((0..n).map(|_| OsString::from(format!("--{long}"))));
            }
            ArgAction::SetTrue | ArgAction::SetFalse => out.push(format!("--{long}").into()),
            _ => {
                for v in m.try_get_raw(id).ok().flatten().into_iter().flatten() {
                    let mut s = OsString::from(format!("--{long}="));
                    s.push(v);
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Options that are settings (what the file may set).
fn settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != "config"
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

fn global_rows(p: &Parsed, file: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = settings(&p.command)
        .filter(|a| a.is_global_set())
        .map(|a| row(p, None, a, &p.matches, file))
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// Every option of `name`, as the evaluated command line has it.
fn command_rows(p: &Parsed, name: &str, m: &ArgMatches, file: Option<&str>) -> Vec<Row> {
    let Some(sub) = p.command.find_subcommand(name) else {
        return Vec::new();
    };
    let mut rows: Vec<Row> = settings(sub)
        .filter(|a| !a.is_global_set())
        .map(|a| row(p, Some(name), a, m, file))
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// One option's value and origin from clap's matches.
fn row(p: &Parsed, command: Option<&str>, a: &Arg, m: &ArgMatches, file: Option<&str>) -> Row {
    let id = a.get_id().as_str();
    let long = a.get_long().unwrap_or(id);
    let from_file = p.origins.get(command, long);
    let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
    let origin = match m.value_source(id) {
        Some(ValueSource::CommandLine) => "flag".to_string(),
        Some(ValueSource::EnvVariable) => format!("env:{}", env.as_deref().unwrap_or("?")),
        Some(ValueSource::DefaultValue) => match (from_file, file) {
            (Some(_), Some(path)) => format!("file:{path}"),
            _ => "default".to_string(),
        },
        _ => "unset".to_string(),
    };
    let from_file = from_file.filter(|_| origin.starts_with("file:"));
    Row {
        command: command.map(str::to_string),
        source: from_file.and_then(source_of),
        key: long.to_string(),
        value: matched(a, m),
        origin,
        line: from_file.map(|o| o.line),
        env,
    }
}

fn source_of(o: &FileOrigin) -> Option<String> {
    match &o.table {
        Table::Source(s) => Some(s.clone()),
        _ => None,
    }
}

fn many(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
        || a.get_num_args().is_some_and(|r| r.max_values() > 1)
}

/// The value clap holds for option `a`.
fn matched(a: &Arg, m: &ArgMatches) -> Shown {
    let id = a.get_id().as_str();
    match a.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => m
            .try_get_one::<bool>(id)
            .ok()
            .flatten()
            .map_or(Shown::Unset, |b| Shown::Flag(*b)),
        ArgAction::Count => m
            .try_get_one::<u8>(id)
            .ok()
            .flatten()
            .map_or(Shown::Unset, |n| Shown::Count(*n as u64)),
        _ => {
            let Some(raw) = m.try_get_raw(id).ok().flatten() else {
                return Shown::Unset;
            };
            let v: Vec<String> = raw.map(|s| s.to_string_lossy().into_owned()).collect();
            if many(a) {
                Shown::List(v)
            } else {
                Shown::Text(v.concat())
            }
        }
    }
}

/// A file value, typed as option `a` takes it.
fn from_file(a: &Arg, v: &Value) -> Shown {
    let texts: Vec<String> = match v {
        Value::Scalar(s) => vec![s.text.clone()],
        Value::List(l) => l.iter().map(|s: &Scalar| s.text.clone()).collect(),
    };
    match a.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => Shown::Flag(texts.concat() == "true"),
        ArgAction::Count => Shown::Count(texts.concat().parse().unwrap_or(0)),
        _ if many(a) => Shown::List(texts),
        _ => Shown::Text(texts.concat()),
    }
}

/// What the file and the environment set for each command (no command line evaluated), and the
/// `[source."NAME"]` tables.
fn configured_rows(p: &Parsed, file: Option<&str>) -> Vec<Row> {
    let mut rows = Vec::new();
    // In the order of `strata --help` (applying the file reorders the parsed command's).
    let order = super::command();
    let commands = order
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .filter_map(|c| p.command.find_subcommand(c.get_name()));
    for c in commands {
        let name = c.get_name();
        let mut args: Vec<&Arg> = settings(c).filter(|a| !a.is_global_set()).collect();
        args.sort_by_key(|a| a.get_long());
        for a in args {
            let long = a.get_long().unwrap_or_default();
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            let env_value = a.get_env().and_then(std::env::var_os);
            let (value, origin, line) = match (env_value, p.origins.get(Some(name), long)) {
                (Some(v), _) => {
                    let v = v.to_string_lossy().into_owned();
                    let shown = match a.get_action() {
                        ArgAction::SetTrue | ArgAction::SetFalse => Shown::Flag(v == "true"),
                        _ if many(a) => Shown::List(vec![v]),
                        _ => Shown::Text(v),
                    };
                    let origin = format!("env:{}", env.as_deref().unwrap_or("?"));
                    (shown, origin, None)
                }
                (None, Some(o)) => (
                    from_file(a, &o.value),
                    format!("file:{}", file.unwrap_or("?")),
                    Some(o.line),
                ),
                (None, None) => continue,
            };
            rows.push(Row {
                command: Some(name.to_string()),
                source: None,
                key: long.to_string(),
                value,
                origin,
                line,
                env,
            });
        }
    }
    let Some(f) = &p.file else { return rows };
    let backup = p.command.find_subcommand(config::SOURCE_COMMAND);
    for s in &f.settings {
        let Table::Source(name) = &s.table else {
            continue;
        };
        let arg = backup.and_then(|b| settings(b).find(|a| a.get_long() == Some(&s.key)));
        rows.push(Row {
            command: Some(config::SOURCE_COMMAND.to_string()),
            source: Some(name.clone()),
            key: s.key.clone(),
            value: arg.map_or(Shown::Text(s.value.to_toml()), |a| from_file(a, &s.value)),
            origin: format!("file:{}", f.path.display()),
            line: Some(s.line),
            env: None,
        });
    }
    rows
}

/// The rows as TOML, grouped in tables, each value's origin in a comment. `evaluated`: the rows
/// of one command line, where values from a `[source]` table sit in the command's table (the
/// comment names the source table); otherwise they sit in their own `[source."NAME"]` tables.
fn print_rows(rows: &[Row], evaluated: bool) {
    fn table_of(r: &Row, evaluated: bool) -> (Option<&str>, Option<&str>) {
        match (&r.source, evaluated) {
            (Some(s), false) => (None, Some(s.as_str())),
            _ => (r.command.as_deref(), None),
        }
    }
    let width = rows
        .iter()
        .map(|r| assignment(r).len())
        .max()
        .unwrap_or(0)
        .min(48);
    let mut table = (None, None);
    for r in rows {
        let t = table_of(r, evaluated);
        if t != table {
            match t {
                (_, Some(s)) => outln!("\n[source.{}]", config::quote(s)),
                (Some(c), None) => outln!("\n[{c}]"),
                (None, None) => {}
            }
            table = t;
        }
        match r.value {
            Shown::Unset => outln!("{}", assignment(r)),
            _ => outln!("{:<width$}  # {}", assignment(r), comment(r, evaluated)),
        }
    }
}

fn assignment(r: &Row) -> String {
    let v = match &r.value {
        Shown::Flag(b) => b.to_string(),
        Shown::Count(n) => n.to_string(),
        Shown::Text(s) => config::quote(s),
        Shown::List(l) => {
            let items: Vec<String> = l.iter().map(|s| config::quote(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Shown::Unset => return format!("# {} (not set)", r.key),
    };
    format!("{} = {v}", r.key)
}

fn comment(r: &Row, evaluated: bool) -> String {
    let mut s = r.origin.clone();
    if let Some(l) = r.line {
        s.push_str(&format!(", line {l}"));
    }
    if let (Some(src), true) = (&r.source, evaluated) {
        s.push_str(&format!(", [source.{}]", config::quote(src)));
    }
    s
}
