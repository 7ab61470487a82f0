use super::*;
use crate::id::SnapshotId;

/// A snapshot of source `s` with the given stats; `n` makes the id and the time.
fn snap(n: u8, kind: BackupKind, parent: Option<u8>, stats: BackupStats) -> Snapshot {
    Snapshot {
        id: SnapshotId([n; 16]),
        time_ns: i64::from(n) * 1_000_000_000,
        host: "h".into(),
        source: "s".into(),
        kind,
        parent: parent.map(|p| SnapshotId([p; 16])),
        depth: 1,
        tags: vec![],
        stats,
        layer_blobs: vec![],
    }
}

fn stats(files: u64, files_read: u64, deleted: u64, new_bytes: u64, stored: u64) -> BackupStats {
    BackupStats {
        files,
        files_read,
        deleted,
        new_bytes,
        stored_bytes: stored,
        ..Default::default()
    }
}

/// A full of 1000 files, then `days` incrementals that each read 15 files (10 of them new),
/// delete one and store 200 KiB that compressed to 80 KiB.
fn history(days: u8) -> Vec<Snapshot> {
    let mut h = vec![snap(
        1,
        BackupKind::Full,
        None,
        stats(1000, 1000, 0, 10 << 20, 4 << 20),
    )];
    for d in 0..days {
        let files = 1000 + 9 * (u64::from(d) + 1);
        h.push(snap(
            d + 2,
            BackupKind::Incremental,
            Some(d + 1),
            stats(files, 15, 1, 200 << 10, 80 << 10),
        ));
    }
    h
}

/// A layer over `reference_files` files that added, rewrote and deleted as given.
fn layer(reference_files: u64, added: u64, rewritten: u64, deleted: u64) -> LayerChanges {
    LayerChanges {
        kind: BackupKind::Incremental,
        files: reference_files + added - deleted,
        files_read: added + rewritten,
        added,
        new_data_files: added + rewritten,
        rewritten,
        incompressible_files: 0,
        incompressible_rewritten: 0,
        new_bytes: 200 << 10,
        compression_ratio: Some(0.4),
    }
}

fn opts() -> AnomalyOptions {
    AnomalyOptions::default()
}

#[test]
fn the_baseline_skips_the_first_snapshot_and_anomalous_ones() {
    let mut h = history(9);
    h[9].tags.push(TAG.into());
    h[9].stats.deleted = 500;
    let b = baseline(&h, 7);
    assert_eq!(
        b.layers, 7,
        "the last 7 of 8 usable (9 incrementals, one tagged)"
    );
    // Each read 15 files of which 9 are net growth: 6 of ~1050 changed.
    let cs = b.changed_share.unwrap();
    assert!((cs - 6.0 / 1050.0).abs() < 0.001, "{cs}");
    assert_eq!(b.changed_files, Some(16));
    assert_eq!(b.new_bytes, Some(200 << 10));
    assert!((b.compression_ratio.unwrap() - 0.4).abs() < 1e-9);
    let ds = b.deleted_share.unwrap();
    assert!(ds > 0.0 && ds < 0.002, "{ds}");
    assert_eq!(
        baseline(&h[..1], 7),
        Baseline::default(),
        "a first full only"
    );
    // A full backup read everything: no changed share from it.
    let mut h = history(2);
    h.push(snap(
        9,
        BackupKind::Full,
        None,
        stats(1018, 1018, 0, 300 << 10, 100 << 10),
    ));
    let b = baseline(&h, 7);
    assert_eq!(b.layers, 3);
    assert_eq!(b.changed_files, Some(16), "the two incrementals only");
    assert_eq!(b.new_bytes, Some(200 << 10), "the full's new bytes count");
}

#[test]
fn a_first_backup_is_not_judged() {
    let mut c = layer(0, 1000, 0, 0);
    c.kind = BackupKind::Full;
    let a = assess(&c, None, &[], &opts());
    assert!(!a.judged && !a.anomalous);
    assert_eq!(a.score, 0.0);
    assert!(a.rules.is_empty() && a.reference.is_none());
}

#[test]
fn a_normal_day_stays_quiet() {
    let h = history(7);
    let r = h.last().unwrap();
    let a = assess(&layer(r.stats.files, 10, 5, 1), Some(r), &h, &opts());
    assert!(a.judged && !a.anomalous, "{a:?}");
    assert!(a.score < 0.2, "{a:?}");
    assert_eq!(a.figures.changed, 16);
}

#[test]
fn mass_encryption_fires_and_names_its_figures() {
    let h = history(7);
    let r = h.last().unwrap();
    let n = r.stats.files;
    let mut c = layer(n, 10, n * 31 / 100, 0);
    c.incompressible_rewritten = c.rewritten;
    c.incompressible_files = c.rewritten;
    c.compression_ratio = Some(1.0);
    let a = assess(&c, Some(r), &h, &opts());
    assert!(a.anomalous, "{a:?}");
    assert_eq!(a.rules[0].rule, Rule::Encrypted);
    assert!((a.score - 3.1).abs() < 0.01, "{}", a.score);
    assert_eq!(
        a.reasons[0],
        format!(
            "31% of files rewritten with incompressible data ({} of {n}, compression ratio 1.00, \
             median of the last 7 layers 0.6%)",
            c.rewritten
        )
    );
    assert_eq!(a.reasons.len(), 1, "the plain rewrite is not said twice");
    assert!(
        a.rules[1].fired && a.rules[1].rule == Rule::Rewritten,
        "{a:?}"
    );
    // The same rewrite with data that compresses fires only the plain rule.
    let a = assess(&layer(n, 10, n * 31 / 100, 0), Some(r), &h, &opts());
    assert_eq!(a.reasons.len(), 1);
    assert!((a.score - 1.24).abs() < 0.01, "{}", a.score);
}

#[test]
fn mass_deletion_fires() {
    let h = history(7);
    let r = h.last().unwrap();
    let n = r.stats.files;
    let a = assess(&layer(n, 0, 0, n * 3 / 10), Some(r), &h, &opts());
    assert!(a.anomalous, "{a:?}");
    assert_eq!(a.rules[0].rule, Rule::Deleted);
    assert!((a.score - 1.5).abs() < 0.01, "{}", a.score);
    assert!(
        a.reasons[0].starts_with(&format!("30% of files deleted ({} of {n}", n * 3 / 10)),
        "{a:?}"
    );
    // Encrypted and renamed: deleted, and as many new files that do not compress.
    let mut c = layer(n, n * 3 / 10, 0, n * 3 / 10);
    c.incompressible_files = c.added;
    let a = assess(&c, Some(r), &h, &opts());
    assert!(
        a.reasons[0].ends_with(&format!(
            ", and {} new files of incompressible data)",
            c.added
        )),
        "{a:?}"
    );
    // A second backup (the history is the first full alone) is judged with the plain thresholds.
    let a = assess(&layer(1000, 0, 0, 300), Some(&h[0]), &h[..1], &opts());
    assert!(a.anomalous, "{a:?}");
}

#[test]
fn a_full_of_unchanged_data_stays_quiet() {
    let h = history(7);
    let r = h.last().unwrap();
    let c = LayerChanges {
        kind: BackupKind::Full,
        files: r.stats.files,
        files_read: r.stats.files,
        added: r.stats.files,
        new_data_files: 0,
        rewritten: 0,
        incompressible_files: 0,
        incompressible_rewritten: 0,
        new_bytes: 0,
        compression_ratio: None,
    };
    let a = assess(&c, Some(r), &h, &opts());
    assert!(a.judged && !a.anomalous && a.score == 0.0, "{a:?}");
    assert_eq!((a.figures.added, a.figures.deleted), (0, 0));
    // A full after a mass encryption sees the files with new content as rewritten.
    let c = LayerChanges {
        new_data_files: 400,
        incompressible_files: 400,
        new_bytes: 40 << 20,
        compression_ratio: Some(1.0),
        ..c
    };
    assert!(assess(&c, Some(r), &h, &opts()).anomalous);
}

#[test]
fn thresholds_follow_the_sources_usual_change() {
    // A source that rewrites half of its 100 files every night.
    let mut h = vec![snap(
        1,
        BackupKind::Full,
        None,
        stats(100, 100, 0, 1 << 20, 1 << 19),
    )];
    for d in 0..7u8 {
        h.push(snap(
            d + 2,
            BackupKind::Incremental,
            Some(d + 1),
            stats(100, 50, 0, 1 << 20, 1 << 19),
        ));
    }
    let r = h.last().unwrap();
    let a = assess(&layer(100, 0, 50, 0), Some(r), &h, &opts());
    assert!(!a.anomalous, "{a:?}");
    assert!((a.rules[0].threshold - 2.0).abs() < 1e-9, "four times 50%");
    // Without a churn factor, the thresholds are as given.
    let o = AnomalyOptions {
        churn_factor: 0.0,
        ..opts()
    };
    assert!(assess(&layer(100, 0, 50, 0), Some(r), &h, &o).anomalous);
}

#[test]
fn few_files_and_zero_thresholds_turn_rules_off() {
    let h = history(7);
    let r = h.last().unwrap();
    let n = r.stats.files;
    let o = AnomalyOptions {
        min_files: n,
        ..opts()
    };
    let a = assess(&layer(n, 0, 0, n / 2), Some(r), &h, &o);
    assert!(!a.anomalous && a.rules.is_empty(), "{a:?}");
    let o = AnomalyOptions {
        deleted_pct: 0.0,
        ..opts()
    };
    assert!(!assess(&layer(n, 0, 0, n / 2), Some(r), &h, &o).anomalous);
    let o = AnomalyOptions {
        deleted_pct: 5.0,
        ..opts()
    };
    assert!(assess(&layer(n, 0, 0, n / 10), Some(r), &h, &o).anomalous);
}

#[test]
fn growth_needs_both_bytes_and_files() {
    let h = history(7);
    let r = h.last().unwrap();
    let n = r.stats.files;
    // 240 new files (no share rule) with 100 MiB of new data.
    let mut c = layer(n, 240, 0, 0);
    c.new_bytes = 100 << 20;
    let a = assess(&c, Some(r), &h, &opts());
    assert!(a.anomalous, "{a:?}");
    assert_eq!(a.rules[0].rule, Rule::Growth);
    assert!(
        a.reasons[0].starts_with("100.0 MiB of new data in 240 changed files, 100 and 15 times"),
        "{a:?}"
    );
    // Many bytes in few files is a big file, not an anomaly.
    let mut c = layer(n, 10, 5, 0);
    c.new_bytes = 1 << 30;
    assert!(!assess(&c, Some(r), &h, &opts()).anomalous);
    // Too little history for a median: no growth rule.
    let mut c = layer(1009, 200, 0, 0);
    c.new_bytes = 100 << 20;
    let a = assess(&c, Some(&h[2]), &h[..3], &opts());
    assert!(a.rules.iter().all(|r| r.rule != Rule::Growth), "{a:?}");
}

#[test]
fn incompressible_sources_do_not_fire_the_encryption_rule() {
    let mut h = history(7);
    for s in &mut h[1..] {
        s.stats.stored_bytes = s.stats.new_bytes;
    }
    let r = h.last().unwrap();
    let n = r.stats.files;
    let mut c = layer(n, 0, n / 5, 0);
    c.incompressible_rewritten = c.rewritten;
    let a = assess(&c, Some(r), &h, &opts());
    assert!(a.rules.iter().all(|r| r.rule != Rule::Encrypted), "{a:?}");
    assert!(!a.anomalous);
}

#[test]
fn new_data_knows_what_did_not_compress() {
    let random = crate::testutil::pseudo_random(4096, 1);
    let text = b"order status delivered ".repeat(200);
    let mut r = NewData::default();
    r.record(1, &random, random.len() as u64);
    assert!(r.incompressible());
    let mut t = NewData::default();
    t.record(1, &text, 300);
    assert!(!t.incompressible());
    let mut tiny = NewData::default();
    tiny.record(1, &random[..100], 100);
    assert!(!tiny.incompressible(), "too small to judge");
    // Compression off: a sample is compressed to measure it.
    let (mut r0, mut t0) = (NewData::default(), NewData::default());
    for _ in 0..20 {
        r0.record(0, &random, random.len() as u64);
        t0.record(0, &text, text.len() as u64);
    }
    assert!(r0.incompressible() && !t0.incompressible());
    assert_eq!(t0.chunks, 20);
    assert_eq!(t0.judged_raw, 2 * text.len() as u64, "chunks 0 and 16");
}

#[test]
fn percentages_and_factors_parse() {
    assert_eq!(parse_percent("20"), Ok(20.0));
    assert_eq!(parse_percent("2.5%"), Ok(2.5));
    assert!(parse_percent("101").is_err() && parse_percent("x").is_err());
    assert_eq!(parse_factor("10"), Ok(10.0));
    assert!(parse_factor("-1").is_err() && parse_factor("inf").is_err());
}
