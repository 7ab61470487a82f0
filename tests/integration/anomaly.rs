//! The anomaly check of `backup`: a mass encryption (30% of the files rewritten with random
//! bytes) and a mass deletion (30% of the files) complete, warn on stderr, exit 3, mark the
//! snapshot (`snapshots`, `--json`, the mount's `tags/`), and set the metrics, which a real
//! Prometheus parser reads; `check --nagios` warns about them. A first backup, a normal day and a
//! full of unchanged data stay quiet; thresholds come from flags and from the configuration file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::monitoring::{nagios, parse_prometheus, value};
use crate::common::mount::{fuse_available, with_timeout, Mount};
use crate::common::{bin, new_repo, pseudo_random, snapshot_list, strata, strata_ok};

/// Files in the test tree: 20 directories of 10 orders each, 1.5–4 KB of JSON text apiece.
const FILES: usize = 200;

fn order(i: usize, day: usize) -> String {
    let mut s = format!("{{\"order\": {i}, \"day\": {day}, \"items\": [\n");
    for k in 0..(20 + i % 30) {
        s.push_str(&format!(
            "  {{\"sku\": \"SKU-{:05}\", \"qty\": {}, \"status\": \"delivered\"}},\n",
            (i * 7919 + k * 104_729) % 100_000,
            k % 3 + 1
        ));
    }
    s.push_str("]}\n");
    s
}

fn order_path(src: &Path, i: usize) -> PathBuf {
    src.join(format!("d{:02}/order-{i:04}.json", i / 10))
}

/// A source of [`FILES`] orders.
fn shop(t: &Path) -> PathBuf {
    let src = t.join("shop");
    for i in 0..FILES {
        let p = order_path(&src, i);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, order(i, 0)).unwrap();
    }
    src
}

/// A normal day: three orders change, five arrive, two go.
fn normal_day(src: &Path, day: usize) {
    for k in 0..3 {
        let i = (day * 31 + k * 17) % 150 + 20;
        let p = order_path(src, i);
        if p.exists() {
            fs::write(&p, order(i, day)).unwrap();
        }
    }
    for k in 0..5 {
        let i = 1000 + day * 10 + k;
        fs::write(src.join(format!("d00/order-{i}.json")), order(i, day)).unwrap();
    }
    for k in 0..2 {
        let _ = fs::remove_file(order_path(src, (day * 13 + k * 7) % 20 + 180));
    }
}

/// Files under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(dir).unwrap() {
        let p = d.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `backup --json SRC ARGS...`: (exit code, the JSON document, stderr).
fn backup(repo: &Path, src: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["backup", "--json"];
    a.extend_from_slice(args);
    a.push(src.to_str().unwrap());
    parsed(strata(repo, &a))
}

fn parsed(out: Output) -> (i32, serde_json::Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 3, "backup failed ({code}): {stderr}");
    let v = serde_json::from_slice(&out.stdout).expect("backup --json");
    (code, v, stderr)
}

/// Asserts a quiet backup: exit 0, judged (unless the first), not marked.
fn quiet(r: (i32, serde_json::Value, String), judged: bool) -> serde_json::Value {
    let (code, v, stderr) = r;
    assert_eq!(code, 0, "{stderr}\n{v}");
    assert!(!stderr.contains("anomaly"), "{stderr}");
    let a = &v["anomaly"];
    assert_eq!(a["judged"], judged, "{a}");
    assert_eq!(a["anomalous"], false, "{a}");
    assert!(a["score"].as_f64().unwrap() < 1.0, "{a}");
    assert_eq!(v["tags"], serde_json::json!([]));
    v
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn mass_encryption_fires_and_marks_the_snapshot() {
    let (t, repo) = new_repo();
    let src = shop(t.path());
    let metrics = t.path().join("strata.prom");
    let m = metrics.to_str().unwrap();
    let first = quiet(backup(&repo, &src, &[]), false);
    assert!(first["anomaly"]["rules"].as_array().unwrap().is_empty());
    for day in 1..=3 {
        normal_day(&src, day);
        let v = quiet(backup(&repo, &src, &["--metrics-file", m]), true);
        assert!(
            v["anomaly"]["figures"]["added"].as_u64().unwrap() == 5,
            "{v}"
        );
    }
    let v = quiet(backup(&repo, &src, &["--kind", "full"]), true);
    assert_eq!(v["anomaly"]["score"], 0.0, "a full of unchanged data: {v}");

    // 30% of the files rewritten with random bytes of their own size.
    let all = files(&src);
    let n = (all.len() * 3).div_ceil(10);
    for (k, p) in all.iter().take(n).enumerate() {
        let len = fs::metadata(p).unwrap().len() as usize;
        fs::write(p, pseudo_random(len, 1000 + k as u64)).unwrap();
    }
    let (code, v, stderr) = backup(&repo, &src, &["--metrics-file", m]);
    assert_eq!(code, 3, "{stderr}");
    let want = format!(
        "anomaly: 30% of files rewritten with incompressible data ({n} of {}, compression ratio 1.00, median of the last 4 layers",
        all.len()
    );
    assert!(stderr.contains(&want), "{want}\n{stderr}");
    assert!(stderr.contains("marked 'anomaly', score 3."), "{stderr}");
    let a = &v["anomaly"];
    assert_eq!(a["anomalous"], true);
    assert_eq!(a["figures"]["rewritten"], n as u64, "{a}");
    assert_eq!(a["figures"]["rewritten_incompressible"], n as u64, "{a}");
    assert_eq!(a["rules"][0]["rule"], "encrypted", "{a}");
    assert!(a["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("30% of files"));
    assert_eq!(v["tags"], serde_json::json!(["anomaly"]));
    let id = v["id"].as_str().unwrap().to_string();

    let list = snapshot_list(&repo);
    assert_eq!(list.last().unwrap()["tags"], serde_json::json!(["anomaly"]));
    assert!(list[..list.len() - 1]
        .iter()
        .all(|s| s["tags"] == serde_json::json!([])));
    let human = String::from_utf8(strata_ok(&repo, &["snapshots"]).stdout).unwrap();
    assert!(
        human.lines().last().unwrap().ends_with(" [anomaly]"),
        "{human}"
    );

    let s = parse_prometheus(&fs::read(&metrics).unwrap());
    let source = [("source", src.to_str().unwrap())];
    let score = value(&s, "strata_backup_anomaly_score", &source).unwrap();
    assert!((score - a["score"].as_f64().unwrap()).abs() < 1e-9 && score >= 1.0);
    assert_eq!(value(&s, "strata_backup_anomalous", &source), Some(1.0));
    assert_eq!(
        value(&s, "strata_backup_anomalies_total", &source),
        Some(1.0)
    );
    let ratio = value(&s, "strata_backup_rewritten_files_ratio", &source).unwrap();
    assert!((ratio - 0.3).abs() < 0.01, "{ratio}");
    let compression = value(&s, "strata_backup_new_data_compression_ratio", &source).unwrap();
    assert!(compression > 0.95, "{compression}");
    let run = [("command", "backup"), ("source", src.to_str().unwrap())];
    assert_eq!(value(&s, "strata_last_run_warnings", &run), Some(1.0));
    assert_eq!(value(&s, "strata_last_run_success", &run), Some(1.0));

    let (code, line) = nagios(&repo, now_s(), &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains(&format!("newest snapshot {} is marked anomalous", &id[..8])));
    assert!(line.contains(" anomalous_sources=1;0;;0;"), "{line}");
    assert_eq!(nagios(&repo, now_s(), &["--anomaly-critical"]).0, 2);

    if fuse_available() {
        let mnt = Mount::start(&repo, &[]);
        let mp = mnt.path.clone();
        let names = with_timeout(Duration::from_secs(60), move || {
            let tagged: Vec<String> = fs::read_dir(mp.join("tags/anomaly"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            tagged
        });
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with(&id[..8]), "{names:?}");
    }

    // The next normal day is judged against the encrypted view and the history without the
    // anomalous layer: quiet again, and so is the monitoring.
    normal_day(&src, 4);
    let v = quiet(backup(&repo, &src, &["--metrics-file", m]), true);
    assert_eq!(v["anomaly"]["baseline"]["layers"], 4, "{v}");
    let s = parse_prometheus(&fs::read(&metrics).unwrap());
    assert_eq!(value(&s, "strata_backup_anomalous", &source), Some(0.0));
    assert_eq!(
        value(&s, "strata_backup_anomalies_total", &source),
        Some(1.0)
    );
    assert_eq!(nagios(&repo, now_s(), &[]).0, 0);
}

#[test]
fn mass_deletion_fires() {
    let (t, repo) = new_repo();
    let src = shop(t.path());
    quiet(backup(&repo, &src, &[]), false);
    normal_day(&src, 1);
    quiet(backup(&repo, &src, &[]), true);
    // Whole directories go: 60 of the files, under 6 whiteouts.
    let before = files(&src).len();
    let mut gone = 0;
    for d in 0..6 {
        let dir = src.join(format!("d{:02}", d + 1));
        gone += files(&dir).len();
        fs::remove_dir_all(dir).unwrap();
    }
    let (code, v, stderr) = backup(&repo, &src, &[]);
    assert_eq!(code, 3, "{stderr}");
    let pct = (gone * 100 + before / 2) / before;
    let want =
        format!("anomaly: {pct}% of files deleted ({gone} of {before}, median of the last layer");
    assert!(stderr.contains(&want), "{want}\n{stderr}");
    let a = &v["anomaly"];
    assert_eq!(a["figures"]["deleted"], gone as u64, "{a}");
    assert_eq!(a["rules"][0]["rule"], "deleted", "{a}");
    assert_eq!(v["tags"], serde_json::json!(["anomaly"]));
    assert_eq!(v["stats"]["deleted"], 6, "whiteouts");
}

/// `strata --config FILE --repo REPO backup --json ARGS... SRC`.
fn backup_with_config(
    config: &Path,
    repo: &Path,
    src: &Path,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("--repo")
        .arg(repo)
        .args(["backup", "--json"])
        .args(args)
        .arg(src)
        .env_remove("STRATA_REPO")
        .output()
        .unwrap();
    parsed(out)
}

/// Deletes `n` orders that still exist, from the end.
fn delete_orders(src: &Path, n: usize) {
    for p in files(src).iter().rev().take(n) {
        fs::remove_file(p).unwrap();
    }
}

#[test]
fn thresholds_come_from_flags_and_the_configuration_file() {
    let (t, repo) = new_repo();
    let src = shop(t.path());
    quiet(backup(&repo, &src, &[]), false);
    // A history of quiet nights, so that the layers below move no median.
    for _ in 0..4 {
        quiet(backup(&repo, &src, &[]), true);
    }
    // Turned off: no verdict at all.
    delete_orders(&src, 60);
    let (code, v, stderr) = backup(&repo, &src, &["--no-anomaly-check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(v["anomaly"].is_null(), "{v}");
    // A lower threshold on the command line: 14% deleted fires at 10%.
    delete_orders(&src, 20);
    let (code, v, _) = backup(&repo, &src, &["--anomaly-deleted", "10"]);
    assert_eq!(code, 3);
    assert_eq!(v["anomaly"]["rules"][0]["threshold"], 0.1, "{v}");
    // And a higher one keeps 30% quiet.
    delete_orders(&src, 36);
    let v = quiet(backup(&repo, &src, &["--anomaly-deleted", "50"]), true);
    assert_eq!(v["anomaly"]["rules"][0]["threshold"], 0.5, "{v}");

    // The configuration file: [backup] for every source, [source."…"] for this one.
    let config = t.path().join("config.toml");
    let write = |text: &str| fs::write(&config, text).unwrap();
    write("[backup]\nanomaly-deleted = 50\n");
    delete_orders(&src, 25); // 30% of 84
    let v = quiet(backup_with_config(&config, &repo, &src, &[]), true);
    assert_eq!(v["anomaly"]["rules"][0]["threshold"], 0.5, "{v}");
    write(&format!(
        "[backup]\nanomaly-deleted = 50\n\n[source.{:?}]\nanomaly-deleted = 5\nanomaly-min-files = 2\n",
        src.to_str().unwrap()
    ));
    let report = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["config", "--json", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let deleted = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "anomaly-deleted")
        .unwrap();
    assert_eq!(deleted["value"], "5", "{deleted}");
    assert_eq!(deleted["source"], src.to_str().unwrap(), "{deleted}");
    delete_orders(&src, 4); // 7% of 59
    let (code, v, stderr) = backup_with_config(&config, &repo, &src, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(v["anomaly"]["rules"][0]["threshold"], 0.05, "{v}");
    // A flag beats the file.
    delete_orders(&src, 4);
    let v = quiet(
        backup_with_config(&config, &repo, &src, &["--anomaly-deleted", "20"]),
        true,
    );
    assert_eq!(v["anomaly"]["rules"][0]["threshold"], 0.2, "{v}");
    write("[backup]\nno-anomaly-check = true\n");
    delete_orders(&src, 30);
    let (code, v, _) = backup_with_config(&config, &repo, &src, &[]);
    assert_eq!(code, 0);
    assert!(v["anomaly"].is_null(), "{v}");
}
