use super::*;

fn run(command: Command, source: Option<&str>, success: bool, at_s: i64) -> RunReport {
    RunReport {
        command,
        source: source.map(str::to_string),
        success,
        ended_ns: at_s * 1_000_000_000,
        duration_secs: 1.5,
        warnings: 0,
        errors: u64::from(!success),
        figures: None,
        repository: None,
    }
}

fn value(families: &[text::Family], name: &str, l: &[(&str, &str)]) -> Option<f64> {
    let l = labels(l);
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| s.is(name, &l))
        .map(|s| s.value)
}

fn backup_figures() -> Figures {
    Figures::Backup(BackupFigures {
        files_read: 10,
        read_bytes: 1000,
        new_chunks: 3,
        new_bytes: 900,
        stored_bytes: 400,
        snapshot_files: 50,
        snapshot_bytes: 5000,
        anomaly: None,
    })
}

#[test]
fn a_failure_keeps_the_last_success_time_and_counters_but_no_success_gauges() {
    let shop = [("command", "backup"), ("source", "/srv/shop")];
    let mut ok = run(Command::Backup, Some("/srv/shop"), true, 100);
    ok.figures = Some(backup_figures());
    let fams = file::apply(Vec::new(), &ok.changes());
    let fams = file::apply(fams, &ok.changes());
    assert_eq!(
        value(
            &fams,
            "strata_backup_read_bytes_total",
            &[("source", "/srv/shop")]
        ),
        Some(2000.0),
        "counters add up over runs"
    );
    let mut other = run(Command::Backup, Some("/srv/db"), true, 150);
    other.figures = Some(backup_figures());
    let fams = file::apply(fams, &other.changes());
    let failed = run(Command::Backup, Some("/srv/shop"), false, 200);
    let fams = file::apply(fams, &failed.changes());
    assert_eq!(
        value(&fams, "strata_last_success_timestamp_seconds", &shop),
        Some(100.0)
    );
    assert_eq!(
        value(&fams, "strata_last_failure_timestamp_seconds", &shop),
        Some(200.0)
    );
    assert_eq!(
        value(&fams, "strata_last_run_timestamp_seconds", &shop),
        Some(200.0)
    );
    assert_eq!(value(&fams, "strata_last_run_success", &shop), Some(0.0));
    assert_eq!(value(&fams, "strata_last_run_errors", &shop), Some(1.0));
    assert_eq!(
        value(
            &fams,
            "strata_backup_snapshot_files",
            &[("source", "/srv/shop")]
        ),
        None,
        "the failed source's gauges are gone"
    );
    assert_eq!(
        value(
            &fams,
            "strata_backup_read_bytes_total",
            &[("source", "/srv/shop")]
        ),
        Some(2000.0),
        "its counters stay"
    );
    assert_eq!(
        value(
            &fams,
            "strata_backup_snapshot_files",
            &[("source", "/srv/db")]
        ),
        Some(50.0),
        "another source is untouched"
    );
    let runs = |result| {
        value(
            &fams,
            "strata_runs_total",
            &[
                ("command", "backup"),
                ("source", "/srv/shop"),
                ("result", result),
            ],
        )
    };
    assert_eq!((runs("success"), runs("failure")), (Some(2.0), Some(1.0)));
}

#[test]
fn check_with_damage_is_a_failure_that_still_reports_its_findings() {
    let mut clean = run(Command::Check, None, true, 100);
    clean.figures = Some(Figures::Check(CheckFigures::default()));
    let mut damaged = run(Command::Check, None, false, 200);
    damaged.figures = Some(Figures::Check(CheckFigures {
        damaged_files: 4,
        damaged_snapshots: 2,
        bad_chunks: 1,
        damage_problems: 1,
        leftover_problems: 0,
        verified_bytes: 10,
    }));
    let fams = file::apply(Vec::new(), &clean.changes());
    let fams = file::apply(fams, &damaged.changes());
    assert_eq!(value(&fams, "strata_check_damaged_files", &[]), Some(4.0));
    assert_eq!(
        value(&fams, "strata_check_problems", &[("severity", "damage")]),
        Some(1.0)
    );
    let c = [("command", "check")];
    assert_eq!(value(&fams, "strata_last_run_success", &c), Some(0.0));
    assert_eq!(
        value(&fams, "strata_last_success_timestamp_seconds", &c),
        Some(100.0)
    );
    // A check that could not run at all leaves no damage count claiming anything.
    let fams = file::apply(fams, &run(Command::Check, None, false, 300).changes());
    assert_eq!(value(&fams, "strata_check_damaged_files", &[]), None);
    assert_eq!(
        value(&fams, "strata_check_verified_bytes_total", &[]),
        Some(10.0)
    );
}

#[test]
fn repository_series_are_replaced_per_repository() {
    let repo = |path: &str, sources: &[&str]| RepositoryFigures {
        path: path.into(),
        snapshots: sources.len() as u64,
        packs: 2,
        size_bytes: 100,
        sources: sources
            .iter()
            .map(|s| SourceFigures {
                source: s.to_string(),
                snapshots: 1,
                newest_ns: 5_000_000_000,
            })
            .collect(),
    };
    let mut a = run(Command::Prune, None, true, 1);
    a.repository = Some(repo("/r1", &["x", "y"]));
    let mut b = run(Command::Prune, None, true, 2);
    b.repository = Some(repo("/r2", &["z"]));
    let mut a2 = run(Command::Forget, None, true, 3);
    a2.figures = Some(Figures::Forget(ForgetFigures {
        removed_snapshots: 1,
        prune: Some(PruneFigures {
            deleted_packs: 1,
            rewritten_packs: 0,
            reclaimed_bytes: 64,
        }),
    }));
    a2.repository = Some(repo("/r1", &["x"]));
    let mut fams = Vec::new();
    for r in [&a, &b, &a2] {
        fams = file::apply(fams, &r.changes());
    }
    let src = |r, s| {
        value(
            &fams,
            "strata_source_snapshots",
            &[("repository", r), ("source", s)],
        )
    };
    assert_eq!(src("/r1", "x"), Some(1.0));
    assert_eq!(
        src("/r1", "y"),
        None,
        "a source forgotten entirely disappears"
    );
    assert_eq!(src("/r2", "z"), Some(1.0));
    assert_eq!(
        value(
            &fams,
            "strata_source_newest_snapshot_timestamp_seconds",
            &[("repository", "/r1"), ("source", "x")]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(&fams, "strata_prune_reclaimed_bytes_total", &[]),
        Some(64.0)
    );
    assert_eq!(
        value(&fams, "strata_forget_removed_snapshots_total", &[]),
        Some(1.0)
    );
}

#[test]
fn the_recorder_judges_success_by_exit_code_unless_told() {
    let opts = MetricsOptions::default();
    let r = Recorder::start(&opts, Command::Restore);
    assert!(!r.is_enabled());
    assert!(r.report(&Ok(0)).success);
    assert!(r.report(&Ok(3)).success);
    let failed = r.report(&Ok(1));
    assert!(!failed.success);
    assert_eq!(failed.errors, 1, "a failed run counts one error at least");
    assert!(
        !r.report(&Err(crate::Error::InvalidArgument("x".into())))
            .success
    );
    r.success(false);
    assert!(!r.report(&Ok(0)).success);
    r.finish(&Ok(0)).unwrap();
}

#[test]
fn anomaly_gauges_follow_the_last_backup_and_its_counter_adds_up() {
    let shop = [("source", "/srv/shop")];
    let with = |anomaly: Option<AnomalyFigures>, at: i64| {
        let mut r = run(Command::Backup, Some("/srv/shop"), true, at);
        let Figures::Backup(mut b) = backup_figures() else {
            unreachable!()
        };
        b.anomaly = anomaly;
        r.figures = Some(Figures::Backup(b));
        r
    };
    let fired = AnomalyFigures {
        score: 3.1,
        anomalous: true,
        rewritten_share: Some(0.31),
        deleted_share: Some(0.0),
        compression_ratio: Some(1.0),
    };
    let fams = file::apply(Vec::new(), &with(Some(fired.clone()), 100).changes());
    let fams = file::apply(fams, &with(Some(fired), 200).changes());
    assert_eq!(
        value(&fams, "strata_backup_anomaly_score", &shop),
        Some(3.1)
    );
    assert_eq!(value(&fams, "strata_backup_anomalous", &shop), Some(1.0));
    assert_eq!(
        value(&fams, "strata_backup_anomalies_total", &shop),
        Some(2.0)
    );
    assert_eq!(
        value(&fams, "strata_backup_rewritten_files_ratio", &shop),
        Some(0.31)
    );
    // A first backup elsewhere: judged as nothing, no shares.
    let first = AnomalyFigures::default();
    let fams = file::apply(fams, &with(Some(first), 300).changes());
    assert_eq!(value(&fams, "strata_backup_anomalous", &shop), Some(0.0));
    assert_eq!(
        value(&fams, "strata_backup_anomalies_total", &shop),
        Some(2.0)
    );
    assert_eq!(
        value(&fams, "strata_backup_deleted_files_ratio", &shop),
        None
    );
    // The check turned off, or a failed backup: no verdict is claimed.
    let quiet = AnomalyFigures {
        score: 0.2,
        rewritten_share: Some(0.01),
        ..Default::default()
    };
    for next in [
        with(None, 400),
        run(Command::Backup, Some("/srv/shop"), false, 400),
    ] {
        let fams = file::apply(fams.clone(), &with(Some(quiet.clone()), 350).changes());
        assert_eq!(
            value(&fams, "strata_backup_anomaly_score", &shop),
            Some(0.2)
        );
        let fams = file::apply(fams, &next.changes());
        for name in [
            "strata_backup_anomaly_score",
            "strata_backup_rewritten_files_ratio",
        ] {
            assert_eq!(value(&fams, name, &shop), None, "{name}");
        }
        assert_eq!(
            value(&fams, "strata_backup_anomalies_total", &shop),
            Some(2.0)
        );
    }
}
