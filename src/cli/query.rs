//! `strata diff`, `strata find`, `strata log`: argument types, and human and `--json` output
//! (JSON forms documented in README.md). The work is done by `crate::diff` and `crate::history`.
//!
//! `diff` exits like diff(1): 0 no differences, 1 differences, 2 trouble (any error, including
//! usage errors, which clap reports with 2 as well).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::json::{
    self, DiffHeadJson, DiffItemJson, DiffSideJson, DiffSummaryJson, FindJson, FindMatchJson,
    FindStatsJson, LogJson, LogSourceJson, PathJson, SnapRefJson,
};
use super::output::human_size;
use super::{path_bytes, HelpOrder, EXIT_DIFFERENCES, EXIT_OK, EXIT_TROUBLE};
use crate::diff::{self, Change, DiffItem, DiffOptions, DiffSummary, Method};
use crate::entry::{Entry, Kind};
use crate::history::{self, Bound, Event, FindOptions, Pattern, Step};
use crate::layers::View;
use crate::repo::Repo;
use crate::snapshot;
use crate::{Error, Result};

/// `strata diff`
#[derive(Args, Debug)]
#[command(
    help_order = &["live", "content", "excludes", "source", "json"],
    mut_arg("content", |a| a.requires("live")),
    mut_arg("excludes", |a| a.requires("live")),
)]
pub struct DiffArgs {
    /// Old snapshot: id, unique id prefix, or `latest`
    pub old: String,
    /// New snapshot (with --live: the PATH to restrict to, if any)
    #[arg(value_name = "NEW")]
    pub new: Option<String>,
    /// The subtree, and how to compare
    #[command(flatten)]
    pub options: DiffOptions,
    /// Compare the old snapshot with this directory on disk instead of a second snapshot
    #[arg(long, value_name = "DIR")]
    pub live: Option<PathBuf>,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata find`
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob: without `/` it matches file names, with `/` whole snapshot-relative paths (`**` spans
    /// directories)
    pub pattern: String,
    /// Only snapshots of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots taken at or after T (RFC 3339, e.g. 2026-11-20T02:00:00Z, or a date, UTC)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Only snapshots taken at or before T (a date includes that whole day)
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata log`
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Path relative to the snapshot root
    pub path: PathBuf,
    /// Only this source [default: every source whose snapshots contain the path]
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        context: "Writing",
        path: "standard output".into(),
        source: e,
    }
}

fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn short_hash(e: &Entry) -> String {
    history::content_hash(e).map_or_else(|| "-".into(), |h| h[..12].to_string())
}

// ----- diff -----

/// One of the two diff runs, given where to send the differences.
type RunDiff<'a> = dyn FnOnce(&mut diff::Sink<'_>) -> Result<DiffSummary> + 'a;

/// Runs `strata diff`; every error is reported here and becomes exit code 2.
pub fn diff(path: &std::path::Path, a: DiffArgs) -> i32 {
    match crate::ops::read_only(path, |repo| diff_inner(repo, a)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e}");
            EXIT_TROUBLE
        }
    }
}

fn diff_inner(repo: &Arc<Repo>, mut a: DiffArgs) -> Result<i32> {
    let mut opts = a.options;
    if a.live.is_some() && opts.path.is_none() {
        opts.path = a.new.take().map(String::into_bytes);
    }
    if a.live.is_some() && a.new.is_some() {
        return Err(Error::InvalidArgument(
            "Give either a second snapshot or --live DIR, not both".into(),
        ));
    }
    let old = snapshot::find(repo, &a.old, a.source.as_deref())?;
    let va = View::open(repo, &old.id)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let new_side;
    let run: Box<RunDiff<'_>> = match &a.live {
        Some(dir) => {
            new_side = DiffSideJson::Live {
                live: dir.display().to_string(),
            };
            let dir = dir.clone();
            let va = &va;
            let opts = opts.clone();
            Box::new(move |sink| diff::diff_live(va, &dir, &opts, sink))
        }
        None => {
            let name = a.new.as_deref().ok_or_else(|| {
                Error::InvalidArgument("Give a second snapshot or --live DIR".into())
            })?;
            let new = snapshot::find(repo, name, a.source.as_deref())?;
            new_side = DiffSideJson::Snapshot(SnapRefJson::new(&new));
            let vb = View::open(repo, &new.id)?;
            let va = &va;
            let opts = opts.clone();
            Box::new(move |sink| diff::diff_snapshots(va, &vb, &opts, sink))
        }
    };
    let json_mode = a.json;
    let mut first = true;
    if json_mode {
        let head = json::line(&DiffHeadJson {
            old: SnapRefJson::new(&old),
            new: new_side,
            path: opts
                .path
                .as_deref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        });
        // Stream: the object's opening fields, then the changes one by one.
        write!(out, "{},\"changes\":[", &head[..head.len() - 1]).map_err(stdout_err)?;
    }
    let mut sink = |item: DiffItem| -> Result<()> {
        if json_mode {
            let sep = if first { "\n" } else { ",\n" };
            first = false;
            write!(out, "{sep}{}", json::line(&DiffItemJson::new(&item))).map_err(stdout_err)
        } else {
            diff_item_line(&mut out, &item).map_err(stdout_err)
        }
    };
    let summary = match run(&mut sink) {
        Ok(s) => s,
        Err(e) if is_broken_pipe(&e) => return Ok(EXIT_DIFFERENCES),
        Err(e) => return Err(e),
    };
    let r = if json_mode {
        writeln!(
            out,
            "\n],\"summary\":{}}}",
            json::line(&DiffSummaryJson::new(&summary))
        )
    } else {
        writeln!(out, "{}", summary_line(&summary))
    };
    match r.and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(stdout_err(e)),
        _ => {}
    }
    Ok(if summary.total() == 0 {
        EXIT_OK
    } else {
        EXIT_DIFFERENCES
    })
}

fn display_path(item: &DiffItem) -> Vec<u8> {
    let mut p = if item.path.is_empty() {
        b".".to_vec()
    } else {
        item.path.clone()
    };
    let dir = item.new.as_ref().or(item.old.as_ref()).map(|e| e.kind) == Some(Kind::Dir);
    if dir {
        p.push(b'/');
    }
    p
}

/// One human line: `+` added, `-` removed, `M` content modified, `m` metadata only, `T` type
/// changed; then the path (directories end in `/`) and, for `M`/`m`/`T`, what changed.
fn diff_item_line(out: &mut dyn Write, item: &DiffItem) -> std::io::Result<()> {
    let tag = match item.change {
        Change::Added => "+",
        Change::Removed => "-",
        Change::TypeChanged => "T",
        Change::Modified if item.metadata_only() => "m",
        Change::Modified => "M",
    };
    write!(out, "{tag} ")?;
    out.write_all(&display_path(item))?;
    match item.change {
        Change::Modified => {
            let names: Vec<&str> = item.fields.iter().map(|f| f.name()).collect();
            write!(out, "  [{}]", names.join(", "))?;
        }
        Change::TypeChanged => {
            let (o, n) = (item.old.as_ref().unwrap(), item.new.as_ref().unwrap());
            write!(out, "  [{} -> {}]", o.kind.name(), n.kind.name())?;
        }
        _ => {}
    }
    writeln!(out)
}

fn summary_line(s: &DiffSummary) -> String {
    let how = match &s.method {
        Method::Layers(l) => format!("{} layer(s) in between", l.len()),
        Method::FullWalk => "a walk of both trees".into(),
        Method::Live => format!("a walk of both trees, {} file(s) read", s.files_read),
    };
    format!(
        "{} added, {} removed, {} modified ({} content, {} metadata only), {} type changed; \
         {} paths examined via {how}",
        s.added,
        s.removed,
        s.content_modified + s.metadata_modified,
        s.content_modified,
        s.metadata_modified,
        s.type_changed,
        s.paths_examined
    )
}

// ----- find -----

/// Runs `strata find`.
pub fn find(repo: &Arc<Repo>, a: FindArgs) -> Result<i32> {
    let pattern = Pattern::new(&a.pattern)?;
    let opts = FindOptions {
        source: a.source.clone(),
        since_ns: a
            .since
            .as_deref()
            .map(|t| history::parse_time(t, Bound::Start))
            .transpose()?,
        until_ns: a
            .until
            .as_deref()
            .map(|t| history::parse_time(t, Bound::End))
            .transpose()?,
    };
    let (matches, stats) = history::find(repo, &pattern, &opts)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = (|| -> std::io::Result<()> {
        if a.json {
            let v = FindJson {
                pattern: &a.pattern,
                matches: matches
                    .iter()
                    .map(|m| FindMatchJson::new(&m.path, &m.hits))
                    .collect(),
                stats: FindStatsJson::new(&stats),
            };
            writeln!(out, "{}", json::pretty(&v))?;
        } else {
            for m in &matches {
                out.write_all(&m.path)?;
                writeln!(out)?;
                for (s, e) in &m.hits {
                    writeln!(
                        out,
                        "  {}  {}  {:<12}  {:<7}  {:>10}  mtime {}  hash {}",
                        s.time_rfc3339(),
                        s.id.short(),
                        s.kind.name(),
                        e.kind.name(),
                        human_size(e.size),
                        crate::time::rfc3339(e.mtime_ns),
                        short_hash(e)
                    )?;
                }
            }
            writeln!(
                out,
                "{} path(s) in {} snapshot(s); {} layer(s), {} entries scanned",
                matches.len(),
                stats.snapshots,
                stats.layers_scanned,
                stats.entries_scanned
            )?;
        }
        out.flush()
    })();
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(EXIT_OK),
    }
}

// ----- log -----

/// Runs `strata log`.
pub fn log(repo: &Arc<Repo>, a: LogArgs) -> Result<i32> {
    let path = crate::layers::components(path_bytes(&a.path))?.join(&b'/');
    let mut histories: Vec<(String, Vec<Step>)> = Vec::new();
    for (source, snaps) in history::by_source(repo, a.source.as_deref())? {
        let steps = history::log(repo, &snaps, &path)?;
        if !steps.is_empty() {
            histories.push((source, steps));
        }
    }
    if histories.is_empty() {
        return Err(Error::PathNeverPresent {
            path: String::from_utf8_lossy(&path).into_owned(),
            within: a
                .source
                .as_deref()
                .map_or_else(|| "any source".into(), |s| format!("source {s}")),
        });
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = (|| -> std::io::Result<()> {
        if a.json {
            let v = LogJson {
                path: PathJson::new(&path),
                sources: histories
                    .iter()
                    .map(|(src, steps)| LogSourceJson::new(src, steps))
                    .collect(),
            };
            writeln!(out, "{}", json::pretty(&v))?;
        } else {
            for (src, steps) in &histories {
                let versions = steps.iter().filter(|s| s.entry.is_some()).count();
                out.write_all(if path.is_empty() { b"." } else { &path })?;
                writeln!(out, " in {src}: {versions} version(s)")?;
                for s in steps {
                    step_line(&mut out, s)?;
                }
            }
        }
        out.flush()
    })();
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(EXIT_OK),
    }
}

fn step_line(out: &mut dyn Write, s: &Step) -> std::io::Result<()> {
    write!(
        out,
        "  {}  {}  {:<9}",
        s.first.time_rfc3339(),
        s.first.id.short(),
        s.event.name()
    )?;
    match &s.entry {
        None if s.event == Event::Deleted => {}
        None => {}
        Some(e) => write!(
            out,
            "  {:<7}  {:>10}  hash {}  layer {}",
            e.kind.name(),
            human_size(e.size),
            short_hash(e),
            s.layer.map_or_else(|| "-".into(), |l| l.short())
        )?,
    }
    let plural = if s.snapshots == 1 { "" } else { "s" };
    writeln!(out, "  ({} snapshot{plural})", s.snapshots)
}
