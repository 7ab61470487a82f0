//! The metrics file on disk: read the previous file, apply one run's changes, write the result
//! atomically (a temporary file in the same directory, fsynced, renamed over the old one, the
//! directory fsynced), so node_exporter's textfile collector never reads half a file. Writers
//! of one directory take turns (an exclusive `flock` on the directory), so that a backup and a
//! check ending at the same moment both keep their series.
//!
//! The temporary file is named `.NAME.tmp-PID`: it neither ends in `.prom` (the collector only
//! reads those) nor stays behind after a successful write.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::families;
use super::text::{self, Family, Labels, Sample};
use crate::error::{IoContext, Result};

/// What one run changes in the file. Series of other commands, sources and repositories are
/// kept as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Series removed first: those of family `.0` whose labels include every pair of `.1`.
    pub remove: Vec<(&'static str, Labels)>,
    /// Series set to a value (gauges).
    pub set: Vec<Sample>,
    /// Series added to (counters); a series the file does not have yet starts at 0.
    pub add: Vec<Sample>,
}

/// Applies `changes` to the families of the previous file. Families strata knows are written
/// with their own help and type, in the order of [`families::FILE`]; others (another program's,
/// or an older strata's) are kept after them as they were.
pub fn apply(previous: Vec<Family>, changes: &Changes) -> Vec<Family> {
    let mut samples: Vec<Sample> = previous
        .iter()
        .flat_map(|f| f.samples.iter().cloned())
        .filter(|s| {
            !changes
                .remove
                .iter()
                .any(|(name, labels)| s.name == *name && s.has_labels(labels))
        })
        .collect();
    let mut upsert =
        |new: Sample, add: bool| match samples.iter_mut().find(|s| s.is(&new.name, &new.labels)) {
            Some(s) if add => s.value += new.value,
            Some(s) => s.value = new.value,
            None => samples.push(new),
        };
    for s in &changes.set {
        upsert(s.clone(), false);
    }
    for s in &changes.add {
        upsert(s.clone(), true);
    }
    let mut out: Vec<Family> = families::FILE
        .iter()
        .map(|d| Family {
            name: d.name.to_string(),
            help: d.help.to_string(),
            kind: d.kind,
            samples: Vec::new(),
        })
        .collect();
    for f in &previous {
        if families::file_def(&f.name).is_none() {
            out.push(Family {
                samples: Vec::new(),
                ..f.clone()
            });
        }
    }
    // Each sample goes back to its family: a known family by name; an unknown one through the
    // family the previous file had it in (a histogram's `_bucket` belongs to its base name).
    for s in samples {
        let fam = match families::file_def(&s.name) {
            Some(d) => d.name.to_string(),
            None => previous
                .iter()
                .find(|f| f.samples.iter().any(|p| p.name == s.name))
                .map_or_else(|| s.name.clone(), |f| f.name.clone()),
        };
        match out.iter_mut().find(|f| f.name == fam) {
            Some(f) => f.samples.push(s),
            None => out.push(Family {
                name: fam,
                help: String::new(),
                kind: text::Kind::Untyped,
                samples: vec![s],
            }),
        }
    }
    for f in &mut out {
        if families::file_def(&f.name).is_some() {
            f.samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
    }
    out
}

/// Reads the file at `path` (absent: empty), applies `changes` and writes it back atomically.
/// Lines of the previous file that cannot be read are dropped, with a warning.
pub fn update(path: &Path, changes: &Changes) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| {
            crate::Error::InvalidArgument(format!("Metrics file {} names no file", path.display()))
        })?
        .to_string_lossy()
        .into_owned();
    let dir_handle = std::fs::File::open(&dir).ctx("Opening metrics directory", &dir)?;
    rustix::fs::flock(&dir_handle, rustix::fs::FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)
        .ctx("Locking metrics directory", &dir)?;
    let previous = match std::fs::read_to_string(path) {
        Ok(t) => {
            let p = text::parse(&t);
            if !p.skipped.is_empty() {
                log::warn!(
                    "Metrics file {}: dropped {} line(s) that are not in the text format, e.g. {:?}",
                    path.display(),
                    p.skipped.len(),
                    p.skipped[0]
                );
            }
            p.families
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx("Reading metrics file", path),
    };
    let body = text::render(&apply(previous, changes));
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // Readable by the collector, which usually runs as another user, whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(body.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).ctx("Writing metrics file", &tmp);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).ctx("Renaming metrics file into place", path);
    }
    crate::fsio::sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[(&str, &str)]) -> Labels {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn apply_replaces_adds_and_keeps_the_rest() {
        let prev = text::parse(
            "# HELP strata_runs_total x\n# TYPE strata_runs_total counter\n\
             strata_runs_total{command=\"check\",result=\"success\"} 2\n\
             strata_runs_total{command=\"prune\",result=\"success\"} 5\n\
             # TYPE other_metric gauge\nother_metric{a=\"b\"} 7\n\
             strata_source_snapshots{repository=\"/r\",source=\"gone\"} 1\n\
             strata_source_snapshots{repository=\"/q\",source=\"x\"} 4\n",
        )
        .families;
        let changes = Changes {
            remove: vec![("strata_source_snapshots", labels(&[("repository", "/r")]))],
            set: vec![Sample::new(
                "strata_source_snapshots",
                &[("repository", "/r"), ("source", "new")],
                3.0,
            )],
            add: vec![
                Sample::new(
                    "strata_runs_total",
                    &[("command", "check"), ("result", "success")],
                    1.0,
                ),
                Sample::new(
                    "strata_runs_total",
                    &[("command", "check"), ("result", "failure")],
                    1.0,
                ),
            ],
        };
        let out = text::render(&apply(prev, &changes));
        assert!(out.contains("strata_runs_total{command=\"check\",result=\"success\"} 3\n"));
        assert!(out.contains("strata_runs_total{command=\"check\",result=\"failure\"} 1\n"));
        assert!(out.contains("strata_runs_total{command=\"prune\",result=\"success\"} 5\n"));
        assert!(out.contains("other_metric{a=\"b\"} 7\n"));
        assert!(out.contains("# TYPE other_metric gauge\n"));
        assert!(!out.contains("gone"));
        assert!(out.contains("{repository=\"/q\",source=\"x\"} 4\n"));
        assert!(out.contains("{repository=\"/r\",source=\"new\"} 3\n"));
        // The known family has its own help, whatever the file said.
        assert!(out.contains(&format!(
            "# HELP strata_runs_total {}\n",
            families::RUNS.help
        )));
    }

    #[test]
    fn update_writes_atomically_and_merges() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("host.prom");
        let set = |v: f64| Changes {
            set: vec![Sample::new(
                "strata_last_run_success",
                &[("command", "check")],
                v,
            )],
            ..Default::default()
        };
        update(&p, &set(1.0)).unwrap();
        update(
            &p,
            &Changes {
                set: vec![Sample::new(
                    "strata_last_run_success",
                    &[("command", "prune")],
                    0.0,
                )],
                ..Default::default()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("strata_last_run_success{command=\"check\"} 1\n"));
        assert!(text.contains("strata_last_run_success{command=\"prune\"} 0\n"));
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["host.prom"], "no temporary file is left behind");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by the collector's user");
        assert!(update(&t.path().join("missing/x.prom"), &set(1.0)).is_err());
    }
}
