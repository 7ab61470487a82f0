//! Monitoring: the `--metrics-file` of backup, check, forget, prune and restore, and the mount's
//! `.strata/stats`, each parsed by real Prometheus parsers (`promtool check metrics` and the
//! Python client's parser, both from Debian packages that `.ci/run` installs: a missing parser
//! fails the test, it never skips); `check --nagios` exit codes and lines for a fresh, a stale
//! (backdated clock), a damaged, a missing and a locked repository.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::mount::{fuse_available, run, with_timeout, Mount};
use crate::common::{bin, new_repo, pseudo_random, strata, strata_ok};

/// One sample as the Python parser reads it: family, type, sample name, labels, value.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct Parsed(String, String, String, BTreeMap<String, String>, f64);

impl Parsed {
    /// Its family's name and type, as the parser understood them.
    fn family(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

fn python() -> &'static str {
    // Debian's python3-prometheus-client is installed for the system interpreter, which a
    // python3 earlier on PATH (pyenv, a venv) may not see.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn pipe(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}); .ci/run installs it"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

const PY_PARSE: &str = "
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
";

/// Parses `text` with `promtool check metrics` (which also lints the names) and with
/// `prometheus_client`; both must accept it. Returns the Python parser's samples.
pub(super) fn parse_prometheus(text: &[u8]) -> Vec<Parsed> {
    let out = pipe(Command::new("promtool").args(["check", "metrics"]), text);
    assert!(
        out.status.success(),
        "promtool check metrics rejects the file: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    let out = pipe(Command::new(python()).args(["-c", PY_PARSE]), text);
    assert!(
        out.status.success(),
        "prometheus_client rejects the file: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of sample `name` whose labels are exactly `labels`.
pub(super) fn value(samples: &[Parsed], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.2 == name && s.3 == want)
        .map(|s| s.4)
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).unwrap().to_string_lossy().into_owned()
}

/// Holds the repository's process lock (as a running strata would) until dropped.
fn hold_lock(repo: &Path) -> fs::File {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(repo.join("lock"))
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    f
}

/// The metrics families a run of each command writes (README, "Monitoring").
const RUN_FAMILIES: &[&str] = &[
    "strata_last_run_timestamp_seconds",
    "strata_last_success_timestamp_seconds",
    "strata_last_run_success",
    "strata_last_run_duration_seconds",
    "strata_last_run_warnings",
    "strata_last_run_errors",
    "strata_runs_total",
];

#[test]
fn metrics_files_parse_merge_and_record_failures() {
    let (t, repo) = new_repo();
    let shop = t.path().join("shop");
    let db = t.path().join("db");
    for (dir, seed) in [(&shop, 1), (&db, 2)] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("a.bin"), pseudo_random(300_000, seed)).unwrap();
        fs::write(dir.join("b.txt"), b"hello\n").unwrap();
    }
    let mdir = t.path().join("textfile");
    fs::create_dir(&mdir).unwrap();
    let m = mdir.join("host.prom");
    let ms = m.to_str().unwrap();
    let run_ok = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--metrics-file", ms]);
        strata_ok(&repo, &a)
    };
    // What the backups of shop read, by their own account (a file written within a timestamp
    // tick of a backup is read again by the next one, so it depends on timing).
    let mut shop_read = (0.0, 0.0);
    let mut backup = |dir: &Path| {
        let out = run_ok(&["backup", "--json", dir.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if dir == shop {
            shop_read.0 += v["stats"]["files_read"].as_f64().unwrap();
            shop_read.1 += v["stats"]["read_bytes"].as_f64().unwrap();
        }
    };
    backup(&shop);
    backup(&db);
    run_ok(&["check", "--read-data"]);
    fs::write(shop.join("c.bin"), pseudo_random(100_000, 3)).unwrap();
    backup(&shop);
    run_ok(&["forget", "--keep-last", "1"]);
    run_ok(&["prune"]);
    let target = t.path().join("restored");
    let (shop_src, db_src) = (canonical(&shop), canonical(&db));
    run_ok(&[
        "restore",
        "latest",
        "--source",
        &shop_src,
        "--target",
        target.to_str().unwrap(),
    ]);
    // A backup that fails: its source is gone.
    let gone = t.path().join("gone");
    let out = strata(
        &repo,
        &["backup", "--metrics-file", ms, gone.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));

    let s = parse_prometheus(&fs::read(&m).unwrap());
    for p in &s {
        let (fam, kind) = p.family();
        assert!(fam.starts_with("strata_"), "{p:?}");
        assert_eq!(kind == "counter", p.2.ends_with("_total"), "{p:?}");
    }
    for cmd in ["backup", "check", "forget", "prune", "restore"] {
        let labels: &[(&str, &str)] = if cmd == "backup" {
            &[("command", cmd), ("source", &shop_src)]
        } else {
            &[("command", cmd)]
        };
        for fam in RUN_FAMILIES.iter().filter(|f| !f.ends_with("_total")) {
            assert!(value(&s, fam, labels).is_some(), "{fam} {labels:?}");
        }
        assert_eq!(
            value(&s, "strata_last_run_success", labels),
            Some(1.0),
            "{cmd}"
        );
    }
    let shop_l = [("command", "backup"), ("source", shop_src.as_str())];
    let runs = |src: &str, result: &str| {
        value(
            &s,
            "strata_runs_total",
            &[("command", "backup"), ("source", src), ("result", result)],
        )
    };
    assert_eq!(runs(&shop_src, "success"), Some(2.0));
    assert_eq!(runs(&db_src, "success"), Some(1.0));
    let gone_src = gone.to_string_lossy();
    assert_eq!(runs(&gone_src, "failure"), Some(1.0));
    let gone_l = [("command", "backup"), ("source", &*gone_src)];
    assert_eq!(value(&s, "strata_last_run_success", &gone_l), Some(0.0));
    assert!(value(&s, "strata_last_failure_timestamp_seconds", &gone_l).is_some());
    assert_eq!(
        value(&s, "strata_last_success_timestamp_seconds", &gone_l),
        None,
        "never succeeded"
    );
    let src = |name: &str, source: &str| value(&s, name, &[("source", source)]);
    assert_eq!(
        src("strata_backup_files_read_total", &shop_src),
        Some(shop_read.0),
        "counted over both backups"
    );
    assert!(shop_read.0 >= 3.0, "2 files, then the new one");
    assert_eq!(
        src("strata_backup_read_bytes_total", &shop_src),
        Some(shop_read.1)
    );
    assert_eq!(src("strata_backup_snapshot_files", &shop_src), Some(3.0));
    assert_eq!(
        src("strata_backup_snapshot_size_bytes", &db_src),
        Some(300_006.0)
    );
    // b.txt is the same in both sources: stored once.
    assert_eq!(
        src("strata_backup_new_bytes_total", &db_src),
        Some(300_000.0)
    );
    assert!(src("strata_backup_stored_bytes_total", &db_src).unwrap() > 0.0);
    assert!(src("strata_backup_new_chunks_total", &db_src).unwrap() >= 1.0);
    assert_eq!(value(&s, "strata_check_damaged_files", &[]), Some(0.0));
    assert_eq!(
        value(&s, "strata_check_problems", &[("severity", "damage")]),
        Some(0.0)
    );
    assert!(value(&s, "strata_check_verified_bytes_total", &[]).unwrap() >= 600_000.0);
    assert_eq!(
        value(&s, "strata_forget_removed_snapshots_total", &[]),
        Some(1.0)
    );
    assert!(value(&s, "strata_prune_reclaimed_bytes_total", &[]).is_some());
    assert_eq!(value(&s, "strata_restore_files_total", &[]), Some(3.0));
    assert_eq!(
        value(&s, "strata_restore_written_bytes_total", &[]),
        Some(400_006.0)
    );
    let repo_l = [("repository", canonical(&repo))];
    let repo_l: Vec<(&str, &str)> = repo_l.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(value(&s, "strata_repository_snapshots", &repo_l), Some(2.0));
    assert!(value(&s, "strata_repository_size_bytes", &repo_l).unwrap() > 400_000.0);
    assert!(value(&s, "strata_repository_packs", &repo_l).unwrap() >= 1.0);
    let per_source = |source: &str| {
        let mut l = repo_l.clone();
        l.push(("source", source));
        value(&s, "strata_source_snapshots", &l)
    };
    assert_eq!(per_source(&shop_src), Some(1.0));
    assert_eq!(per_source(&db_src), Some(1.0));
    let last_check_ok = value(
        &s,
        "strata_last_success_timestamp_seconds",
        &[("command", "check")],
    )
    .unwrap();

    // A check that cannot run (another process holds the repository) is a failure: its time is
    // recorded, its last success kept, and nothing says the repository was found undamaged.
    let lock = hold_lock(&repo);
    let out = strata(&repo, &["--lock-wait", "1s", "check", "--metrics-file", ms]);
    assert_eq!(out.status.code(), Some(1));
    drop(lock);
    let s2 = parse_prometheus(&fs::read(&m).unwrap());
    let c = [("command", "check")];
    assert_eq!(value(&s2, "strata_last_run_success", &c), Some(0.0));
    assert_eq!(
        value(&s2, "strata_last_success_timestamp_seconds", &c),
        Some(last_check_ok)
    );
    assert!(value(&s2, "strata_last_failure_timestamp_seconds", &c).is_some());
    assert_eq!(value(&s2, "strata_check_damaged_files", &[]), None);
    assert_eq!(
        value(&s2, "strata_last_run_success", &shop_l),
        Some(1.0),
        "other commands' series are kept"
    );
    let names: Vec<_> = fs::read_dir(&mdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["host.prom"],
        "no temporary file left for the collector"
    );

    // An unwritable metrics file fails a command that otherwise succeeded.
    let out = strata(
        &repo,
        &[
            "prune",
            "--metrics-file",
            t.path().join("nodir/x.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finds `needle` in some pack file of `repo` and flips one byte of it there.
fn flip_in_packs(repo: &Path, needle: &[u8]) {
    for dir in fs::read_dir(repo.join("packs")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut data = fs::read(&p).unwrap();
            if let Some(pos) = data.windows(needle.len()).position(|w| w == needle) {
                data[pos + needle.len() / 2] ^= 0x40;
                fs::write(&p, data).unwrap();
                return;
            }
        }
    }
    panic!("needle not found in any pack");
}

const T0: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

/// `strata check --nagios ARGS` with the clock at `now` (seconds); returns (exit code, stdout).
pub(super) fn nagios(repo: &Path, now: i64, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(["check", "--nagios"])
        .args(args)
        .env_remove("STRATA_REPO")
        .env("STRATA_TEST_NOW_NS", (now * 1_000_000_000).to_string())
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    let code = out.status.code().unwrap();
    let status = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    assert!(
        line.starts_with(&format!("STRATA {status} - ")),
        "exit {code}: {line}"
    );
    // Performance data: `label=value[UOM];warn;crit;min;` items after `|`.
    if let Some((_, perf)) = line.trim_end().split_once(" | ") {
        let mut items = Vec::new();
        let mut rest = perf;
        while !rest.is_empty() {
            // A quoted label may hold spaces: the item ends at the first space after it.
            let end = match rest.strip_prefix('\'') {
                Some(quoted) => quoted.find('\'').unwrap() + 2,
                None => 0,
            };
            let sp = rest[end..].find(' ').map_or(rest.len(), |i| i + end);
            items.push(&rest[..sp]);
            rest = rest[sp..].trim_start();
        }
        for item in items {
            let (label, v) = item.rsplit_once('=').unwrap();
            assert!(!label.is_empty() && !label.contains('|'), "{item}");
            let fields: Vec<&str> = v.split(';').collect();
            assert_eq!(fields.len(), 5, "{item}");
            let num = fields[0].trim_end_matches(['s', 'B']);
            assert!(num.parse::<u64>().is_ok(), "{item}");
        }
    }
    (code, line)
}

#[test]
fn check_nagios_exit_codes() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42); // random: stored raw, so findable in the pack
    fs::write(src.join("victim.bin"), &victim).unwrap();
    fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    let out = Command::new(bin())
        .arg("--repo")
        .arg(&repo)
        .args(["backup", src.to_str().unwrap()])
        .env("STRATA_TEST_NOW_NS", (T0 * 1_000_000_000).to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = canonical(&src);

    let (code, line) = nagios(&repo, T0 + HOUR, &["--max-age", "1d"]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.contains("1 snapshot(s) of 1 source(s), no damage, newest 1h ago"),
        "{line}"
    );
    assert!(
        line.contains(" | snapshots=1;;;0; repository_bytes="),
        "{line}"
    );
    assert!(line.contains("damaged_files=0;;0;0;"), "{line}");
    assert!(
        line.contains(&format!("'age {s}'=3600s;;86400;0;")),
        "{line}"
    );

    let (code, line) = nagios(
        &repo,
        T0 + 30 * HOUR,
        &["--warn-age", "1d", "--max-age", "2d"],
    );
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("newest snapshot 1d 6h old (warn 1d)"),
        "{line}"
    );

    let (code, line) = nagios(&repo, T0 + 72 * HOUR, &["--max-age", "2d"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("newest snapshot 3d old (max 2d)"), "{line}");
    let per_source = format!("{s}=1d");
    let (code, _) = nagios(
        &repo,
        T0 + 30 * HOUR,
        &["--max-age", "1w", "--max-age-source", &per_source],
    );
    assert_eq!(code, 2, "the per-source limit wins");
    let (code, line) = nagios(&repo, T0 + HOUR, &["--max-age-source", "/no/such=1d"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("/no/such: no snapshot"), "{line}");

    let (code, line) = nagios(&t.path().join("nope"), T0, &[]);
    assert_eq!(code, 3, "{line}");
    let (code, line) = nagios(&repo, T0, &["--max-age", "soon"]);
    assert_eq!(code, 3, "a usage error is UNKNOWN too: {line}");
    let lock = hold_lock(&repo);
    let (code, line) = nagios(&repo, T0, &["--lock-wait", "1s"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("in use"), "{line}");
    drop(lock);

    flip_in_packs(&repo, &victim[100_000..100_064]);
    let prom = t.path().join("check.prom");
    let prom_arg = prom.to_str().unwrap();
    let (code, line) = nagios(
        &repo,
        T0 + HOUR,
        &["--read-data", "--max-age", "1d", "--metrics-file", prom_arg],
    );
    assert_eq!(code, 2, "{line}");
    let m = parse_prometheus(&fs::read(&prom).unwrap());
    let c = [("command", "check")];
    assert_eq!(value(&m, "strata_last_run_success", &c), Some(0.0));
    assert_eq!(value(&m, "strata_check_damaged_files", &[]), Some(1.0));
    assert_eq!(
        value(&m, "strata_last_failure_timestamp_seconds", &c),
        Some((T0 + HOUR) as f64),
        "times follow the (test) clock"
    );
    assert!(
        line.contains("damage: 1 damaged file(s) in 1 snapshot(s)"),
        "{line}"
    );
    assert!(line.contains("damaged_files=1;;0;0;"), "{line}");
    // Without --nagios the same check keeps its own exit code.
    let out = strata(&repo, &["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn mount_stats_file_parses_and_counts() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 52);
    let other = pseudo_random(300_000, 53);
    fs::write(src.join("victim.bin"), &victim).unwrap();
    fs::write(src.join("other.bin"), &other).unwrap();
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("dir/small.txt"), b"small\n").unwrap();
    strata_ok(&repo, &["backup", src.to_str().unwrap()]);
    flip_in_packs(&repo, &victim[100_000..100_064]);
    let m = Mount::start(&repo, &[]);
    let mp: PathBuf = m.path.clone();
    with_timeout(Duration::from_secs(120), move || {
        let tool = |cmd: &mut Command| {
            let out = run(cmd, Duration::from_secs(30));
            assert!(out.status.success(), "{cmd:?}: {out:?}");
            out.stdout
        };
        let ls = tool(Command::new("ls").arg("-a").arg(&mp));
        assert!(String::from_utf8_lossy(&ls).lines().any(|l| l == ".strata"));
        let ls = tool(Command::new("ls").arg(&mp));
        assert!(!String::from_utf8_lossy(&ls).contains(".strata"), "hidden");
        let found = tool(Command::new("find").arg(mp.join("latest/")));
        let found = String::from_utf8_lossy(&found);
        assert!(
            found.contains("small.txt") && !found.contains(".strata"),
            "{found}"
        );

        assert_eq!(fs::read(mp.join("latest/other.bin")).unwrap(), other);
        let err = fs::read(mp.join("latest/victim.bin")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));

        let stats = mp.join(".strata/stats");
        let text = tool(Command::new("cat").arg(&stats));
        let s = parse_prometheus(&text);
        let get = |name: &str, l: &[(&str, &str)]| value(&s, name, l).unwrap_or(-1.0);
        assert!(get("strata_mount_requests_total", &[("op", "read")]) >= 1.0);
        assert!(get("strata_mount_requests_total", &[("op", "lookup")]) >= 1.0);
        assert_eq!(get("strata_mount_requests_total", &[("op", "mkdir")]), 0.0);
        assert!(get("strata_mount_read_bytes_total", &[]) >= other.len() as f64);
        assert!(get("strata_mount_eio_total", &[]) >= 1.0);
        assert!(get("strata_mount_chunk_reads_total", &[]) >= 1.0);
        assert!(get("strata_mount_chunk_read_bytes_total", &[]) >= other.len() as f64);
        assert!(get("strata_mount_chunk_cache_misses_total", &[]) >= 1.0);
        assert!(get("strata_mount_chunk_cache_hits_total", &[]) >= 0.0);
        assert_eq!(get("strata_mount_snapshots", &[]), 1.0);
        assert_eq!(
            get("strata_mount_chunk_cache_limit_bytes", &[]),
            (256u64 << 20) as f64
        );
        assert!(get("strata_mount_inodes", &[]) >= 10.0);
        assert!(get("strata_mount_start_time_seconds", &[]) > 1.6e9);
        let hist = s
            .iter()
            .find(|p| p.2.starts_with("strata_mount_request_duration"))
            .unwrap();
        assert_eq!(
            hist.family(),
            ("strata_mount_request_duration_seconds", "histogram")
        );
        let count = get(
            "strata_mount_request_duration_seconds_count",
            &[("op", "read")],
        );
        assert!(count >= 1.0);
        assert_eq!(
            get(
                "strata_mount_request_duration_seconds_bucket",
                &[("op", "read"), ("le", "+Inf")]
            ),
            count
        );
        assert!(
            get(
                "strata_mount_request_duration_seconds_sum",
                &[("op", "read")]
            ) > 0.0
        );
        for fam in [
            "strata_mount_pushed_files_total",
            "strata_mount_pushed_bytes_total",
            "strata_mount_chunk_cache_bytes",
        ] {
            assert!(get(fam, &[]) >= 0.0, "{fam}");
        }

        // A second open sees new counts (the first `cat` is now counted); the size `stat`
        // reports is what reads return; reads at offsets agree; curl reads it whole.
        let f = fs::File::open(&stats).unwrap();
        let size = f.metadata().unwrap().len() as usize;
        let mut whole = vec![0u8; size + 100];
        let mut n = 0;
        loop {
            let r = f.read_at(&mut whole[n..], n as u64).unwrap();
            if r == 0 {
                break;
            }
            n += r;
        }
        assert_eq!(n, size, "stat's size is the content's");
        let mut part = vec![0u8; 50];
        assert_eq!(f.read_at(&mut part, 20).unwrap(), 50);
        assert_eq!(part[..], whole[20..70]);
        assert_ne!(&whole[..n], &text[..], "rendered again at the new open");
        drop(f);
        let url = format!("file://{}", stats.display());
        let curled = tool(Command::new("curl").args(["-sS", &url]));
        parse_prometheus(&curled);
        assert!(String::from_utf8_lossy(&curled).contains("strata_mount_requests_total"));
        let err = fs::OpenOptions::new().write(true).open(&stats).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    });
    drop(m);
}
