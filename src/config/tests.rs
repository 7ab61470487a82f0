//! Unit tests of the configuration file: its shape, the checks against a clap command, and the
//! precedence the defaults give (the real CLI's is tested end to end in tests/integration).

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, Command};

use super::*;

fn settings(text: &str) -> Result<Vec<Setting>, ConfigError> {
    file::parse(Path::new("/etc/strata.toml"), text)
}

fn file(text: &str) -> ConfigFile {
    ConfigFile {
        path: "/etc/strata.toml".into(),
        settings: settings(text).unwrap(),
    }
}

/// A small command shaped like strata's; `tag` names its environment variables, so that tests
/// running at once do not share them.
fn cli(tag: &str) -> Command {
    Command::new("strata")
        .arg(
            Arg::new("repo")
                .long("repo")
                .global(true)
                .env(format!("T_{tag}_REPO")),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .global(true)
                .action(ArgAction::Count),
        )
        .subcommand(
            Command::new("backup")
                .arg(Arg::new("source").required(true))
                .arg(
                    Arg::new("excludes")
                        .long("exclude")
                        .action(ArgAction::Append)
                        .env(format!("T_{tag}_EXCLUDE")),
                )
                .arg(Arg::new("rehash").long("rehash").action(ArgAction::SetTrue))
                .arg(Arg::new("source_name").long("source-name"))
                .arg(
                    Arg::new("threads")
                        .long("threads")
                        .value_parser(clap::value_parser!(u32).range(1..=64)),
                ),
        )
        .subcommand(Command::new("init").arg(Arg::new("target").long("target").required(true)))
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

fn matches(cmd: Command, a: &[&str]) -> clap::ArgMatches {
    cmd.try_get_matches_from(a).unwrap()
}

#[test]
fn settings_keep_file_order_tables_and_lines() {
    let s = settings(
        "# comment\nrepo = \"/r\"\nverbose = 2\n\n[backup]\nexclude = [\"*.tmp\", 'x']\n\
         rehash = true\nthreads = 0x10\n[source.\"/srv/shop\"]\nexclude = \"a\"\n",
    )
    .unwrap();
    let got: Vec<(Table, &str, String, usize)> = s
        .iter()
        .map(|s| (s.table.clone(), s.key.as_str(), s.value.to_toml(), s.line))
        .collect();
    let backup = Table::Command("backup".into());
    let shop = Table::Source("/srv/shop".into());
    assert_eq!(
        got,
        [
            (Table::Global, "repo", "\"/r\"".into(), 2),
            (Table::Global, "verbose", "2".into(), 3),
            (backup.clone(), "exclude", "[\"*.tmp\", \"x\"]".into(), 6),
            (backup.clone(), "rehash", "true".into(), 7),
            (backup, "threads", "16".into(), 8),
            (shop, "exclude", "\"a\"".into(), 10),
        ]
    );
}

#[test]
fn malformed_files_name_the_line() {
    let msg = |t: &str| settings(t).unwrap_err().to_string();
    assert!(msg("repo = \"/r\"\nrepo = 1\n").starts_with("/etc/strata.toml:2: "));
    assert!(msg("[backup]\nx = [[1]]\n").contains(":2: [backup] x: lists cannot be nested"));
    assert!(msg("[backup.x]\ny = 1\n").contains(":1: [backup] holds option settings"));
    assert!(msg("[source]\nx = 1\n").contains(":2: a source's settings are a table"));
    assert!(msg("[backup]\nx = { a = 1 }\n").contains(":2: [backup] holds option settings"));
}

#[test]
fn file_values_are_defaults_that_environment_and_flags_beat() {
    let f = file("repo = \"/file\"\n[backup]\nexclude = [\"f1\", \"f2\"]\nrehash = true\n");
    let (cmd, origins) = apply(cli("A"), &f, None).unwrap();
    let m = matches(cmd.clone(), &["strata", "backup", "/src"]);
    assert_eq!(m.get_one::<String>("repo").unwrap(), "/file");
    let b = m.subcommand_matches("backup").unwrap();
    let ex: Vec<&String> = b.get_many("excludes").unwrap().collect();
    assert_eq!(ex, ["f1", "f2"]);
    assert!(b.get_flag("rehash"));
    assert_eq!(
        b.value_source("excludes"),
        Some(clap::parser::ValueSource::DefaultValue)
    );
    assert_eq!(origins.get(Some("backup"), "exclude").unwrap().line, 3);
    assert_eq!(origins.get(None, "repo").unwrap().line, 1);
    assert!(origins.get(Some("backup"), "threads").is_none());

    // The environment beats the file (clap reads it when the command is built).
    std::env::set_var("T_A_EXCLUDE", "env");
    let (cmd, _) = apply(cli("A"), &f, None).unwrap();
    let m = matches(cmd.clone(), &["strata", "backup", "/src"]);
    let b = m.subcommand_matches("backup").unwrap();
    let ex: Vec<&String> = b.get_many("excludes").unwrap().collect();
    assert_eq!(ex, ["env"]);
    // The flag beats the environment (and replaces the whole list).
    let m = matches(cmd, &["strata", "backup", "/src", "--exclude", "flag"]);
    let b = m.subcommand_matches("backup").unwrap();
    let ex: Vec<&String> = b.get_many("excludes").unwrap().collect();
    assert_eq!(ex, ["flag"]);
    std::env::remove_var("T_A_EXCLUDE");
}

#[test]
fn a_source_table_applies_over_the_command_table_for_its_source_only() {
    let f = file(
        "[backup]\nexclude = [\"all\"]\nthreads = 4\n[source.\"shop\"]\nexclude = [\"shop\"]\n\
         [source.\"other\"]\nthreads = 9\n",
    );
    let pick = |source: Option<&str>| {
        let (cmd, origins) = apply(cli("B"), &f, source).unwrap();
        let m = matches(cmd, &["strata", "backup", "/src"]);
        let b = m.subcommand_matches("backup").unwrap().clone();
        let ex: Vec<String> = b.get_many::<String>("excludes").unwrap().cloned().collect();
        let threads = *b.get_one::<u32>("threads").unwrap();
        let from = origins
            .get(Some("backup"), "exclude")
            .unwrap()
            .table
            .clone();
        (ex, threads, from)
    };
    assert_eq!(
        pick(None),
        (vec!["all".to_string()], 4, Table::Command("backup".into()))
    );
    assert_eq!(
        pick(Some("shop")),
        (vec!["shop".to_string()], 4, Table::Source("shop".into()))
    );
    assert_eq!(pick(Some("other")).1, 9);
}

#[test]
fn parse_chooses_the_source_table_from_the_parsed_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[source.\"shop\"]\nrehash = true\n").unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "strata",
            "--config",
            path.to_str().unwrap(),
            "backup",
            "/src",
        ];
        a.extend_from_slice(extra);
        let name = |m: &clap::ArgMatches| m.get_one::<String>("source_name").cloned();
        let cmd = cli("C").arg(Arg::new("config").long("config").global(true));
        let p = parse(cmd, &args(&a), name).map_err(|_| "parse").unwrap();
        let b = p.matches.subcommand_matches("backup").unwrap().clone();
        b.get_flag("rehash")
    };
    assert!(run(&["--source-name", "shop"]));
    assert!(!run(&["--source-name", "else"]));
    assert!(!run(&[]));
}

#[test]
fn a_default_satisfies_a_required_option() {
    let f = file("[init]\ntarget = \"/t\"\n");
    let (cmd, _) = apply(cli("D"), &f, None).unwrap();
    let m = matches(cmd, &["strata", "init"]);
    let i = m.subcommand_matches("init").unwrap();
    assert_eq!(i.get_one::<String>("target").unwrap(), "/t");
}

#[test]
fn counts_flags_and_parsed_values_are_checked() {
    let err = |t: &str| apply(cli("E"), &file(t), None).unwrap_err().to_string();
    assert!(err("verbose = \"2\"\n").contains("verbose: expected a number"));
    assert!(err("verbose = 300\n").contains("verbose: expected a count"));
    assert!(err("[backup]\nrehash = 1\n").contains("rehash: expected true or false"));
    let e = err("[backup]\nthreads = 0\n");
    assert!(
        e.contains(":2: [backup] threads: invalid value '0' for '--threads"),
        "{e}"
    );
    assert!(err("[backup]\nthreads = [1]\n").contains("takes one value, not a list"));
    assert!(err("[backup]\nsource = \"/x\"\n").contains("has no option --source"));
    assert!(err("[nope]\nx = 1\n").contains("unknown command [nope] (commands: backup, init)"));
    assert!(err("[source.\"s\"]\nsource-name = \"t\"\n").contains("cannot set it"));
    assert!(err("config = \"/x\"\n").contains("cannot name another one"));
    // A mistake in a source table that does not apply is still reported.
    assert!(err("[source.\"unused\"]\nthreads = 99\n").contains("invalid value '99'"));
    let (cmd, _) = apply(cli("E"), &file("verbose = 2\n"), None).unwrap();
    let m = matches(cmd, &["strata", "init", "--target", "t"]);
    assert_eq!(m.get_count("verbose"), 2);
}

#[test]
fn every_option_gets_an_environment_variable() {
    let cmd = with_env(
        Command::new("strata")
            .arg(Arg::new("repo").long("repo").global(true))
            .subcommand(
                Command::new("backup")
                    .arg(
                        Arg::new("excludes")
                            .long("exclude")
                            .action(ArgAction::Append),
                    )
                    .arg(Arg::new("source").required(true)),
            ),
    );
    assert_eq!(env_name(None, "repo"), "STRATA_REPO");
    assert_eq!(
        env_name(Some("prune"), "repack-threshold"),
        "STRATA_PRUNE_REPACK_THRESHOLD"
    );
    let env = |c: &Command, id: &str| {
        c.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
    };
    assert_eq!(env(&cmd, "repo").as_deref(), Some("STRATA_REPO"));
    let b = cmd.find_subcommand("backup").unwrap();
    assert_eq!(env(b, "excludes").as_deref(), Some("STRATA_BACKUP_EXCLUDE"));
    assert_eq!(env(b, "source"), None, "positional arguments have none");
}

/// A value each option of the real CLI accepts, from a few candidates.
fn accepted(sub: &str, a: &Arg) -> Option<Value> {
    let long = a.get_long()?;
    let mut candidates: Vec<&str> = vec!["1", "x", "1d", "2026-01-01", "x=1d", "65536"];
    let possible: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_string())
        .collect();
    candidates.splice(0..0, possible.iter().map(String::as_str));
    let scalar = |text: &str, kind| Scalar {
        text: text.into(),
        kind,
    };
    let all = match a.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            vec![Value::Scalar(scalar("true", ScalarKind::Boolean))]
        }
        ArgAction::Count => vec![Value::Scalar(scalar("1", ScalarKind::Integer))],
        _ => candidates
            .iter()
            .map(|c| Value::Scalar(scalar(c, ScalarKind::String)))
            .collect(),
    };
    all.into_iter().find(|v| {
        let f = ConfigFile {
            path: "/c".into(),
            settings: vec![Setting {
                table: Table::Command(sub.into()),
                key: long.into(),
                value: v.clone(),
                line: 1,
            }],
        };
        apply(crate::cli::command(), &f, None).is_ok()
    })
}

#[test]
fn every_option_of_every_command_can_be_set_in_the_file() {
    let mut built = crate::cli::command();
    built.build();
    let mut settings = Vec::new();
    for sub in built
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        for a in sub.get_arguments() {
            let skip = a.get_long().is_none()
                || a.is_global_set()
                || matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong);
            if skip {
                continue;
            }
            let value = accepted(sub.get_name(), a).unwrap_or_else(|| {
                panic!(
                    "no test value for `strata {} --{:?}`",
                    sub.get_name(),
                    a.get_long()
                )
            });
            settings.push(Setting {
                table: Table::Command(sub.get_name().into()),
                key: a.get_long().unwrap().into(),
                value,
                line: settings.len() + 1,
            });
        }
    }
    assert!(settings.len() > 40, "{}", settings.len());
    let f = ConfigFile {
        path: "/c".into(),
        settings,
    };
    // All at once, and clap's own checks of the command (debug builds) still pass.
    let (mut cmd, origins) = apply(crate::cli::command(), &f, None).unwrap();
    cmd.build();
    assert!(origins.get(Some("backup"), "exclude").is_some());
}

#[test]
fn a_default_file_that_cannot_be_seen_is_no_file_but_a_named_one_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &Path, named| Location {
        path: p.to_path_buf(),
        named,
    };
    let missing = dir.path().join("strata/config.toml");
    assert!(load(&at(&missing, false)).unwrap().is_none());
    assert!(matches!(
        load(&at(&missing, true)),
        Err(ConfigError::Read { .. })
    ));
    // A path through a regular file: nothing can be there.
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    assert!(load(&at(&file.join("config.toml"), false))
        .unwrap()
        .is_none());
    let f = load(&at(&file, false)).unwrap().unwrap();
    assert!(f.settings.is_empty());
}
