//! Layer-resolution cost at chain depth: lookups and listings at the end of a 30-layer incremental
//! chain against the same tree stored as one full layer. Target (issue 2): within 2x.
//!
//! Run: `cargo bench --bench layers` (env: LAYERS_FILES, LAYERS_CHAIN). Prints a table; asserts
//! nothing — timing belongs in benchmarks, not tests.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use strata::backup::{backup, BackupOptions};
use strata::layers::View;
use strata::repo::{CreateOptions, Repo};
use strata::snapshot::BackupKind;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_order(src: &Path, day: usize, n: usize, version: usize) {
    let dir = src.join(format!(
        "orders/2026/{:02}/{:02}",
        1 + day / 28,
        1 + day % 28
    ));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("order-{n}.json")),
        format!(
            "{{\"id\":{n},\"version\":{version},\"total\":{}.5}}",
            n % 997
        ),
    )
    .unwrap();
}

fn time_lookups(view: &View, paths: &[Vec<u8>], rounds: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..rounds {
        for p in paths {
            std::hint::black_box(view.lookup(p).unwrap());
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / (rounds * paths.len()) as f64
}

fn time_listings(view: &View, dirs: &[Vec<u8>], rounds: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..rounds {
        for d in dirs {
            std::hint::black_box(view.children(d).unwrap().count());
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / (rounds * dirs.len()) as f64
}

fn main() {
    let files = env_usize("LAYERS_FILES", 20_000);
    let chain = env_usize("LAYERS_CHAIN", 30);
    let days = 200;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for n in 0..files {
        write_order(&src, n % days, n, 0);
    }
    let repo: Arc<Repo> = strata::open::Open::new(tmp.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let opts = |kind| BackupOptions {
        kind: Some(kind),
        ..Default::default()
    };
    backup(&repo, &src, &opts(BackupKind::Full)).unwrap();
    // A day of business per layer: new orders, a few changed, one deleted.
    let mut next = files;
    for layer in 0..chain {
        for _ in 0..50 {
            write_order(&src, (next * 7) % days, next, 0);
            next += 1;
        }
        for k in 0..10 {
            write_order(
                &src,
                ((layer * 13 + k) * 31) % files % days,
                (layer * 13 + k) * 31 % files,
                layer + 1,
            );
        }
        backup(&repo, &src, &opts(BackupKind::Incremental)).unwrap();
    }
    let deep = repo.snapshots().unwrap().last().unwrap().clone();
    backup(&repo, &src, &opts(BackupKind::Full)).unwrap();
    let full = repo.snapshots().unwrap().last().unwrap().clone();
    assert_eq!(deep.depth as usize, chain + 1);

    let deep_view = View::open(&repo, &deep.id).unwrap();
    let full_view = View::open(&repo, &full.id).unwrap();
    // Every 7th original order, plus the newest ones (which live only in upper layers).
    let mut paths: Vec<Vec<u8>> = (0..files)
        .step_by(7)
        .map(|n| {
            let day = n % days;
            format!(
                "orders/2026/{:02}/{:02}/order-{n}.json",
                1 + day / 28,
                1 + day % 28
            )
            .into_bytes()
        })
        .collect();
    paths.extend((files..next).step_by(3).map(|n| {
        let day = (n * 7) % days;
        format!(
            "orders/2026/{:02}/{:02}/order-{n}.json",
            1 + day / 28,
            1 + day % 28
        )
        .into_bytes()
    }));
    let dirs: Vec<Vec<u8>> = (0..days)
        .map(|d| format!("orders/2026/{:02}/{:02}", 1 + d / 28, 1 + d % 28).into_bytes())
        .collect();
    // Same answers from both views.
    for p in paths.iter().take(200) {
        assert_eq!(
            deep_view.lookup(p).unwrap().size,
            full_view.lookup(p).unwrap().size
        );
    }
    // Warm up sled's cache and the layer-dir sets, then measure alternately.
    time_lookups(&deep_view, &paths, 1);
    time_lookups(&full_view, &paths, 1);
    let (mut lf, mut ld, mut sf, mut sd) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        lf = lf.min(time_lookups(&full_view, &paths, 3));
        ld = ld.min(time_lookups(&deep_view, &paths, 3));
        sf = sf.min(time_listings(&full_view, &dirs, 3));
        sd = sd.min(time_listings(&deep_view, &dirs, 3));
    }
    println!("layer resolution: {files} files in {days} dirs, chain of {chain} incrementals");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "full (µs)", "depth (µs)", "ratio"
    );
    println!(
        "{:<28} {:>12.2} {:>12.2} {:>8.2}",
        "lookup (3-level path)",
        lf,
        ld,
        ld / lf
    );
    println!(
        "{:<28} {:>12.2} {:>12.2} {:>8.2}",
        "list directory (~100 ent.)",
        sf,
        sd,
        sd / sf
    );
    println!("target: ratio <= 2.0");
}
