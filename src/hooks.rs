//! Commands run around a backup (`backup --pre-command`, `--post-command`): what a database or a
//! filesystem needs around a file-level backup, such as taking and dropping an LVM snapshot,
//! forcing a checkpoint, or stopping and starting a service.
//!
//! Both run with `sh -c`, standard input closed and standard output sent to standard error, so
//! that `--json` output stays one object. The pre-command runs before the repository is opened:
//! when it fails, nothing is backed up. The post-command runs after the repository is closed (it
//! may run strata on it), whatever happened before — also when the pre-command or the backup
//! failed — with `STRATA_BACKUP_STATUS` (`success`, `warning`, `failure`), `STRATA_SNAPSHOT_ID`
//! (when a snapshot was committed) and `STRATA_BACKUP_ERROR` (on failure) in its environment.
//! When it fails, the command fails too, but the snapshot already committed stays.

use std::process::{Command, ExitStatus, Stdio};

use crate::error::{Error, Result};
use crate::id::SnapshotId;

/// What a successful backup committed, for the post-command.
pub struct Committed {
    /// The new snapshot.
    pub id: SnapshotId,
    /// Whether it completed with warnings.
    pub warnings: bool,
}

/// The commands to run before and after a backup.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Run before anything is backed up.
    pub pre: Option<String>,
    /// Run after the backup, whatever its outcome.
    pub post: Option<String>,
}

impl Hooks {
    /// Runs the pre-command, then `body` (the backup), then the post-command; `committed` tells
    /// what a successful `body` committed. Returns `body`'s result, or the error that stopped it:
    /// the pre-command's, the backup's, or (after a committed backup) the post-command's.
    pub fn around<T>(
        &self,
        body: impl FnOnce() -> Result<T>,
        committed: impl Fn(&T) -> Committed,
    ) -> Result<T> {
        let result = self.run_pre().and_then(|()| body());
        let env = match &result {
            Ok(t) => {
                let c = committed(t);
                let status = if c.warnings { "warning" } else { "success" };
                vec![
                    ("STRATA_BACKUP_STATUS", status.to_string()),
                    ("STRATA_SNAPSHOT_ID", c.id.to_string()),
                ]
            }
            Err(e) => vec![
                ("STRATA_BACKUP_STATUS", "failure".to_string()),
                ("STRATA_BACKUP_ERROR", e.to_string()),
            ],
        };
        let Some(post) = &self.post else {
            return result;
        };
        let post_failed = run(post, &env).err();
        match (result, post_failed) {
            (r, None) => r,
            (Ok(t), Some(status)) => {
                let id = committed(&t).id;
                Err(Error::HookFailed {
                    hook: "post-command",
                    command: post.clone(),
                    status,
                    consequence: format!("snapshot {} was committed and stays", id.short()),
                })
            }
            (Err(e), Some(status)) => {
                log::error!("The post-command `{post}` {status} too");
                Err(e)
            }
        }
    }

    fn run_pre(&self) -> Result<()> {
        let Some(pre) = &self.pre else {
            return Ok(());
        };
        run(pre, &[]).map_err(|status| Error::HookFailed {
            hook: "pre-command",
            command: pre.clone(),
            status,
            consequence: "nothing was backed up".into(),
        })
    }
}

/// Runs `cmd` with `sh -c` and `env` added; returns how it failed, in words.
fn run(cmd: &str, env: &[(&str, String)]) -> std::result::Result<(), String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()));
    for var in [
        "STRATA_BACKUP_STATUS",
        "STRATA_SNAPSHOT_ID",
        "STRATA_BACKUP_ERROR",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    let status = c
        .status()
        .map_err(|e| format!("could not be started ({e})"))?;
    if status.success() {
        Ok(())
    } else {
        Err(describe(status))
    }
}

/// How a process ended, in words: "exited with status 1", "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGQUIT => " (SIGQUIT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("failed ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn process_endings_in_words() {
        let st = ExitStatus::from_raw;
        assert_eq!(describe(st(1 << 8)), "exited with status 1");
        assert_eq!(describe(st(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe(st(40)), "was killed by signal 40");
    }

    fn hooks(dir: &std::path::Path, pre: Option<&str>) -> Hooks {
        let log = dir.join("log");
        Hooks {
            pre: pre.map(|p| format!("{p} && echo pre >> {}", log.display())),
            post: Some(format!(
                "echo \"post $STRATA_BACKUP_STATUS ${{STRATA_SNAPSHOT_ID:-none}} ${{STRATA_BACKUP_ERROR:-}}\" >> {}",
                log.display()
            )),
        }
    }

    #[test]
    fn post_runs_after_success_failure_and_a_failed_pre() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let id = SnapshotId([7; 16]);
        let committed = |w: &bool| Committed { id, warnings: *w };

        let r = hooks(d.path(), Some("true")).around(|| Ok(false), committed);
        assert!(!r.unwrap());
        let r = hooks(d.path(), Some("true")).around(|| Ok(true), committed);
        assert!(r.unwrap());
        let r = hooks(d.path(), Some("true")).around(|| Err::<bool, _>(Error::Aborted), committed);
        assert!(matches!(r, Err(Error::Aborted)));
        let mut ran = false;
        let r = hooks(d.path(), Some("exit 4")).around(
            || {
                ran = true;
                Ok(false)
            },
            committed,
        );
        let msg = r.err().unwrap().to_string();
        assert!(!ran, "a failed pre-command stops the backup");
        assert!(
            msg.contains("pre-command") && msg.contains("exited with status 4"),
            "{msg}"
        );
        assert!(msg.contains("nothing was backed up"), "{msg}");
        let lines = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = lines.lines().map(str::trim_end).collect();
        let hex = id.to_string();
        assert_eq!(
            lines,
            [
                "pre",
                &format!("post success {hex}"),
                "pre",
                &format!("post warning {hex}"),
                "pre",
                "post failure none Backup aborted because another part of it failed",
                &format!("post failure none The pre-command `exit 4 && echo pre >> {}` exited with status 4; nothing was backed up", log.display()),
            ]
        );
    }

    #[test]
    fn a_failed_post_command_fails_a_committed_backup_and_says_it_stays() {
        let id = SnapshotId([9; 16]);
        let h = Hooks {
            pre: None,
            post: Some("kill -9 $$".into()),
        };
        let r = h.around(
            || Ok(()),
            |_| Committed {
                id,
                warnings: false,
            },
        );
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("was killed by signal 9 (SIGKILL)"), "{msg}");
        assert!(
            msg.contains(&format!("snapshot {} was committed and stays", id.short())),
            "{msg}"
        );
    }
}
