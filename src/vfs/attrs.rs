//! Attributes: of the synthetic top-level objects, of stored entries, and `getattr`.

use super::*;

impl Vfs {
    pub(super) fn virtual_dir_attr(&self, ino: u64, list: &SnapList) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            perm: 0o555,
            nlink: 2,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size: 0,
            blocks: 0,
            mtime_ns: list.newest_time(),
            rdev: 0,
            immutable: false,
            fleeting: false,
        }
    }

    pub(super) fn link_target(&self, k: &VKey, list: &SnapList) -> VfsResult<Vec<u8>> {
        let snap_link = |name: &str| format!("../../snapshots/{name}").into_bytes();
        match k {
            VKey::Latest => list
                .list
                .last()
                .map(|s| format!("snapshots/{}", s.name).into_bytes())
                .ok_or(VfsError::NotFound),
            VKey::SourceLatest(src) => list
                .sources
                .get(src)
                .and_then(|v| v.last())
                .map(|&i| snap_link(&list.list[i].name))
                .ok_or(VfsError::NotFound),
            VKey::SourceLink(_, n) | VKey::TagLink(_, n) | VKey::KindLink(_, n) => Ok(snap_link(n)),
            _ => Err(VfsError::InvalidKind),
        }
    }

    pub(super) fn link_time(k: &VKey, list: &SnapList) -> i64 {
        let t = |name: &str| {
            list.by_name
                .get(name)
                .map_or(0, |&i| list.list[i].snap.time_ns)
        };
        match k {
            VKey::SourceLink(_, n) | VKey::TagLink(_, n) | VKey::KindLink(_, n) => t(n),
            VKey::SourceLatest(src) => list
                .sources
                .get(src)
                .and_then(|v| v.last())
                .map_or(0, |&i| list.list[i].snap.time_ns),
            _ => list.newest_time(),
        }
    }

    pub(super) fn virtual_attr(&self, ino: u64, k: &VKey) -> VfsResult<Attr> {
        let list = self.snap_list();
        match k {
            VKey::Latest
            | VKey::SourceLatest(_)
            | VKey::SourceLink(..)
            | VKey::TagLink(..)
            | VKey::KindLink(..) => {
                let target = self.link_target(k, &list)?;
                Ok(Attr {
                    ino,
                    kind: FileKind::Symlink,
                    perm: 0o777,
                    nlink: 1,
                    uid: self.opts.uid,
                    gid: self.opts.gid,
                    size: target.len() as u64,
                    blocks: 0,
                    mtime_ns: Self::link_time(k, &list),
                    rdev: 0,
                    // Links to one named snapshot never change; `latest` links do.
                    immutable: !matches!(k, VKey::Latest | VKey::SourceLatest(_)),
                    fleeting: false,
                })
            }
            VKey::StatsFile => {
                let c = self.stats_content();
                Ok(Attr {
                    ino,
                    kind: FileKind::File,
                    perm: 0o444,
                    nlink: 1,
                    uid: self.opts.uid,
                    gid: self.opts.gid,
                    size: c.data.len() as u64,
                    blocks: (c.data.len() as u64).div_ceil(512),
                    mtime_ns: c.time_ns,
                    rdev: 0,
                    immutable: false,
                    fleeting: false,
                })
            }
            _ => Ok(self.virtual_dir_attr(ino, &list)),
        }
    }

    /// Attributes of a stored entry.
    pub(super) fn entry_attr(ino: u64, e: &Entry) -> Attr {
        let kind = match e.kind {
            Kind::File => FileKind::File,
            Kind::Dir => FileKind::Dir,
            Kind::Symlink => FileKind::Symlink,
            Kind::Fifo => FileKind::Fifo,
            Kind::CharDev => FileKind::CharDev,
            Kind::BlockDev => FileKind::BlockDev,
            Kind::Socket => FileKind::Socket,
            // Never interned (lookups treat whiteouts as absent); shown as an empty file if ever.
            Kind::Whiteout => FileKind::File,
        };
        let stored = match e.kind {
            Kind::File => e.stored_size(),
            Kind::Dir => e.size,
            _ => 0,
        };
        Attr {
            ino,
            kind,
            perm: e.mode & 0o7777,
            nlink: e.nlink.max(1),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            blocks: stored.div_ceil(512),
            mtime_ns: e.mtime_ns,
            rdev: e.rdev,
            immutable: true,
            fleeting: false,
        }
    }

    pub(super) fn attr_of(&self, ino: u64, node: &Node) -> VfsResult<Attr> {
        let mut attr = self.node_attr(ino, node)?;
        if !self
            .live
            .forgotten_held
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(attr);
        }
        if let Some(id) = node.snap() {
            if !self.gen().snaps.by_id.contains_key(&id) {
                attr.immutable = false;
                attr.fleeting = true;
            }
        }
        Ok(attr)
    }

    fn node_attr(&self, ino: u64, node: &Node) -> VfsResult<Attr> {
        match node {
            Node::Virtual(k) => self.virtual_attr(ino, k),
            Node::Content { entry, .. } => Ok(Self::entry_attr(ino, entry)),
            Node::Versions { .. } => Ok(self.virtual_dir_attr(ino, &self.snap_list())),
            Node::Deleted { data, mtime_ns, .. } => Ok(Attr {
                ino,
                kind: FileKind::File,
                perm: 0o444,
                nlink: 1,
                uid: self.opts.uid,
                gid: self.opts.gid,
                size: data.len() as u64,
                blocks: (data.len() as u64).div_ceil(512),
                mtime_ns: *mtime_ns,
                rdev: 0,
                immutable: true,
                fleeting: false,
            }),
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        let node = self.node(ino)?;
        self.attr_of(ino, &node)
    }
}
