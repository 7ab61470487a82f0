//! Content: readlink, read (through the chunk cache, with sequential-read detection driving the
//! pack readahead and the directory readahead) and extended attributes.

use super::*;

/// Sequential-read detection per inode, driving the pack readahead.
pub(super) struct SeqState {
    /// The furthest offset read so far.
    pub(super) reached: u64,
    /// Reads in a row that landed near `reached`, up to [`STREAMING_RUN`].
    pub(super) run: u32,
    /// File offset up to which the chunks' pack bytes were asked for.
    pub(super) advised: u64,
}

/// A read landing within this distance of the furthest point read so far continues a stream:
/// the kernel's readahead has a few requests in flight, which workers may finish out of order.
pub(super) const STREAM_SLACK: u64 = 8 << 20;
/// Reads in a row that make a reader streaming.
pub(super) const STREAMING_RUN: u32 = 4;
/// Files whose sequential-read state is kept; the least recently read is dropped beyond it.
pub(super) const SEQ_FILES: NonZeroUsize = NonZeroUsize::new(4096).expect("nonzero");

/// Reads at least this large come from the kernel's readahead of a streaming reader (random and
/// small reads ask for a few pages): the chunks they only partly cover are kept briefly
/// ([`Keep::Briefly`]).
pub const STREAM_REQUEST: usize = 256 << 10;
/// How far past a sequential reader the pack bytes of the coming chunks are asked into the page
/// cache (`will_need`), in steps of at least [`PACK_AHEAD_STEP`]: the disk keeps streaming while
/// the chunks in hand are decoded and verified. The pack backend says how far
/// (`PackBackend::read_ahead`: 32 MiB for a disk, more for object storage).
pub(super) const PACK_AHEAD_STEP: u64 = 8 << 20;

/// Up to `size` bytes of `data` at `offset` (fewer at its end).
pub(super) fn slice_at(data: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
}

impl Vfs {
    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        match &*self.node(ino)? {
            Node::Virtual(k) => self.link_target(k, &self.snap_list()),
            Node::Content { entry, .. } if entry.kind == Kind::Symlink => Ok(entry.target.clone()),
            _ => Err(VfsError::InvalidKind),
        }
    }

    /// Checks that `ino` can be opened for reading; directories and other kinds are refused.
    pub fn open_file(&self, ino: u64, write: bool) -> VfsResult<()> {
        if write {
            return Err(VfsError::ReadOnly);
        }
        match &*self.node(ino)? {
            Node::Content { entry, .. } if entry.kind == Kind::Dir => Err(VfsError::IsADirectory),
            Node::Virtual(VKey::Latest | VKey::SourceLatest(_)) => Err(VfsError::InvalidKind),
            Node::Virtual(VKey::StatsFile) => Ok(()),
            Node::Virtual(_) | Node::Versions { .. } => Err(VfsError::IsADirectory),
            _ => Ok(()),
        }
    }

    /// Up to `size` bytes at `offset` (fewer at end of file; holes read as zeros).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> VfsResult<Vec<u8>> {
        self.read_with(ino, offset, size, |d| d.to_vec())
    }

    /// Like [`Vfs::read`], but hands the bytes to `out` instead of returning a new buffer: a read
    /// inside one chunk is the cached chunk's slice (no copy); a read spanning chunks or holes is
    /// assembled in a per-thread buffer that is reused from read to read (no allocation, no page
    /// faults on the streaming path).
    pub fn read_with<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        mut out: impl FnMut(&[u8]) -> R,
    ) -> VfsResult<R> {
        let node = self.node(ino)?;
        // The copy of the index the read starts in: a read that fails after the view moved on
        // (a prune moved the chunk) is tried again.
        let copy = self.gen().copy;
        match &*node {
            Node::Deleted { data, .. } => Ok(out(slice_at(data, offset, size))),
            Node::Virtual(VKey::StatsFile) => {
                Ok(out(slice_at(&self.stats_content().data, offset, size)))
            }
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => match entry.kind {
                Kind::File => match self
                    .read_entry(entry, offset, size as usize, &mut out)
                    .or_else(|e| self.read_again(e, copy, entry, offset, size as usize, &mut out))
                {
                    Ok((r, len)) => {
                        self.after_read(ino, entry, offset, len);
                        Ok(r)
                    }
                    Err(e) => {
                        let path = self.content_path(snap, *changes, path);
                        log::error!("Reading {path} at offset {offset}: {e}");
                        Err(repo_err(|| path)(e))
                    }
                },
                Kind::Dir => Err(VfsError::IsADirectory),
                _ => Err(VfsError::InvalidKind),
            },
            Node::Virtual(_) | Node::Versions { .. } => Err(VfsError::IsADirectory),
        }
    }

    /// A read that started in copy `copy` failed: if the view moved on since, or the repository
    /// changed (a prune may have moved the chunk), reads once more in the newest copy; else returns
    /// the error. A stale location never yields other bytes: every record read is verified
    /// against the chunk id it was asked for.
    fn read_again<R>(
        &self,
        e: crate::Error,
        copy: u64,
        entry: &Entry,
        offset: u64,
        len: usize,
        out: impl FnMut(&[u8]) -> R,
    ) -> crate::Result<(R, u64)> {
        let Some(keeper) = &self.keeper else {
            return Err(e);
        };
        if self.gen().copy == copy && !keeper.committed_since(copy) {
            return Err(e);
        }
        log::info!("A read failed ({e}); trying again in the newest copy of the index");
        self.refresh()?;
        self.read_entry(entry, offset, len, out)
    }

    /// Reads `[offset, offset + len)` of a file (clipped to its size) and hands it to `out`;
    /// returns `out`'s result and the number of bytes handed over. Binary search finds the first
    /// chunk; holes are zeros.
    pub(super) fn read_entry<R>(
        &self,
        entry: &Entry,
        offset: u64,
        len: usize,
        mut out: impl FnMut(&[u8]) -> R,
    ) -> crate::Result<(R, u64)> {
        if offset >= entry.size || len == 0 {
            return Ok((out(&[]), 0));
        }
        let end = entry.size.min(offset + len as u64);
        let keep = if len >= STREAM_REQUEST {
            Keep::Briefly
        } else {
            Keep::Lru
        };
        let first = entry.chunk_at(offset);
        if let Some(c) = entry.chunks.get(first) {
            if c.offset <= offset && end <= c.offset + c.len as u64 {
                let data = self.cache.get(&c.id, keep)?;
                let from = (offset - c.offset) as usize;
                let to = ((end - c.offset) as usize).min(data.len());
                let from = from.min(to);
                return Ok((out(&data[from..to]), (to - from) as u64));
            }
        }
        thread_local! {
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        READ_BUF.with(|b| {
            let buf = &mut *b.borrow_mut();
            let n = crate::content::read_range_into(entry, offset, len, buf, |c, direct| {
                Ok(match direct {
                    Some(out) => {
                        self.cache.append(&c.id, out)?;
                        Fetched::Appended
                    }
                    None => Fetched::Shared(self.cache.get(&c.id, keep)?),
                })
            })?;
            let r = out(buf);
            // Keep one request's worth (the kernel asks for at most 1 MiB); free anything larger.
            if buf.capacity() > 2 << 20 {
                *buf = Vec::new();
            }
            Ok((r, n))
        })
    }

    /// Sequential-read detection: once reads of `ino` keep landing near the furthest point read
    /// so far ([`STREAMING_RUN`] in a row), the chunks in the next `read_ahead` bytes of the
    /// file go to the lookup threads (see the `ahead` module), a step at a time: they look up
    /// the chunks' locations and ask their pack bytes into the page cache. The kernel's own
    /// readahead (up to 4 MiB, several requests served in parallel) already keeps the workers
    /// busy decoding ahead of the reader; this keeps the index and the disk busy ahead of them.
    pub(super) fn after_read(&self, ino: u64, entry: &Entry, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = offset + len;
        let ahead = self.read_ahead;
        let advise = {
            let mut seq = lock(&self.seq);
            let st = seq.get_or_insert_mut(ino, || SeqState {
                reached: 0,
                run: 0,
                advised: 0,
            });
            let near = offset <= st.reached.saturating_add(STREAM_SLACK)
                && end.saturating_add(STREAM_SLACK) >= st.reached;
            if near {
                st.run = (st.run + 1).min(STREAMING_RUN);
                st.reached = st.reached.max(end);
            } else {
                st.run = 0;
                st.reached = end;
                st.advised = end;
            }
            st.advised = st.advised.max(st.reached);
            let mut advise = None;
            if st.run == STREAMING_RUN && st.advised < end + ahead - PACK_AHEAD_STEP {
                advise = Some((st.advised, (end + ahead).min(entry.size)));
                st.advised = end + ahead;
            }
            advise
        };
        if let Some((from, to)) = advise {
            let first = entry.chunk_at(from);
            let ids = entry.chunks[first.min(entry.chunks.len())..]
                .iter()
                .take_while(|c| c.offset < to)
                .map(|c| c.id)
                .collect();
            self.ahead.request(ids);
        }
    }

    /// Directory readahead (see the `dirahead` module): `ino` was just read from its start; these files of
    /// the same directory, (inode, size), are worth handing to the kernel now. Empty for anything
    /// that is not a file of a snapshot or `changes/` tree.
    pub fn files_to_push(&self, ino: u64) -> Vec<(u64, u64)> {
        let Ok(node) = self.node(ino) else {
            return Vec::new();
        };
        let Node::Content { parent, entry, .. } = &*node else {
            return Vec::new();
        };
        if entry.kind != Kind::File {
            return Vec::new();
        }
        let parent = *parent;
        if !lock(&self.dirahead).knows(parent) {
            // Built outside the lock: a large directory must not stall other readers. Only
            // files the kernel can know are listed (a push of another is refused), and a
            // directory too large to list in memory gets none.
            let files = self
                .known_files(parent, dirahead::MAX_LISTED)
                .unwrap_or_default();
            lock(&self.dirahead).insert(parent, Arc::new(files));
        }
        lock(&self.dirahead).on_read(parent, ino)
    }

    /// Names of the extended attributes, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let mut out = Vec::new();
        if let Node::Content { entry, .. } = &*self.node(ino)? {
            for (n, _) in &entry.xattrs {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Value of one extended attribute.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        match &*self.node(ino)? {
            Node::Content { entry, .. } => entry
                .xattrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or(VfsError::NoXattr),
            _ => Err(VfsError::NoXattr),
        }
    }
}
