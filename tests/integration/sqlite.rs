//! SQLite databases backed up while a writer keeps committing, in WAL and in rollback-journal
//! mode: every stored copy — read back through `cat`, `restore` and a real FUSE mount with
//! `sqlite3 'file:…?immutable=1'` — passes `PRAGMA integrity_check`, keeps the writer's
//! invariants and holds every transaction committed before its backup began. Also: no `-wal`,
//! `-shm` or `-journal` in snapshots, no new copy of an unchanged database while a commit that
//! only reached the `-wal` makes one, the original's metadata, the fallback with a warning, and
//! `--no-sqlite-copy`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::common::fixture::set_mtime;
use crate::common::mount::{fuse_available, run, snapshot_names, with_timeout, Mount};
use crate::common::scratchfs::ScratchFs;
use crate::common::{bin, new_repo, strata_ok};

const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// Orders in a database before its writer starts.
const ORDERS0: i64 = 3000;

/// `strata backup --json ARGS SRC` with `env`; returns (exit code, JSON, stderr).
fn backup_env(
    repo: &Path,
    src: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, serde_json::Value, String) {
    let out = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(["backup", "--json"])
        .args(args)
        .arg(src)
        .env_remove("STRATA_REPO")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("backup --json: {e}; stderr: {stderr}"));
    (out.status.code().unwrap(), v, stderr)
}

/// A backup that must succeed without warnings.
fn backup_ok(repo: &Path, src: &Path, args: &[&str]) -> serde_json::Value {
    let (code, v, stderr) = backup_env(repo, src, args, &[]);
    assert_eq!(code, 0, "backup: {stderr}");
    v
}

fn copies(v: &serde_json::Value) -> Vec<String> {
    v["sqlite_copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect()
}

/// Paths of snapshot `id`, from `ls -R --json`.
fn ls_paths(repo: &Path, id: &str) -> Vec<String> {
    let out = strata_ok(repo, &["ls", "-R", "--json", id]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_string()
        })
        .collect()
}

fn ls_entry(repo: &Path, id: &str, path: &str) -> serde_json::Value {
    let out = strata_ok(repo, &["ls", "--json", id, path]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn create(db: &Path, journal_mode: &str) {
    let mut c = Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode={journal_mode};
         CREATE TABLE orders(id INTEGER PRIMARY KEY, total INTEGER NOT NULL,
                             nitems INTEGER NOT NULL, pad BLOB);
         CREATE TABLE items(order_id INTEGER NOT NULL, amount INTEGER NOT NULL);
         CREATE INDEX items_order ON items(order_id);
         CREATE TABLE ledger(orders INTEGER NOT NULL, total INTEGER NOT NULL);
         INSERT INTO ledger VALUES (0, 0);"
    ))
    .unwrap();
    let tx = c.transaction().unwrap();
    for id in 1..=ORDERS0 {
        place_order(&tx, id);
    }
    tx.commit().unwrap();
}

/// One order with its items, and the ledger moved by its total: the invariants are that the
/// ledger counts the orders and sums their totals, each order's total is the sum of its items,
/// and ids have no gaps.
fn place_order(tx: &Transaction, id: i64) {
    let nitems = 1 + id % 4;
    let mut total = 0;
    for k in 0..nitems {
        let amount = (id * 7 + k * 13) % 1000 + 1;
        tx.execute("INSERT INTO items VALUES (?1, ?2)", (id, amount))
            .unwrap();
        total += amount;
    }
    tx.execute(
        "INSERT INTO orders VALUES (?1, ?2, ?3, randomblob(1500))",
        (id, total, nitems),
    )
    .unwrap();
    tx.execute(
        "UPDATE ledger SET orders = orders + 1, total = total + ?1",
        [total],
    )
    .unwrap();
}

/// A writer committing one order per transaction (and, every fifth, a change to an old order,
/// so pages all over the file change) until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicI64>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(ORDERS0));
        let (db, s, c) = (db.to_path_buf(), stop.clone(), committed.clone());
        let handle = std::thread::spawn(move || {
            let mut conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(60)).unwrap();
            let mut id = ORDERS0;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                place_order(&tx, id);
                if id % 5 == 0 {
                    let old = id * 7919 % ORDERS0 + 1;
                    tx.execute(
                        "UPDATE items SET amount = amount + 1 WHERE rowid =
                           (SELECT min(rowid) FROM items WHERE order_id = ?1)",
                        [old],
                    )
                    .unwrap();
                    tx.execute("UPDATE orders SET total = total + 1 WHERE id = ?1", [old])
                        .unwrap();
                    tx.execute("UPDATE ledger SET total = total + 1", [])
                        .unwrap();
                }
                tx.commit().unwrap();
                c.store(id, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let w = Writer {
            stop,
            committed,
            handle: Some(handle),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.committed() < ORDERS0 + 20 {
            assert!(Instant::now() < deadline, "the writer does not commit");
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }

    fn committed(&self) -> i64 {
        self.committed.load(Ordering::SeqCst)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Checks a stored copy with the sqlite3 CLI, opened read-only and immutable (no `-wal`, no
/// locks): integrity, invariants, and at least `min_orders` orders. Returns its order count.
fn check_copy(uri_path: &Path, min_orders: i64) -> i64 {
    let uri = format!("file:{}?immutable=1", uri_path.display());
    let out = run(
        Command::new("sqlite3").arg(&uri).arg(
            "PRAGMA integrity_check;
             SELECT (SELECT count(*) FROM orders) = (SELECT orders FROM ledger),
                    (SELECT sum(total) FROM orders) = (SELECT total FROM ledger),
                    (SELECT count(*) FROM items) = (SELECT sum(nitems) FROM orders),
                    (SELECT count(*) FROM orders o
                       WHERE total != (SELECT sum(amount) FROM items i WHERE i.order_id = o.id)),
                    (SELECT max(id) FROM orders) = (SELECT count(*) FROM orders),
                    (SELECT count(*) FROM orders);",
        ),
        CMD_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sqlite3 {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{uri}: {stdout}");
    assert_eq!(lines[0], "ok", "{uri}: integrity_check");
    let f: Vec<&str> = lines[1].split('|').collect();
    assert_eq!(&f[..5], ["1", "1", "1", "0", "1"], "{uri}: invariants");
    let n: i64 = f[5].parse().unwrap();
    assert!(
        n >= min_orders,
        "{uri}: {n} orders, but {min_orders} were committed before the backup began"
    );
    n
}

fn no_companions(paths: &[String]) {
    for p in paths {
        for suffix in ["-wal", "-shm", "-journal"] {
            assert!(!p.ends_with(suffix), "{p} was stored beside its copy");
        }
    }
}

/// Three backups while the writer commits, then every copy read back three ways.
fn hot_backups_are_consistent(journal_mode: &str) {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let db = src.join("orders.sqlite");
    create(&db, journal_mode);
    let writer = Writer::start(&db);
    let mut snaps = Vec::new();
    for _ in 0..3 {
        let before = writer.committed();
        let v = backup_ok(&repo, &src, &[]);
        assert_eq!(copies(&v), ["orders.sqlite"]);
        snaps.push((v["id"].as_str().unwrap().to_string(), before));
        std::thread::sleep(Duration::from_millis(50));
    }
    if journal_mode == "WAL" {
        assert!(
            src.join("orders.sqlite-wal").exists(),
            "the writer keeps a -wal"
        );
    }
    let last_commit = writer.committed();
    assert!(
        last_commit > snaps[2].1,
        "the writer kept committing during the backups"
    );
    writer.stop();

    let mut counts = Vec::new();
    for (id, before) in &snaps {
        let paths = ls_paths(&repo, id);
        no_companions(&paths);
        let copy = t.path().join(format!("cat-{id}.sqlite"));
        fs::write(
            &copy,
            strata_ok(&repo, &["cat", id, "orders.sqlite"]).stdout,
        )
        .unwrap();
        counts.push(check_copy(&copy, *before));
    }
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");

    let target = t.path().join("restored");
    strata_ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let restored: Vec<String> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(restored, ["orders.sqlite"]);
    assert_eq!(
        check_copy(&target.join("orders.sqlite"), snaps[2].1),
        counts[2]
    );

    if !fuse_available() {
        return;
    }
    let names = snapshot_names(&repo);
    let m = Mount::start(&repo, &[]);
    let mnt = m.path.clone();
    with_timeout(Duration::from_secs(120), move || {
        for ((name, (_, before)), count) in names.iter().zip(&snaps).zip(&counts) {
            let db = mnt.join("snapshots").join(name).join("orders.sqlite");
            assert_eq!(check_copy(&db, *before), *count, "{name}");
        }
    });
    drop(m);
}

#[test]
fn wal_database_under_a_writer_is_stored_consistent() {
    hot_backups_are_consistent("WAL");
}

#[test]
fn rollback_journal_database_under_a_writer_is_stored_consistent() {
    hot_backups_are_consistent("DELETE");
}

/// Lets timestamps move past the racy window, so that the next backup's decisions do not
/// depend on timing.
fn settle() {
    std::thread::sleep(Duration::from_millis(60));
}

fn orders_in(repo: &Path, dir: &Path, id: &str, path: &str) -> i64 {
    let copy = dir.join(format!("{id}-count.sqlite"));
    fs::write(&copy, strata_ok(repo, &["cat", id, path]).stdout).unwrap();
    let c = Connection::open_with_flags(
        format!("file:{}?immutable=1", copy.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    c.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn unchanged_database_is_not_copied_again_but_a_commit_in_the_wal_alone_is_seen() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let db = src.join("orders.sqlite");
    create(&db, "WAL");
    // An application's connection, open throughout: its commits stay in the -wal.
    let app = Connection::open(&db).unwrap();
    // It has read the database, so it holds its share of the -wal.
    app.execute_batch("PRAGMA wal_autocheckpoint=0; SELECT count(*) FROM orders;")
        .unwrap();
    let add = |id: i64| {
        let mut c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
        let tx = c.transaction().unwrap();
        place_order(&tx, id);
        tx.commit().unwrap();
        // Closing is not the last connection (`app` stays): nothing is checkpointed.
    };
    add(ORDERS0 + 1);
    settle();
    let v = backup_ok(&repo, &src, &[]);
    assert_eq!(copies(&v), ["orders.sqlite"]);
    let first = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        orders_in(&repo, t.path(), &first, "orders.sqlite"),
        ORDERS0 + 1
    );
    settle();
    let v = backup_ok(&repo, &src, &[]);
    assert_eq!(
        copies(&v),
        Vec::<String>::new(),
        "unchanged: not copied again"
    );
    assert_eq!(v["stats"]["files_read"], 0);

    let main_mtime = fs::metadata(&db).unwrap().modified().unwrap();
    add(ORDERS0 + 2);
    assert_eq!(
        fs::metadata(&db).unwrap().modified().unwrap(),
        main_mtime,
        "the commit reached only the -wal"
    );
    settle();
    let v = backup_ok(&repo, &src, &[]);
    assert_eq!(
        copies(&v),
        ["orders.sqlite"],
        "a commit in the -wal is a change"
    );
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        orders_in(&repo, t.path(), &id, "orders.sqlite"),
        ORDERS0 + 2
    );
    no_companions(&ls_paths(&repo, &id));
    settle();
    assert_eq!(copies(&backup_ok(&repo, &src, &[])), Vec::<String>::new());

    // The last connection closes: the -wal is checkpointed into the database and removed.
    drop(app);
    assert!(!src.join("orders.sqlite-wal").exists());
    settle();
    assert_eq!(copies(&backup_ok(&repo, &src, &[])), ["orders.sqlite"]);
    settle();
    let v = backup_ok(&repo, &src, &[]);
    assert_eq!(copies(&v), Vec::<String>::new());
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        orders_in(&repo, t.path(), &id, "orders.sqlite"),
        ORDERS0 + 2
    );
}

#[test]
fn a_copy_keeps_the_originals_metadata_and_a_quiet_database_its_bytes() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("db")).unwrap();
    let db = src.join("db/orders.sqlite");
    create(&db, "DELETE");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&db, Some(1234), Some(5678)).unwrap();
    set_mtime(&db, 1_700_000_000, 123_456_789);
    let v = backup_ok(&repo, &src, &[]);
    assert_eq!(copies(&v), ["db/orders.sqlite"]);
    let id = v["id"].as_str().unwrap();
    let e = ls_entry(&repo, id, "db/orders.sqlite");
    assert_eq!(e["mode"], "0640");
    assert_eq!(e["uid"], 1234);
    assert_eq!(e["gid"], 5678);
    assert_eq!(e["mtime_ns"], 1_700_000_000_123_456_789i64);
    assert_eq!(e["size"], fs::metadata(&db).unwrap().len());
    // Nobody wrote: the copy is the file, byte for byte.
    assert!(
        strata_ok(&repo, &["cat", id, "db/orders.sqlite"]).stdout == fs::read(&db).unwrap(),
        "the stored copy differs from the quiet database"
    );
    let human = strata_ok(&repo, &["backup", "--rehash", src.to_str().unwrap()]).stdout;
    let human = String::from_utf8(human).unwrap();
    assert!(
        human.contains("1 database(s) stored as consistent copies")
            && human.contains("  db/orders.sqlite\n"),
        "{human}"
    );
}

#[test]
fn databases_that_cannot_be_copied_are_read_as_files_with_a_warning() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend(crate::common::pseudo_random(20_000, 3));
    fs::write(src.join("fake.sqlite"), &fake).unwrap();
    let locked = src.join("locked.sqlite");
    create(&locked, "DELETE");
    let holder = Connection::open(&locked).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    fs::write(src.join("good.sqlite"), b"").unwrap();
    create(&src.join("good.sqlite"), "WAL");

    let (code, v, stderr) = backup_env(
        &repo,
        &src,
        &[],
        &[("STRATA_TEST_SQLITE_LOCK_WAIT_MS", "300")],
    );
    assert_eq!(code, 3, "warnings: {stderr}");
    assert_eq!(copies(&v), ["good.sqlite"]);
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("fake.sqlite") && warnings.contains("locked.sqlite"),
        "{warnings}"
    );
    assert!(warnings.contains("stayed locked for 0.3 s"), "{warnings}");
    assert!(stderr.contains("fake.sqlite"), "{stderr}");
    let id = v["id"].as_str().unwrap();
    assert!(strata_ok(&repo, &["cat", id, "fake.sqlite"]).stdout == fake);
    assert!(strata_ok(&repo, &["cat", id, "locked.sqlite"]).stdout == fs::read(&locked).unwrap());
    holder.execute_batch("COMMIT;").unwrap();
}

#[test]
fn no_sqlite_copy_reads_matching_databases_as_files_with_their_companions() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    let cached = src.join("cache/sessions.sqlite");
    create(&cached, "WAL");
    let app = Connection::open(&cached).unwrap();
    app.execute_batch("PRAGMA wal_autocheckpoint=0; UPDATE ledger SET total = total;")
        .unwrap();
    create(&src.join("orders.sqlite"), "DELETE");
    let v = backup_ok(&repo, &src, &["--no-sqlite-copy", "cache"]);
    assert_eq!(copies(&v), ["orders.sqlite"]);
    let id = v["id"].as_str().unwrap();
    let paths = ls_paths(&repo, id);
    assert!(
        paths.contains(&"cache/sessions.sqlite-wal".to_string()),
        "{paths:?}"
    );
    assert!(
        strata_ok(&repo, &["cat", id, "cache/sessions.sqlite"]).stdout
            == fs::read(&cached).unwrap()
    );
    drop(app);
    let bad = crate::common::strata(
        &repo,
        &["backup", "--no-sqlite-copy", "[", src.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--no-sqlite-copy"));
}

/// The copies are made outside the source, and the temporary directory does not outlive the
/// backup, even one that fails.
#[test]
fn copies_leave_nothing_behind() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    create(&src.join("orders.sqlite"), "WAL");
    let tmp = t.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let run_with_tmp = |repo: &Path| {
        Command::new(bin())
            .arg("--repo")
            .arg(repo)
            .args(["backup", "--json"])
            .arg(&src)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap()
    };
    let out = run_with_tmp(&repo);
    assert!(out.status.success());
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    let names: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, [src.join("orders.sqlite")]);
    // With TMPDIR inside the tree, the copy's directory is not backed up.
    let inner = src.join("tmp");
    fs::create_dir(&inner).unwrap();
    let out = Command::new(bin())
        .arg("--repo")
        .arg(&repo)
        .args(["backup", "--json", "--rehash"])
        .arg(&src)
        .env("TMPDIR", &inner)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copies(&v), ["orders.sqlite"]);
    let paths = ls_paths(&repo, v["id"].as_str().unwrap());
    assert_eq!(paths, ["orders.sqlite", "tmp"]);
    assert_eq!(fs::read_dir(&inner).unwrap().count(), 0);
    fs::remove_dir(&inner).unwrap();

    // A backup that fails after its copy (its repository's disk is full) leaves nothing either.
    let Some(small) = ScratchFs::tmpfs(4) else {
        return;
    };
    let full = small.path.join("repo");
    strata_ok(&full, &["init"]);
    let out = run_with_tmp(&full);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
}
