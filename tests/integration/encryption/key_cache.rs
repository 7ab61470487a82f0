//! `--key-cache DURATION`: the key a passphrase unlocked is kept in the kernel keyring, so that
//! the next commands need no passphrase; it expires, is bound to its repository, is verified
//! before use (a changed one is discarded and the passphrase asked for), and `key forget` drops
//! it. Off by default: then every command needs its passphrase.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata::repo::crypt::{keycache, keyring};

use crate::common::{backup, bin, encrypted, init, passphrase_file, strata_ok};

/// Whether the kernel keyring can be used here (a container's seccomp profile may refuse it).
fn keyring_available() -> bool {
    match keyring::find("strata:test:probe") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("Skipping key cache test: no kernel keyring ({e})");
            false
        }
    }
}

/// `strata --repo REPO [--password-file PASS] [--key-cache CACHE] ARGS`, with no other source of
/// a passphrase (no environment variable, no terminal) and no configuration file.
fn run(repo: &Path, pass: Option<&Path>, cache: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.arg("--repo").arg(repo);
    if let Some(p) = pass {
        c.arg("--password-file").arg(p);
    }
    if let Some(d) = cache {
        c.args(["--key-cache", d]);
    }
    c.args(args)
        .env_remove("STRATA_PASSWORD")
        .env_remove("STRATA_PASSWORD_FILE")
        .env_remove("STRATA_PASSWORD_COMMAND")
        .env_remove("STRATA_KEY_CACHE")
        .env_remove("STRATA_REPO")
        .env("STRATA_CONFIG", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An encrypted repository holding `f` = "secret of NAME"; returns it.
fn repository(t: &Path, name: &str) -> PathBuf {
    let repo = encrypted(&t.join(name));
    fs::write(passphrase_file(&repo), format!("passphrase of {name}\n")).unwrap();
    init(&repo);
    let src = t.join(format!("{name}-src"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), format!("secret of {name}")).unwrap();
    backup(&repo, &src, &[]);
    repo
}

/// The repository id its marker names.
fn repo_id(repo: &Path) -> [u8; 16] {
    let marker = fs::read_to_string(repo.join("STRATA")).unwrap();
    let hex = marker
        .lines()
        .find_map(|l| l.strip_prefix("repository "))
        .unwrap();
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The serial of the key cached for `repo`, if any.
fn cached(repo: &Path) -> Option<keyring::Serial> {
    keyring::find(&keycache::description(&repo_id(repo))).unwrap()
}

/// Asserts that `out` is "no passphrase" (exit 5), not damage.
fn assert_asks(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(5), "{what}: {}", stderr(out));
    assert!(
        stderr(out).contains("No passphrase"),
        "{what}: {}",
        stderr(out)
    );
}

#[test]
fn a_cached_key_spares_the_next_commands_the_passphrase_until_forgotten() {
    if !keyring_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), "a");
    let pass = passphrase_file(&repo);
    // Off (the default): a key is neither cached nor used.
    strata_ok(&repo, &["snapshots"]);
    assert_eq!(cached(&repo), None);
    assert_asks(&run(&repo, None, None, &["cat", "latest", "f"]), "off");

    let first = run(&repo, Some(&pass), Some("1m"), &["snapshots"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(cached(&repo).is_some());
    // No passphrase source at all: the cached key opens it, from the flag, the environment or
    // the configuration file.
    let out = run(&repo, None, Some("1m"), &["cat", "latest", "f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"secret of a");
    let mut by_env = Command::new(bin());
    let out = by_env
        .arg("--repo")
        .arg(&repo)
        .args(["cat", "latest", "f"])
        .env_remove("STRATA_PASSWORD_FILE")
        .env("STRATA_KEY_CACHE", "1m")
        .env("STRATA_CONFIG", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    let config = t.path().join("config.toml");
    fs::write(&config, "key-cache = \"1m\"\n").unwrap();
    let out = Command::new(bin())
        .arg("--repo")
        .arg(&repo)
        .args(["cat", "latest", "f"])
        .env("STRATA_CONFIG", &config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    // With the cache off, the cached key is not used.
    assert_asks(
        &run(&repo, None, Some("0"), &["snapshots"]),
        "--key-cache 0",
    );
    assert_asks(&run(&repo, None, Some("off"), &["snapshots"]), "off");

    let forget = run(&repo, None, None, &["key", "forget"]);
    assert!(forget.status.success(), "{}", stderr(&forget));
    assert!(String::from_utf8_lossy(&forget.stdout).contains("Forgot the cached key"));
    assert_eq!(cached(&repo), None);
    assert_asks(&run(&repo, None, Some("1m"), &["snapshots"]), "forgotten");
    let again = run(&repo, None, None, &["key", "forget"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("No key of repository"));
    // A plain repository has nothing to forget.
    let plain = t.path().join("plain");
    init(&plain);
    assert_eq!(
        run(&plain, None, None, &["key", "forget"]).status.code(),
        Some(1)
    );
}

#[test]
fn a_cached_key_expires() {
    if !keyring_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), "a");
    let pass = passphrase_file(&repo);
    let stored = Instant::now();
    let out = run(&repo, Some(&pass), Some("3s"), &["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&repo, None, Some("3s"), &["snapshots"]);
    if stored.elapsed() < Duration::from_secs(3) {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stored.elapsed()));
    assert_asks(&run(&repo, None, Some("3s"), &["snapshots"]), "expired");
    assert_eq!(cached(&repo), None);
}

#[test]
fn a_cached_key_of_one_repository_never_opens_another() {
    if !keyring_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let a = repository(t.path(), "a");
    let b = repository(t.path(), "b");
    let out = run(&a, Some(&passphrase_file(&a)), Some("1m"), &["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Another repository has another id: nothing cached for it.
    assert_asks(&run(&b, None, Some("1m"), &["cat", "latest", "f"]), "b");
    // B's marker made to claim A's id: the cached key names a key file B does not have, and
    // B's key files name B. Refused, nothing written, nothing read.
    let b_marker = fs::read(b.join("STRATA")).unwrap();
    fs::copy(a.join("STRATA"), b.join("STRATA")).unwrap();
    let before = super::state(&b);
    let b_src = t.path().join("b-src");
    for args in [
        &["cat", "latest", "f"][..],
        &["snapshots"],
        &["backup", b_src.to_str().unwrap()],
    ] {
        let out = run(&b, None, Some("1m"), args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("belongs to another repository"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(super::state(&b), before, "B was written to");
    // The cached key is A's, and still works for A.
    let out = run(&a, None, Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    // B restored: its own passphrase opens it, and caches B's key beside A's.
    fs::write(b.join("STRATA"), b_marker).unwrap();
    let out = run(
        &b,
        Some(&passphrase_file(&b)),
        Some("1m"),
        &["cat", "latest", "f"],
    );
    assert_eq!(out.stdout, b"secret of b", "{}", stderr(&out));
    let out = run(&b, None, Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of b", "{}", stderr(&out));
    let out = run(&a, None, Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    for r in [&a, &b] {
        run(r, None, None, &["key", "forget"]);
    }
}

#[test]
fn a_changed_cached_key_is_discarded_and_the_passphrase_asked_for() {
    if !keyring_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), "a");
    let pass = passphrase_file(&repo);
    // A second key file, for a cached key that names the wrong one.
    let pw2 = t.path().join("pw2");
    fs::write(&pw2, "second").unwrap();
    let add = run(
        &repo,
        Some(&pass),
        None,
        &[
            "key",
            "add",
            "--new-password-file",
            pw2.to_str().unwrap(),
            "--kdf-memory",
            "256",
            "--kdf-iterations",
            "1",
        ],
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let ids: Vec<String> = fs::read_dir(repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);

    // Each change: a flipped byte of the wrapping key, of the key file id, of the repository id;
    // the other key file's id; the payload cut short.
    type Tamper = Box<dyn Fn(&mut Vec<u8>)>;
    let other = ids.clone();
    let tampers: Vec<(&str, Tamper)> = vec![
        ("wrapping key", Box::new(|p: &mut Vec<u8>| p[60] ^= 1)),
        ("repository id", Box::new(|p: &mut Vec<u8>| p[20] ^= 1)),
        ("magic", Box::new(|p: &mut Vec<u8>| p[0] ^= 1)),
        (
            "key file id",
            Box::new(move |p: &mut Vec<u8>| {
                let named = std::str::from_utf8(&p[28..44]).unwrap().to_string();
                let swap = other.iter().find(|i| **i != named).unwrap();
                p[28..44].copy_from_slice(swap.as_bytes());
            }),
        ),
        ("length", Box::new(|p: &mut Vec<u8>| p.truncate(50))),
    ];
    for (what, tamper) in &tampers {
        let out = run(&repo, Some(&pass), Some("1m"), &["snapshots"]);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let serial = cached(&repo).expect("cached");
        let mut payload = keyring::read(serial).unwrap().to_vec();
        tamper(&mut payload);
        keyring::update(serial, &payload).unwrap();
        // Without a passphrase: asked for (exit 5), not damage, and the bad key is gone.
        let before = super::state(&repo);
        let out = run(&repo, None, Some("1m"), &["cat", "latest", "f"]);
        assert_asks(&out, what);
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("discarding it"),
            "{what}: {}",
            stderr(&out)
        );
        assert_eq!(cached(&repo), None, "{what}");
        assert_eq!(super::state(&repo), before, "{what}: written to");
        // Changed again, with a passphrase: it is used instead, and a good key cached anew.
        let out = run(&repo, Some(&pass), Some("1m"), &["snapshots"]);
        let serial = cached(&repo).expect("cached");
        let mut payload = keyring::read(serial).unwrap().to_vec();
        tamper(&mut payload);
        keyring::update(serial, &payload).unwrap();
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let out = run(&repo, Some(&pass), Some("1m"), &["cat", "latest", "f"]);
        assert_eq!(out.stdout, b"secret of a", "{what}: {}", stderr(&out));
        let out = run(&repo, None, Some("1m"), &["cat", "latest", "f"]);
        assert_eq!(out.stdout, b"secret of a", "{what}: {}", stderr(&out));
    }
    run(&repo, None, None, &["key", "forget"]);
}

#[test]
fn key_commands_ask_for_the_passphrase_and_drop_a_cached_key_they_remove() {
    if !keyring_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), "a");
    let pass = passphrase_file(&repo);
    let fast = ["--kdf-memory", "256", "--kdf-iterations", "1"];
    let pw2 = t.path().join("pw2");
    fs::write(&pw2, "second").unwrap();
    let key = |pass: Option<&Path>, cache: Option<&str>, args: &[&str]| {
        let mut all = vec!["key"];
        all.extend_from_slice(args);
        run(&repo, pass, cache, &all)
    };
    let mut add = vec!["add", "--new-password-file", pw2.to_str().unwrap()];
    add.extend(fast);
    assert!(key(Some(&pass), Some("1m"), &add).status.success());
    assert!(cached(&repo).is_some());
    // With the first key cached, a key command still needs a passphrase.
    assert_asks(&key(None, Some("1m"), &["list"]), "key list");
    let list = key(Some(&pw2), None, &["list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The second passphrase removes the first key, although the first is cached: the command
    // was unlocked with the passphrase given. The cached key, which names the first, goes too.
    let removed = key(Some(&pw2), None, &["remove", &first]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(cached(&repo), None);
    assert_asks(
        &run(&repo, None, Some("1m"), &["snapshots"]),
        "after key remove",
    );
    // key passwd replaces the second key, cached by this command: its cached key goes too.
    let out = run(&repo, Some(&pw2), Some("1m"), &["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pw3 = t.path().join("pw3");
    fs::write(&pw3, "third").unwrap();
    let mut passwd = vec!["passwd", "--new-password-file", pw3.to_str().unwrap()];
    passwd.extend(fast);
    let out = key(Some(&pw2), None, &passwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cached(&repo), None);
    assert_asks(
        &run(&repo, None, Some("1m"), &["snapshots"]),
        "after key passwd",
    );
    let out = run(&repo, Some(&pw3), Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    let out = run(&repo, None, Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    // A key added with the cache on leaves the cached key in place.
    let pw4 = t.path().join("pw4");
    fs::write(&pw4, "fourth").unwrap();
    let mut add = vec!["add", "--new-password-file", pw4.to_str().unwrap()];
    add.extend(fast);
    assert!(key(Some(&pw3), Some("1m"), &add).status.success());
    let out = run(&repo, None, Some("1m"), &["cat", "latest", "f"]);
    assert_eq!(out.stdout, b"secret of a", "{}", stderr(&out));
    assert!(key(None, None, &["forget"]).status.success());
}
