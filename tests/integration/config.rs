//! The configuration file: precedence (built-in default < file < environment < flag) for each kind
//! of setting — a global option (`repo`), a command's options (`backup --exclude`, `init
//! --compression`), a per-source table — checked both by what the commands do and by what
//! `strata config` reports; and errors that name the file, the line and the key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::bin;

/// A temporary home: the configuration directory, and room for repositories and sources.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(config: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("xdg/strata")).unwrap();
        let config = config.replace("@", dir.path().to_str().unwrap());
        fs::write(dir.path().join("xdg/strata/config.toml"), config).unwrap();
        Home { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `strata ARGS...` with this home's configuration and `env`; no STRATA_* variable of the
    /// caller's environment leaks in.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.args(args).env("XDG_CONFIG_HOME", self.path("xdg"));
        for (k, _) in std::env::vars() {
            if k.starts_with("STRATA_") && !k.starts_with("STRATA_TEST_") {
                c.env_remove(k);
            }
        }
        c.envs(env.iter().copied()).output().unwrap()
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `strata config --json ARGS...`: the settings, by (command, key).
    fn report(&self, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        let mut a = vec!["config", "--json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.ok(&a, env).stdout).unwrap()
    }
}

/// The (value, origin) `strata config --json` reports for `key` of `command` (`None`: global).
fn setting(
    report: &serde_json::Value,
    command: Option<&str>,
    key: &str,
) -> (serde_json::Value, String) {
    let s = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key && s["command"].as_str() == command)
        .unwrap_or_else(|| panic!("no setting {command:?} {key} in {report}"));
    (
        s["value"].clone(),
        s["origin"].as_str().unwrap().to_string(),
    )
}

fn file_origin(home: &Home) -> String {
    format!("file:{}", home.path("xdg/strata/config.toml").display())
}

#[test]
fn global_repo_file_then_environment_then_flag() {
    let home = Home::new("repo = \"@/file-repo\"\n");
    let env_repo = home.path("env-repo");
    let flag_repo = home.path("flag-repo");
    let env = [("STRATA_REPO", env_repo.to_str().unwrap())];

    home.ok(&["init"], &[]);
    assert!(home.path("file-repo").is_dir(), "the file's repository");
    home.ok(&["init"], &env);
    assert!(env_repo.is_dir(), "the environment beats the file");
    home.ok(&["init", "--repo", flag_repo.to_str().unwrap()], &env);
    assert!(flag_repo.is_dir(), "the flag beats the environment");

    let r = home.report(&[], &[]);
    let want = home.path("file-repo").display().to_string();
    assert_eq!(setting(&r, None, "repo"), (want.into(), file_origin(&home)));
    let r = home.report(&[], &env);
    assert_eq!(
        setting(&r, None, "repo"),
        (
            env_repo.display().to_string().into(),
            "env:STRATA_REPO".into()
        )
    );
    let r = home.report(&["--repo", flag_repo.to_str().unwrap()], &env);
    assert_eq!(
        setting(&r, None, "repo"),
        (flag_repo.display().to_string().into(), "flag".into())
    );
    // And without the file, the built-in default.
    let bare = Home::new("");
    let r = bare.report(&[], &[]);
    assert_eq!(setting(&r, None, "repo").1, "unset");
    assert_eq!(
        setting(&r, None, "progress"),
        ("auto".into(), "default".into())
    );
}

/// A source with one file of each extension the tests exclude.
fn source(home: &Home, name: &str) -> PathBuf {
    let src = home.path(name);
    fs::create_dir_all(&src).unwrap();
    for f in ["a.tmp", "b.log", "c.dat", "d.txt"] {
        fs::write(src.join(f), f).unwrap();
    }
    src
}

/// The file names of the newest snapshot of `src`.
fn backed_up(home: &Home, repo: &Path, src: &Path) -> Vec<String> {
    let r = repo.to_str().unwrap();
    let s = src.to_str().unwrap();
    let out = home.ok(&["--repo", r, "ls", "latest", "--source", s, "--json"], &[]);
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn command_option_file_then_environment_then_flag() {
    let home = Home::new("repo = \"@/repo\"\n[backup]\nexclude = [\"*.tmp\", \"*.log\"]\n");
    let repo = home.path("repo");
    let src = source(&home, "src");
    let s = src.to_str().unwrap();
    home.ok(&["init"], &[]);
    let env = [("STRATA_BACKUP_EXCLUDE", "*.dat")];

    home.ok(&["backup", s], &[]);
    assert_eq!(backed_up(&home, &repo, &src), ["c.dat", "d.txt"]);
    home.ok(&["backup", s], &env);
    assert_eq!(backed_up(&home, &repo, &src), ["a.tmp", "b.log", "d.txt"]);
    home.ok(&["backup", s, "--exclude", "*.txt"], &env);
    assert_eq!(backed_up(&home, &repo, &src), ["a.tmp", "b.log", "c.dat"]);

    let r = home.report(&["backup", s], &[]);
    assert_eq!(
        setting(&r, Some("backup"), "exclude"),
        (serde_json::json!(["*.tmp", "*.log"]), file_origin(&home))
    );
    let r = home.report(&["backup", s], &env);
    assert_eq!(
        setting(&r, Some("backup"), "exclude"),
        (
            serde_json::json!(["*.dat"]),
            "env:STRATA_BACKUP_EXCLUDE".into()
        )
    );
    let r = home.report(&["backup", s, "--exclude", "*.txt"], &env);
    assert_eq!(
        setting(&r, Some("backup"), "exclude"),
        (serde_json::json!(["*.txt"]), "flag".into())
    );
    let r = home.report(&["backup", s], &[]);
    assert_eq!(
        setting(&r, Some("backup"), "rehash"),
        (false.into(), "default".into())
    );
}

/// Compressible text that does not deduplicate.
fn text(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("order line {i:08}\n").into_bytes())
        .collect()
}

/// The bytes stored for a backup of `src` into a new repository made by `init ARGS` (with `env`).
fn stored_after_init(
    home: &Home,
    repo: &str,
    init: &[&str],
    env: &[(&str, &str)],
    src: &Path,
) -> u64 {
    let mut args = vec!["--repo", repo, "init"];
    args.extend_from_slice(init);
    home.ok(&args, env);
    let out = home.ok(
        &["--repo", repo, "backup", "--json", src.to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stats"]["stored_bytes"].as_u64().unwrap()
}

#[test]
fn numeric_option_file_then_environment_then_flag() {
    let home = Home::new("[init]\ncompression = 0\n");
    let src = home.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("orders.txt"), text(60_000)).unwrap();
    let raw = 60_000 * 20;
    let r1 = home.path("r1");
    let stored = stored_after_init(&home, r1.to_str().unwrap(), &[], &[], &src);
    assert!(
        stored >= raw,
        "compression 0 from the file stores raw: {stored}"
    );
    let env = [("STRATA_INIT_COMPRESSION", "3")];
    let r2 = home.path("r2");
    let stored = stored_after_init(&home, r2.to_str().unwrap(), &[], &env, &src);
    assert!(
        stored < raw / 4,
        "the environment's level 3 compresses: {stored}"
    );
    let r3 = home.path("r3");
    let stored = stored_after_init(
        &home,
        r3.to_str().unwrap(),
        &["--compression", "0"],
        &env,
        &src,
    );
    assert!(
        stored >= raw,
        "the flag's 0 beats the environment: {stored}"
    );

    let r = home.report(&["init"], &[]);
    assert_eq!(
        setting(&r, Some("init"), "compression"),
        ("0".into(), file_origin(&home))
    );
    let r = home.report(&["init"], &env);
    assert_eq!(
        setting(&r, Some("init"), "compression"),
        ("3".into(), "env:STRATA_INIT_COMPRESSION".into())
    );
    let r = home.report(&["init", "--compression", "9"], &env);
    assert_eq!(
        setting(&r, Some("init"), "compression"),
        ("9".into(), "flag".into())
    );
}

#[test]
fn source_table_over_command_table_then_environment_then_flag() {
    let home = Home::new(
        "repo = \"@/repo\"\n\
         [backup]\n\
         exclude = [\"*.tmp\"]\n\
         tag = [\"nightly\"]\n\
         [source.\"shop\"]\n\
         exclude = [\"*.log\"]\n\
         [source.\"@/other\"]\n\
         tag = [\"other\"]\n",
    );
    let repo = home.path("repo");
    home.ok(&["init"], &[]);
    let shop = source(&home, "shop-dir");
    let other = source(&home, "other");
    let s = shop.to_str().unwrap();

    // The table of the source named "shop" replaces [backup]'s excludes; [backup]'s tag stays.
    let out = home.ok(&["backup", "--json", "--source-name", "shop", s], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["nightly"]));
    assert_eq!(
        backed_up(&home, &repo, Path::new("shop")),
        ["a.tmp", "c.dat", "d.txt"]
    );
    // Another source gets [backup] and its own table (named by its absolute path).
    let out = home.ok(&["backup", "--json", other.to_str().unwrap()], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["other"]));
    assert_eq!(backed_up(&home, &repo, &other), ["b.log", "c.dat", "d.txt"]);
    // The environment beats the source table, the flag the environment.
    let env = [("STRATA_BACKUP_EXCLUDE", "*.dat")];
    home.ok(&["backup", "--source-name", "shop", s], &env);
    assert_eq!(
        backed_up(&home, &repo, Path::new("shop")),
        ["a.tmp", "b.log", "d.txt"]
    );
    home.ok(
        &["backup", "--source-name", "shop", s, "--exclude", "*.txt"],
        &env,
    );
    assert_eq!(
        backed_up(&home, &repo, Path::new("shop")),
        ["a.tmp", "b.log", "c.dat"]
    );

    let r = home.report(&["backup", "--source-name", "shop", s], &[]);
    assert_eq!(
        setting(&r, Some("backup"), "exclude"),
        (serde_json::json!(["*.log"]), file_origin(&home))
    );
    let row = r["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "exclude")
        .unwrap();
    assert_eq!(
        (row["source"].as_str(), row["line"].as_u64()),
        (Some("shop"), Some(6))
    );
    let r = home.report(&["backup", "--source-name", "shop", s], &env);
    assert_eq!(
        setting(&r, Some("backup"), "exclude").1,
        "env:STRATA_BACKUP_EXCLUDE"
    );
    let r = home.report(
        &["backup", "--source-name", "shop", s, "--exclude", "x"],
        &env,
    );
    assert_eq!(setting(&r, Some("backup"), "exclude").1, "flag");
}

#[test]
fn config_without_a_command_lists_what_the_file_and_environment_set() {
    let home = Home::new(
        "repo = \"/backup/shop\"\n\n[backup]\nexclude = [\"*.tmp\"]\nrehash = true\n\n\
         [source.\"shop\"]\ntag = [\"shop\"]\n",
    );
    let env = [("STRATA_PRUNE_REPACK_THRESHOLD", "50")];
    let out = home.ok(&["config"], &env);
    let text = String::from_utf8(out.stdout).unwrap();
    let file = home.path("xdg/strata/config.toml").display().to_string();
    assert!(
        text.starts_with(&format!("# Configuration file: {file}\n")),
        "{text}"
    );
    let line = |key: &str, origin: &str| {
        text.lines()
            .any(|l| l.starts_with(key) && l.ends_with(origin))
    };
    assert!(
        line("repo = \"/backup/shop\"", &format!("# file:{file}, line 1")),
        "{text}"
    );
    assert!(
        line("exclude = [\"*.tmp\"]", &format!("# file:{file}, line 4")),
        "{text}"
    );
    assert!(
        line("rehash = true", &format!("# file:{file}, line 5")),
        "{text}"
    );
    assert!(
        line(
            "repack-threshold = \"50\"",
            "# env:STRATA_PRUNE_REPACK_THRESHOLD"
        ),
        "{text}"
    );
    assert!(
        line("tag = [\"shop\"]", &format!("# file:{file}, line 8")),
        "{text}"
    );
    assert!(line("progress = \"auto\"", "# default"), "{text}");
    let tables: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(tables, ["[backup]", "[prune]", "[source.\"shop\"]"]);
    let r = home.report(&[], &env);
    assert_eq!(r["file_found"], true);
    let shop = r["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "shop")
        .unwrap();
    assert_eq!(shop["key"], "tag");
    assert_eq!(shop["value"], serde_json::json!(["shop"]));
    assert_eq!(shop["line"], 8);
    // No file at the default place: not an error.
    let none = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["config", "--json"])
        .env("XDG_CONFIG_HOME", none.path())
        .env_remove("STRATA_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file_found"], false);
}

#[test]
fn config_flag_and_variable_name_the_file() {
    let home = Home::new("repo = \"/from/default\"\n");
    let other = home.path("other.toml");
    fs::write(&other, "repo = \"/from/other\"\n").unwrap();
    let o = other.to_str().unwrap();
    let r = home.report(&["--config", o], &[]);
    assert_eq!(setting(&r, None, "repo").0, "/from/other");
    let r = home.report(&[], &[("STRATA_CONFIG", o)]);
    assert_eq!(setting(&r, None, "repo").0, "/from/other");
    let r = home.report(&[&format!("--config={o}")], &[]);
    assert_eq!(r["file"], o);
    // A named file must exist.
    let out = home.run(&["--config", "/nonexistent/strata.toml", "snapshots"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/strata.toml"), "{err}");
}

#[test]
fn mistakes_name_the_file_line_and_key_and_exit_2() {
    let cases: &[(&str, &str)] = &[
        (
            "repo = \"/r\"\nbogus = 1\n",
            ":2: bogus: unknown global option",
        ),
        (
            "\n[bakup]\nexclude = \"x\"\n",
            ":3: [bakup] exclude: unknown command [bakup]",
        ),
        (
            "[backup]\ncompression = 3\n",
            ":2: [backup] compression: `strata backup` has no option --compression",
        ),
        (
            "[init]\n\ncompression = \"abc\"\n",
            ":3: [init] compression: invalid value 'abc'",
        ),
        (
            "[init]\ncompression = 99\n",
            ":2: [init] compression: invalid value '99'",
        ),
        (
            "[backup]\nrehash = \"yes\"\n",
            ":2: [backup] rehash: expected true or false",
        ),
        (
            "[backup]\nthreads = [1, 2]\n",
            ":2: [backup] threads: takes one value, not a list",
        ),
        (
            "exclude = [\"x\"]\n",
            ":1: exclude: not a global option; it is an option of `strata backup`",
        ),
        (
            "[backup]\nrepo = \"/r\"\n",
            ":2: [backup] repo: a global option",
        ),
        (
            "[source.\"s\"]\nsource-name = \"t\"\n",
            ":2: [source.\"s\"] source-name:",
        ),
        (
            "[source.\"s\"]\nbogus = 1\n",
            ":2: [source.\"s\"] bogus: `strata backup` has no option --bogus",
        ),
        ("repo = \n", ":1: "),
    ];
    for (text, want) in cases {
        let home = Home::new(text);
        let out = home.run(&["snapshots"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        let file = home.path("xdg/strata/config.toml").display().to_string();
        assert!(
            err.starts_with(&format!("strata: {file}{want}")),
            "{text:?}: want {want:?}, got {err}"
        );
    }
}
