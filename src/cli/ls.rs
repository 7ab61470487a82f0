//! `strata ls`: one entry, a directory or (`-R`) a subtree as [`crate::listing`] gives it, one line
//! (or JSON object) per entry.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::json::{self, LsEntryJson};
use super::{path_bytes, EXIT_OK};
use crate::entry::{Entry, Kind};
use crate::layers::View;
use crate::repo::Repo;
use crate::snapshot;
use crate::{Error, Result};

/// `strata ls`
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Path inside the snapshot [default: its root]
    pub path: Option<PathBuf>,
    /// Long listing: type, mode, owner, size, modification time
    #[arg(short = 'l', long)]
    pub long: bool,
    /// List subdirectories recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON lines, one object per entry
    #[arg(long)]
    pub json: bool,
}

/// Runs `strata ls`.
pub fn run(repo: &Arc<Repo>, a: LsArgs) -> Result<i32> {
    let snap = snapshot::find(repo, &a.snapshot, a.source.as_deref())?;
    let view = View::open(repo, &snap.id)?;
    let path = a.path.as_deref().map_or(&b""[..], path_bytes);
    let listing = crate::listing::list(&view, path, a.recursive)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let fmt = LsFormat {
        long: a.long,
        json: a.json,
    };
    let res = (|| -> std::io::Result<Result<()>> {
        for item in listing {
            let (path, entry) = match item {
                Ok(item) => item,
                Err(e) => return Ok(Err(e)),
            };
            entry_line(&mut out, &path, &entry, &fmt)?;
        }
        out.flush()?;
        Ok(Ok(()))
    })();
    match res {
        Ok(r) => r.map(|_| EXIT_OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(e) => Err(Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
    }
}

/// How `ls` prints entries.
pub struct LsFormat {
    /// `-l`
    pub long: bool,
    /// `--json`
    pub json: bool,
}

fn mode_string(e: &Entry) -> String {
    let mut s = String::with_capacity(10);
    s.push(e.kind.letter());
    let m = e.mode;
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => m & 0o4000 != 0,
            5 => m & 0o2000 != 0,
            8 => m & 0o1000 != 0,
            _ => false,
        };
        let set = m & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// One `ls` line (or JSON object).
fn entry_line(out: &mut dyn Write, path: &[u8], e: &Entry, f: &LsFormat) -> std::io::Result<()> {
    if f.json {
        return writeln!(out, "{}", json::line(&LsEntryJson::new(path, e)));
    }
    if f.long {
        write!(
            out,
            "{} {:>5} {:>5} {:>12} {} ",
            mode_string(e),
            e.uid,
            e.gid,
            e.size,
            crate::time::rfc3339(e.mtime_ns)
        )?;
    }
    out.write_all(path)?;
    if f.long && e.kind == Kind::Symlink {
        out.write_all(b" -> ")?;
        out.write_all(&e.target)?;
    }
    out.write_all(b"\n")
}
