//! Applying a [`ConfigFile`] to the clap command: each setting is matched to an option by long
//! name, its value checked with the option's own parser, and set as the option's default. Also
//! [`with_env`], which gives every option an environment variable.

use std::collections::HashMap;

use clap::{Arg, ArgAction, Command};

use super::{ConfigError, ConfigFile, Scalar, ScalarKind, Setting, Table, Value, SOURCE_COMMAND};

/// Where an option's default came from in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileOrigin {
    /// 1-based line of the setting.
    pub line: usize,
    /// The table it is in.
    pub table: Table,
    /// The value as written.
    pub value: Value,
}

/// Which options took their default from the file: by command (`None` for a global option) and
/// long name.
#[derive(Clone, Debug, Default)]
pub struct Origins(HashMap<(Option<String>, String), FileOrigin>);

impl Origins {
    /// The file setting behind option `long` of `command` (`None`: a global option), if any.
    pub fn get(&self, command: Option<&str>, long: &str) -> Option<&FileOrigin> {
        self.0.get(&(command.map(str::to_string), long.to_string()))
    }
}

/// The environment variable of an option: `STRATA_<LONG>` for a global option,
/// `STRATA_<COMMAND>_<LONG>` for a command's, upper case with `_` for `-`.
pub fn env_name(command: Option<&str>, long: &str) -> String {
    let mut s = String::from("STRATA_");
    if let Some(c) = command {
        s.push_str(c);
        s.push('_');
    }
    s.push_str(long);
    s.to_ascii_uppercase().replace('-', "_")
}

/// Options that are not settings: help and version, and `--config` itself.
fn is_setting(a: &Arg) -> bool {
    a.get_long().is_some()
        && a.get_id() != "config"
        && !matches!(
            a.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// Gives every option without one an environment variable ([`env_name`]), hidden from `--help`
/// (README.md documents the rule; `strata config` shows each name).
pub fn with_env(cmd: Command) -> Command {
    let ids = env_less(&cmd, None);
    let cmd = ids.into_iter().fold(cmd, |c, (id, env)| {
        c.mut_arg(id, |a| a.env(env).hide_env(true))
    });
    cmd.mut_subcommands(|sub| {
        let name = sub.get_name().to_string();
        env_less(&sub, Some(&name))
            .into_iter()
            .fold(sub, |c, (id, env)| {
                c.mut_arg(id, |a| a.env(env).hide_env(true))
            })
    })
}

fn env_less(cmd: &Command, name: Option<&str>) -> Vec<(clap::Id, String)> {
    cmd.get_arguments()
        .filter(|a| is_setting(a) && a.get_env().is_none())
        .filter_map(|a| Some((a.get_id().clone(), env_name(name, a.get_long()?))))
        .collect()
}

/// `cmd` with the settings of `file` as defaults: the top level and the command tables, then the
/// `[source."NAME"]` table named `source`, if given. Every setting of the file is checked, applied
/// or not, so that a mistake in any table is reported on any run.
pub fn apply(
    cmd: Command,
    file: &ConfigFile,
    source: Option<&str>,
) -> Result<(Command, Origins), ConfigError> {
    let mut built = cmd.clone();
    built.build();
    let mut resolved = Vec::new();
    for s in &file.settings {
        let err = |message: String| ConfigError::Setting {
            path: file.path.clone(),
            line: s.line,
            table: s.table.clone(),
            key: s.key.clone(),
            message,
        };
        let (command, arg) = resolve(&built, s).map_err(err)?;
        let values = values_for(arg, &s.value).map_err(err)?;
        resolved.push((s, command, arg.get_id().clone(), values));
    }
    let applies = |s: &Setting| match &s.table {
        Table::Source(name) => Some(name.as_str()) == source,
        _ => true,
    };
    // Source tables last: they override the command's table.
    resolved.sort_by_key(|(s, ..)| matches!(s.table, Table::Source(_)));
    let mut origins = Origins::default();
    let mut cmd = cmd;
    for (s, command, id, values) in resolved {
        if !applies(s) {
            continue;
        }
        let set = |a: Arg| a.default_values(values).required(false);
        cmd = match command {
            None => cmd.mut_arg(id, set),
            Some(c) => cmd.mut_subcommand(c, |sub| sub.mut_arg(id, set)),
        };
        let origin = FileOrigin {
            line: s.line,
            table: s.table.clone(),
            value: s.value.clone(),
        };
        origins
            .0
            .insert((command.map(str::to_string), s.key.clone()), origin);
    }
    Ok((cmd, origins))
}

/// The option a setting names, and the command it belongs to (`None`: a global option).
fn resolve<'c>(built: &'c Command, s: &Setting) -> Result<(Option<&'c str>, &'c Arg), String> {
    let key = s.key.as_str();
    if key == "config" {
        return Err("the configuration file cannot name another one".into());
    }
    let command = match &s.table {
        Table::Global => {
            if let Some(a) = option(built, key) {
                return Ok((None, a));
            }
            if commands(built).any(|c| c.get_name() == key) {
                return Err(format!(
                    "`{key}` is a command: its settings go in a [{key}] table"
                ));
            }
            if let Some(c) = commands(built).find(|c| own(c, key).is_some()) {
                return Err(format!(
                    "not a global option; it is an option of `strata {0}`: put it in [{0}]",
                    c.get_name()
                ));
            }
            return Err(format!(
                "unknown global option (global options: {})",
                names(built.get_arguments().filter(|a| is_setting(a)))
            ));
        }
        Table::Command(name) => name.as_str(),
        Table::Source(_) => {
            if key == "source-name" {
                return Err(
                    "a [source] table is chosen by the source's name; it cannot set it".into(),
                );
            }
            SOURCE_COMMAND
        }
    };
    let Some(sub) = commands(built).find(|c| c.get_name() == command) else {
        let all: Vec<&str> = commands(built).map(|c| c.get_name()).collect();
        return Err(format!(
            "unknown command [{command}] (commands: {})",
            all.join(", ")
        ));
    };
    if let Some(a) = own(sub, key) {
        return Ok((Some(sub.get_name()), a));
    }
    if option(built, key).is_some() {
        return Err("a global option: set it at the top of the file, before any table".into());
    }
    Err(format!(
        "`strata {command}` has no option --{key} (its options: {})",
        names(
            sub.get_arguments()
                .filter(|a| is_setting(a) && !a.is_global_set())
        )
    ))
}

/// The commands a file may have a table for.
fn commands(built: &Command) -> impl Iterator<Item = &Command> {
    built
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
}

/// A global option by long name.
fn option<'c>(cmd: &'c Command, long: &str) -> Option<&'c Arg> {
    cmd.get_arguments()
        .find(|a| is_setting(a) && a.get_long() == Some(long))
}

/// A command's own (not global) option by long name.
fn own<'c>(cmd: &'c Command, long: &str) -> Option<&'c Arg> {
    option(cmd, long).filter(|a| !a.is_global_set())
}

fn names<'a>(args: impl Iterator<Item = &'a Arg>) -> String {
    let v: Vec<&str> = args.filter_map(Arg::get_long).collect();
    v.join(", ")
}

/// The option arguments that stand for `value`, checked with the option's parser.
fn values_for(arg: &Arg, value: &Value) -> Result<Vec<String>, String> {
    let scalars = match value {
        Value::Scalar(s) => std::slice::from_ref(s),
        Value::List(l) => l.as_slice(),
    };
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Boolean,
                text,
            }) => Ok(vec![text.clone()]),
            _ => Err("expected true or false".into()),
        },
        ArgAction::Count => match value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Integer,
                text,
            }) => {
                text.parse::<u8>()
                    .map_err(|_| "expected a count from 0 to 255".to_string())?;
                Ok(vec![text.clone()])
            }
            _ => Err("expected a number (how many times the flag is given)".into()),
        },
        action => {
            let many = matches!(action, ArgAction::Append)
                || arg.get_num_args().is_some_and(|r| r.max_values() > 1);
            if matches!(value, Value::List(_)) && !many {
                return Err("takes one value, not a list".into());
            }
            let texts: Vec<String> = scalars.iter().map(|s| s.text.clone()).collect();
            check_values(arg, &texts)?;
            Ok(texts)
        }
    }
}

/// Runs the option's own value parser over `values`, as clap will when it uses them.
fn check_values(arg: &Arg, values: &[String]) -> Result<(), String> {
    let long = arg.get_long().unwrap_or("value");
    let mut probe = Arg::new("probe")
        .long(long.to_string())
        .action(ArgAction::Append)
        .value_parser(arg.get_value_parser().clone());
    if let Some(names) = arg.get_value_names() {
        probe = probe.value_names(names.to_vec());
    }
    let argv =
        std::iter::once("strata".to_string()).chain(values.iter().map(|v| format!("--{long}={v}")));
    match Command::new("strata").arg(probe).try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        // clap's message without its usage and help hints, on one line.
        Err(e) => {
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .collect();
            let msg = lines.join(" ");
            Err(msg.strip_prefix("error: ").unwrap_or(&msg).to_string())
        }
    }
}
