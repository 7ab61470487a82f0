//! PostgreSQL, from Debian's packages, in a throwaway cluster (run as the `postgres` user, on a
//! Unix socket in a private directory): a `pg_dump -Fc` of a database under write load stored
//! with `--stdin-from-command`, restored with `pg_restore -j 4` straight out of a real mount into
//! a new database, whose row counts and checksum are those of the dump's snapshot; failing dump
//! commands commit nothing; and a day's changes to the database cost a fraction of the dump.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::common::mount::{fuse_available, run, snapshot_names, with_timeout, Mount};
use crate::common::{new_repo, snapshot_list, strata, strata_ok};

const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// The newest PostgreSQL server binaries Debian installed (`/usr/lib/postgresql/N/bin`).
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A running cluster; stopped (immediately) and removed when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn must(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Cluster {
    /// `None` (the test skips) when PostgreSQL is not installed, unless the run requires every
    /// test (`STRATA_REQUIRE_FUSE=1`, as in CI).
    fn start() -> Option<Cluster> {
        let Some(bin) = server_bin() else {
            if std::env::var("STRATA_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("PostgreSQL required but not installed (apt-get install postgresql)");
            }
            eprintln!("Skipping: PostgreSQL is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let id = |flag| {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            must(out, "id postgres").trim().parse::<u32>().unwrap()
        };
        std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
        // Sockets live in the cluster's own directory, so ports cannot collide; distinct ones keep
        // the servers' System V shared memory keys (derived from the port) apart too.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + ((std::process::id() * 7 + n) % 30_000) as u16;
        let c = Cluster { bin, dir, port };
        let data = c.dir.path().join("data");
        must(
            c.as_postgres("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .output()
                .unwrap(),
            "initdb",
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses='' -c fsync=off -c autovacuum=off",
            c.port,
            c.dir.path().display()
        );
        must(
            c.as_postgres("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(c.dir.path().join("log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output()
                .unwrap(),
            "pg_ctl start",
        );
        Some(c)
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Client arguments: the socket directory, port and user.
    fn conn(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.dir.path().display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(self.conn());
        cmd
    }

    /// Runs `sql` in database `db`; returns its unaligned, tuples-only output.
    fn sql(&self, db: &str, sql: &str) -> String {
        let out = run(
            self.client("psql").args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ]),
            CMD_TIMEOUT,
        );
        must(out, sql).trim().to_string()
    }

    /// `pg_dump` of `db` as argv for `--stdin-from-command`.
    fn dump_argv(&self, db: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![self.bin.join("pg_dump").display().to_string()];
        v.extend(self.conn());
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["-d".to_string(), db.to_string()]);
        v
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The shop: customers, orders, and a ledger whose counts and totals the orders must match.
const SCHEMA: &str = "
    CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
    CREATE TABLE orders(id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES customers,
                        status text NOT NULL, total bigint NOT NULL, created timestamptz NOT NULL,
                        note text NOT NULL);
    CREATE INDEX orders_customer ON orders(customer);
    CREATE TABLE ledger(id int PRIMARY KEY, orders bigint NOT NULL, total bigint NOT NULL);
    INSERT INTO customers SELECT i, 'Customer ' || i, 'c' || i || '@example.com'
        FROM generate_series(1, 2000) i;
    INSERT INTO orders(customer, status, total, created, note)
        SELECT i % 2000 + 1, 'delivered', i % 997 + 1,
               timestamptz '2026-01-01' + i * interval '1 minute',
               'gift wrap: ' || (i % 3 = 0) || ', delivery window ' || i % 24 || 'h'
        FROM generate_series(1, 60000) i;
    INSERT INTO ledger SELECT 1, count(*), sum(total) FROM orders;";

/// What a restored (or live) database must agree on: row counts and a checksum of every order.
const CHECKSUM: &str = "
    SELECT (SELECT count(*) FROM orders) || ' ' || (SELECT sum(total) FROM orders) || ' ' ||
           (SELECT md5(string_agg(id || ':' || status || ':' || total, ',' ORDER BY id)) FROM orders)
           || ' ' || (SELECT orders || ':' || total FROM ledger) || ' ' ||
           (SELECT count(*) FROM customers)";

/// New orders and shipped old ones, each moving the ledger in the same transaction.
const LOAD: &str = "
\\set c random(1, 2000)
\\set amount random(1, 500)
\\set o random(1, 60000)
BEGIN;
INSERT INTO orders(customer, status, total, created, note)
    VALUES (:c, 'new', :amount, now(), 'placed under load');
UPDATE ledger SET orders = orders + 1, total = total + :amount WHERE id = 1;
COMMIT;
BEGIN;
UPDATE orders SET status = 'shipped', total = total + 1 WHERE id = :o;
UPDATE ledger SET total = total + 1 WHERE id = 1;
COMMIT;
";

/// A `psql` session holding a repeatable-read transaction whose snapshot it exported: a dump
/// taken with `--snapshot` sees exactly what this session sees.
struct Snapshot {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Snapshot {
    fn export(c: &Cluster) -> (Snapshot, String) {
        let mut child = c
            .client("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "shop",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Snapshot {
            child,
            stdin,
            stdout,
        };
        let name = s.query("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_export_snapshot();");
        (s, name)
    }

    fn query(&mut self, sql: &str) -> String {
        let sql = sql.trim().trim_end_matches(';').replace('\n', " ");
        writeln!(self.stdin, "{sql};").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn end(mut self) {
        writeln!(self.stdin, "COMMIT;").unwrap();
        drop(self.stdin);
        self.child.wait().unwrap();
    }
}

/// pgbench running the load until dropped.
struct Load(Child);

impl Load {
    fn start(c: &Cluster) -> Load {
        let script = c.dir.path().join("load.sql");
        fs::write(&script, LOAD).unwrap();
        let child = c
            .client("pgbench")
            .args(["-n", "-c", "2", "-T", "300", "-f"])
            .arg(&script)
            .arg("shop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backup_dump(repo: &Path, argv: &[String], extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "backup",
        "--json",
        "--stdin-from-command",
        "--stdin-filename",
        "shop.dump",
        "--source-name",
        "pg-shop",
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(argv.iter().map(String::as_str));
    strata(repo, &args)
}

fn orders(c: &Cluster) -> i64 {
    c.sql("shop", "SELECT count(*) FROM orders")
        .parse()
        .unwrap()
}

#[test]
fn pg_dump_under_load_restores_from_the_mount_as_of_its_snapshot() {
    let Some(c) = Cluster::start() else { return };
    c.sql("postgres", "CREATE DATABASE shop");
    c.sql("shop", SCHEMA);
    let (t, repo) = new_repo();

    let load = Load::start(&c);
    let start = orders(&c);
    while orders(&c) < start + 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut session, snapshot) = Snapshot::export(&c);
    let expected = session.query(CHECKSUM);
    let at_dump = session.query("SELECT count(*) FROM orders");
    let out = backup_dump(
        &repo,
        &c.dump_argv("shop", &["-Fc", "-Z0", &format!("--snapshot={snapshot}")]),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    session.end();
    let after = orders(&c);
    drop(load);
    assert!(
        after > at_dump.parse::<i64>().unwrap(),
        "the load kept writing during the dump ({at_dump} → {after})"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "pg-shop");
    assert!(v["size"].as_u64().unwrap() > 1 << 20);

    // The live database has moved on; its ledger still agrees with its orders.
    let live = c.sql("shop", CHECKSUM);
    assert_ne!(live, expected);

    assert!(fuse_available(), "the restore reads the dump from a mount");
    let name = snapshot_names(&repo).pop().unwrap();
    let m = Mount::start(&repo, &[]);
    let dump = m.path.join("snapshots").join(&name).join("shop.dump");
    c.sql("postgres", "CREATE DATABASE shop_restored");
    let restore = c
        .client("pg_restore")
        .args(["-j", "4", "-d", "shop_restored"])
        .arg(&dump)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = with_timeout(CMD_TIMEOUT, move || restore.wait_with_output().unwrap());
    must(out, "pg_restore -j 4 from the mount");
    // One order as of the dump, without restoring the database (the README's shell line).
    let dump_path = m.path.join("sources/pg-shop/latest/shop.dump");
    let line = format!(
        "{} -f - -a -t orders '{}' | awk -F'\\t' '$1 == 1042'",
        c.bin.join("pg_restore").display(),
        dump_path.display()
    );
    let row = must(
        run(Command::new("sh").args(["-c", &line]), CMD_TIMEOUT),
        &line,
    );
    drop(m);
    assert_eq!(c.sql("shop_restored", CHECKSUM), expected);
    let restored_row = c.sql(
        "shop_restored",
        "SELECT id || E'\\t' || customer || E'\\t' || status || E'\\t' || total FROM orders WHERE id = 1042",
    );
    let fields: Vec<&str> = row.trim().split('\t').collect();
    assert_eq!(fields[..4].join("\t"), restored_row, "{row}");
    let counts: Vec<&str> = expected.split(' ').collect();
    let ledger = format!("{}:{}", counts[0], counts[1]);
    assert_eq!(counts[3], ledger, "the dump's snapshot keeps the invariant");
    drop(t);
}

#[test]
fn failing_pg_dumps_commit_nothing_and_a_days_changes_cost_a_fraction() {
    let Some(c) = Cluster::start() else { return };
    c.sql("postgres", "CREATE DATABASE shop");
    c.sql("shop", SCHEMA);
    let (_t, repo) = new_repo();

    let out = backup_dump(&repo, &c.dump_argv("nosuchdb", &["-Fc"]), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited with status 1; no snapshot was committed")
            && err.contains("database \"nosuchdb\" does not exist"),
        "{err}"
    );
    let mut killed: Vec<String> = vec!["sh".into(), "-c".into()];
    killed.push("\"$0\" \"$@\" && kill -KILL $$; exit 0".into());
    killed.extend(c.dump_argv("shop", &["-Fc", "-Z0"]));
    let out = backup_dump(&repo, &killed, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was killed by signal 9 (SIGKILL); no snapshot was committed"),
        "{err}"
    );
    assert!(snapshot_list(&repo).is_empty());

    // Day 1, then a day of trading: 2% new orders, the latest 3% shipped, 2 old ones amended.
    let argv = c.dump_argv("shop", &["-Fc", "-Z0"]);
    let day1: serde_json::Value =
        serde_json::from_str(&must(backup_dump(&repo, &argv, &[]), "day 1")).unwrap();
    c.sql(
        "shop",
        "INSERT INTO orders(customer, status, total, created, note)
            SELECT i % 2000 + 1, 'new', i % 500 + 1, timestamptz '2026-03-01' + i * interval '1 minute', 'day 2'
            FROM generate_series(1, 1200) i;
         UPDATE orders SET status = 'shipped' WHERE id > (SELECT max(id) - 1800 FROM orders);
         UPDATE orders SET note = note || ' (amended)' WHERE id IN (17, 31017);
         UPDATE ledger SET orders = (SELECT count(*) FROM orders), total = (SELECT sum(total) FROM orders);",
    );
    let day2: serde_json::Value =
        serde_json::from_str(&must(backup_dump(&repo, &argv, &[]), "day 2")).unwrap();
    assert_eq!(day2["kind"], "incremental");
    let size = day2["size"].as_u64().unwrap();
    let new = day2["stats"]["new_bytes"].as_u64().unwrap();
    eprintln!(
        "pg_dump -Fc -Z0: day 1 {} bytes, day 2 {size} bytes, of which new {new} ({:.1}%)",
        day1["size"],
        new as f64 * 100.0 / size as f64
    );
    assert!(
        new * 2 < size,
        "a day's changes stored {new} of {size} bytes"
    );
    strata_ok(&repo, &["check", "--read-data"]);
}
