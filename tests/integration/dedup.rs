//! Deduplication: unchanged data is not stored twice, and content-defined chunking keeps the cost of
//! an append or a few changed database pages proportional to the change.

use std::io::Write;

use crate::common::{backup, new_repo, pseudo_random, strata_ok};

fn stats(repo: &std::path::Path) -> Vec<serde_json::Value> {
    crate::common::snapshot_list(repo)
        .iter()
        .map(|s| s["stats"].clone())
        .collect()
}

#[test]
fn second_full_of_unchanged_data_stores_almost_nothing() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(300_000, i)).unwrap();
    }
    backup(&repo, &src, &["--kind", "full"]);
    backup(&repo, &src, &["--kind", "full"]);
    let s = stats(&repo);
    assert!(s[0]["new_bytes"].as_u64().unwrap() >= 6_000_000);
    assert_eq!(s[1]["new_chunks"], 0);
    assert_eq!(s[1]["new_bytes"], 0);
    // Only the layer copy and the snapshot record are new.
    assert!(s[1]["stored_bytes"].as_u64().unwrap() < 20_000, "{}", s[1]);
}

#[test]
fn appending_one_mib_to_a_large_file_stores_about_one_mib() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = src.join("big.bin");
    std::fs::write(&f, pseudo_random(100 << 20, 5)).unwrap();
    backup(&repo, &src, &[]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(&pseudo_random(1 << 20, 6))
        .unwrap();
    backup(&repo, &src, &[]);
    let s = stats(&repo);
    let new = s[1]["new_bytes"].as_u64().unwrap();
    assert!(
        (1 << 20..=3 << 20).contains(&new),
        "appending 1 MiB stored {new} new bytes"
    );
}

#[test]
fn changing_a_few_sqlite_pages_stores_a_small_fraction() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let db = src.join("orders.sqlite");
    let sql = |script: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(script)
            .output()
            .expect("sqlite3 CLI installed (apt-get install sqlite3)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sql("PRAGMA page_size=4096; CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL, body BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
         INSERT INTO orders SELECT i, 'customer-' || (i % 977), i * 1.25, randomblob(400) FROM n;");
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 40 << 20, "database is {size} bytes");
    backup(&repo, &src, &[]);
    sql("UPDATE orders SET total = total + 1 WHERE id IN (10, 25000, 50000, 75000, 99999);");
    backup(&repo, &src, &[]);
    let s = stats(&repo);
    let new = s[1]["new_bytes"].as_u64().unwrap();
    assert!(new > 0);
    assert!(
        new * 10 < size,
        "changing 5 rows stored {new} of {size} bytes"
    );
}

#[test]
fn small_documents_are_compressed_with_a_trained_dictionary() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    let doc = |i: u64| {
        format!(
            "{{\"order_id\": {i}, \"customer\": {{\"name\": \"Customer {}\", \"email\": \"c{}@example.com\", \"city\": \"Berlin\"}}, \"items\": [{{\"sku\": \"SKU-{}\", \"qty\": {}, \"price\": {}.99}}], \"status\": \"shipped\", \"payment\": \"card\"}}\n",
            i * 7919 % 1000,
            i * 13 % 877,
            i * 31 % 977,
            i % 5 + 1,
            i % 90
        )
    };
    for i in 0..600u64 {
        let dir = src.join(format!("orders/{:02}", i % 12));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("order-{i}.json")), doc(i)).unwrap();
    }
    backup(&repo, &src, &[]);
    {
        let db = sled::open(repo.join("index")).unwrap();
        let dict = db.open_tree("meta").unwrap().get("dictionary").unwrap();
        assert!(
            dict.is_some_and(|d| d.len() > 1000),
            "a dictionary was trained"
        );
    }
    // Every document reads back exactly.
    for i in (0..600u64).step_by(37) {
        let path = format!("orders/{:02}/order-{i}.json", i % 12);
        assert_eq!(
            strata_ok(&repo, &["cat", "latest", &path]).stdout,
            doc(i).as_bytes()
        );
    }
    let s = stats(&repo);
    let stored = s[0]["stored_bytes"].as_u64().unwrap();
    // What the documents' payloads alone would take compressed one by one without a dictionary;
    // with it, everything stored (record headers, the layer copy, the snapshot record included)
    // must be smaller.
    let plain: u64 = (0..600u64)
        .map(|i| {
            let d = doc(i);
            strata::compress::compress(d.as_bytes(), 1, None).map_or(d.len(), |(_, c)| c.len())
                as u64
        })
        .sum();
    assert!(
        stored < plain,
        "stored {stored} bytes; without a dictionary the payloads alone take {plain}"
    );
}
