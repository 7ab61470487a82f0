//! `diff --live`: a snapshot against a directory on disk. Always a merge walk of both trees; a
//! file whose size and mtime match the snapshot is not read unless `content` is set, others of
//! equal size are read and chunked exactly as a backup would (data segments, chunker, blake3) and
//! compared by chunk list. The repository directory itself is skipped.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{
    compare_meta, merge_sorted, normalize, resolve, Change, DiffItem, DiffOptions, DiffSummary,
    Field, Method, Sink,
};
use crate::chunker::{ChunkError, Chunker};
use crate::entry::{ChunkRef, Entry, Kind};
use crate::error::{Error, IoContext, Result};
use crate::fsmeta;
use crate::layers::{join, View};

/// Compares snapshot view `a` (old) with the directory `root` on disk (new).
pub fn diff_live(
    a: &View,
    root: &Path,
    opts: &DiffOptions,
    sink: &mut Sink<'_>,
) -> Result<DiffSummary> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::SourceMissing(root.to_path_buf()),
        _ => Error::Io {
            context: "Reading",
            path: root.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(Error::SourceNotDir(root.to_path_buf()));
    }
    let repo_dir = fs::metadata(a.repo().path())
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut w = LiveWalker {
        a,
        excludes: crate::backup::build_excludes(&opts.excludes)?,
        repo_dir,
        content: opts.content,
        chunker: None,
        sink,
        summary: DiffSummary::new(Method::Live),
    };
    let path = normalize(opts.path.as_deref())?;
    let abs = if path.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(&path))
    };
    let ea = resolve(a, &path)?;
    let eb = w.live_entry(&abs)?;
    if ea.is_none() && eb.is_none() {
        return Err(Error::PathNotFound {
            snapshot: a.snapshot().id.short(),
            path: String::from_utf8_lossy(&path).into_owned(),
        });
    }
    w.summary.paths_examined += 1;
    w.pair(&path, &abs, ea, eb)?;
    Ok(w.summary)
}

struct LiveWalker<'v, 's, 'k> {
    a: &'v View,
    excludes: globset::GlobSet,
    repo_dir: Option<(u64, u64)>,
    content: bool,
    chunker: Option<Chunker>,
    sink: &'k mut Sink<'s>,
    summary: DiffSummary,
}

impl LiveWalker<'_, '_, '_> {
    /// The entry for a path on disk, without content; `None` when it does not exist.
    fn live_entry(&self, path: &Path) -> Result<Option<Entry>> {
        let m = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("Reading metadata of", path),
        };
        let mut e = fsmeta::entry_from_meta(&m);
        if e.kind == Kind::Symlink {
            e.target = fs::read_link(path)
                .ctx("Reading symlink", path)?
                .into_os_string()
                .into_vec();
        }
        e.xattrs = fsmeta::read_xattrs(path).ctx("Reading extended attributes of", path)?;
        Ok(Some(e))
    }

    fn emit(&mut self, item: DiffItem) -> Result<()> {
        self.summary.count(&item);
        (self.sink)(item)
    }

    /// Chunk list of a file on disk, exactly as backup would store it (data segments, chunker,
    /// blake3).
    fn chunks_of(&mut self, path: &Path) -> Result<Vec<ChunkRef>> {
        let mut f = fs::File::open(path).ctx("Opening", path)?;
        let size = f.metadata().ctx("Reading metadata of", path)?.len();
        let chunker = self.chunker.get_or_insert_with(Chunker::new);
        let mut chunks = Vec::new();
        for (start, end) in fsmeta::data_segments(&f, size) {
            f.seek(SeekFrom::Start(start)).ctx("Seeking in", path)?;
            let r = chunker.for_each((&mut f).take(end - start), |off, data| {
                chunks.push(ChunkRef {
                    id: self.a.repo().chunk_id(data),
                    offset: start + off,
                    len: data.len() as u32,
                });
                Ok(())
            });
            match r {
                Ok(()) => {}
                Err(ChunkError::Read(e)) => return Err(e).ctx("Reading", path),
                Err(ChunkError::Sink(e)) => return Err(e),
            }
        }
        self.summary.files_read += 1;
        Ok(chunks)
    }

    fn pair(
        &mut self,
        path: &[u8],
        abs: &Path,
        ea: Option<Entry>,
        eb: Option<Entry>,
    ) -> Result<()> {
        match (ea, eb) {
            (None, None) => Ok(()),
            (None, Some(b)) => self.one_side(path, abs, b, Change::Added),
            (Some(a), None) => self.one_side(path, abs, a, Change::Removed),
            (Some(a), Some(b)) if a.kind != b.kind => {
                let (a_dir, b_dir) = (a.kind == Kind::Dir, b.kind == Kind::Dir);
                self.emit(DiffItem {
                    path: path.to_vec(),
                    change: Change::TypeChanged,
                    old: Some(a),
                    new: Some(b),
                    fields: Vec::new(),
                })?;
                if a_dir {
                    self.subtree_snapshot(path)?;
                }
                if b_dir {
                    self.subtree_live(path, abs)?;
                }
                Ok(())
            }
            (Some(a), Some(mut b)) => {
                let mut fields = compare_meta(&a, &b);
                if a.kind == Kind::File {
                    // The backup's rule: only size, mtime, ctime and inode all equal prove the
                    // content unchanged without reading it (a restored mtime moves the ctime).
                    let same_stat = a.size == b.size
                        && a.mtime_ns == b.mtime_ns
                        && a.ctime_ns == b.ctime_ns
                        && a.ino == b.ino;
                    let changed = if a.size != b.size {
                        true
                    } else if same_stat && !self.content {
                        false
                    } else {
                        b.chunks = self.chunks_of(abs)?;
                        b.chunks != a.chunks
                    };
                    if changed {
                        fields.insert(0, Field::Content);
                    }
                }
                let is_dir = a.kind == Kind::Dir;
                if !fields.is_empty() {
                    self.emit(DiffItem {
                        path: path.to_vec(),
                        change: Change::Modified,
                        old: Some(a),
                        new: Some(b),
                        fields,
                    })?;
                }
                if is_dir {
                    self.dir(path, abs)?;
                }
                Ok(())
            }
        }
    }

    fn one_side(&mut self, path: &[u8], abs: &Path, e: Entry, change: Change) -> Result<()> {
        let dir = e.kind == Kind::Dir;
        self.emit(DiffItem::one_sided(path, e, change))?;
        if dir {
            if change == Change::Added {
                self.subtree_live(path, abs)?;
            } else {
                self.subtree_snapshot(path)?;
            }
        }
        Ok(())
    }

    fn excluded(&self, path: &[u8], name: &[u8]) -> bool {
        crate::backup::is_excluded(&self.excludes, path, name)
    }

    fn subtree_snapshot(&mut self, path: &[u8]) -> Result<()> {
        let children: Vec<(Vec<u8>, Entry)> = self.a.children(path)?.collect::<Result<_>>()?;
        for (name, e) in children {
            if self.excluded(&join(path, &name), &name) {
                continue;
            }
            self.summary.paths_examined += 1;
            let p = join(path, &name);
            self.one_side(&p, Path::new(""), e, Change::Removed)?;
        }
        Ok(())
    }

    fn subtree_live(&mut self, path: &[u8], abs: &Path) -> Result<()> {
        for (name, child) in self.read_dir(abs)? {
            if self.excluded(&join(path, &name), &name) {
                continue;
            }
            self.summary.paths_examined += 1;
            if let Some(e) = self.live_entry(&child)? {
                self.one_side(&join(path, &name), &child, e, Change::Added)?;
            }
        }
        Ok(())
    }

    /// Sorted children of a directory on disk, without the repository itself.
    fn read_dir(&self, abs: &Path) -> Result<Vec<(Vec<u8>, PathBuf)>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(abs).ctx("Listing", abs)? {
            let ent = ent.ctx("Listing", abs)?;
            let p = ent.path();
            if let (Some(r), Ok(m)) = (self.repo_dir, fs::symlink_metadata(&p)) {
                if m.is_dir() && (m.dev(), m.ino()) == r {
                    continue;
                }
            }
            out.push((ent.file_name().into_vec(), p));
        }
        out.sort();
        Ok(out)
    }

    fn dir(&mut self, dir: &[u8], abs: &Path) -> Result<()> {
        let la: Vec<_> = self.a.children(dir)?.collect::<Result<_>>()?;
        let lb = self.read_dir(abs)?;
        for (name, (ea, pb)) in merge_sorted(la, lb) {
            if self.excluded(&join(dir, &name), &name) {
                continue;
            }
            self.summary.paths_examined += 1;
            let child = abs.join(std::ffi::OsStr::from_bytes(&name));
            let eb = match pb {
                Some(p) => self.live_entry(&p)?,
                None => None,
            };
            self.pair(&join(dir, &name), &child, ea, eb)?;
        }
        Ok(())
    }
}
