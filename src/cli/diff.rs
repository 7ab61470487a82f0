//! `strata diff`: arguments, and the human and `--json` output (streamed; the JSON documented in
//! README.md). The work is done by `crate::diff`.
//!
//! `diff` exits like diff(1): 0 no differences, 1 differences, 2 trouble (any error, including
//! usage errors, which clap reports with 2 as well).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::json::{self, DiffHeadJson, DiffItemJson, DiffSideJson, DiffSummaryJson, SnapRefJson};
use super::output::{is_broken_pipe, stdout_err};
use super::{HelpOrder, EXIT_DIFFERENCES, EXIT_OK, EXIT_TROUBLE};
use crate::diff::{self, Change, DiffItem, DiffOptions, DiffSummary, Method};
use crate::entry::Kind;
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

// ----- diff -----

/// One of the two diff runs, given where to send the differences.
type RunDiff<'a> = dyn FnOnce(&mut diff::Sink<'_>) -> Result<DiffSummary> + 'a;

/// Runs `strata diff`; every error is reported here and becomes exit code 2.
pub fn run(path: &std::path::Path, a: DiffArgs) -> i32 {
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
            "\n],\"summary\":{}{}}}",
            json::line(&DiffSummaryJson::new(&summary)),
            json::requests_field()
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
