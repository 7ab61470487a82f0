//! What `ls` shows of a snapshot: the entry a path names, a directory's children, or with
//! `recursive` its whole subtree grouped by directory, as `ls -R` groups it. Built on
//! [`View::children`] alone: which entries a directory has (layers, whiteouts) is the view's
//! business, the order they are shown in is this module's.
//!
//! The recursive order lists a directory whole, then each directory in it (name order), depth
//! first: every directory's listing is contiguous, which [`View::walk`]'s pre-order does not give.
//! Memory grows with one directory's listing plus the directories still to list, not with the
//! tree.

use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::layers::{components, join, View};
use crate::repo::Repo;

/// The entries `ls` shows for `path` (a snapshot-relative path; empty, `.` and `/` components are
/// dropped, `..` refused): `path` itself when it is not a directory, else its children, and with
/// `recursive` everything below it. Paths are relative to the snapshot root.
pub fn list<'a>(view: &'a View<Repo>, path: &[u8], recursive: bool) -> Result<Listing<'a>> {
    let rel = components(path)?.join(&b'/');
    let entry = view.lookup(&rel)?;
    let mut listing = Listing {
        view,
        recursive,
        ready: Vec::new(),
        pending: Vec::new(),
    };
    if entry.kind == Kind::Dir {
        listing.pending.push(rel);
    } else {
        listing.ready.push((rel, entry));
    }
    Ok(listing)
}

/// Iterator over what [`list`] shows: (snapshot-relative path, entry). After an error it ends.
pub struct Listing<'a> {
    view: &'a View<Repo>,
    recursive: bool,
    /// The rest of the directory being shown, reversed (next entry last).
    ready: Vec<(Vec<u8>, Entry)>,
    /// Directories still to list, the next one last.
    pending: Vec<Vec<u8>>,
}

impl Listing<'_> {
    /// Reads the next directory to show into `ready`. Each directory is read to its end before
    /// any of it is shown, so one that cannot be read shows none of its entries.
    fn fill(&mut self) -> Result<bool> {
        let Some(dir) = self.pending.pop() else {
            return Ok(false);
        };
        let mut children = Vec::new();
        let mut subdirs = Vec::new();
        for child in self.view.children(&dir)? {
            let (name, entry) = child?;
            let path = join(&dir, &name);
            if self.recursive && entry.kind == Kind::Dir {
                subdirs.push(path.clone());
            }
            children.push((path, entry));
        }
        children.reverse();
        self.ready = children;
        self.pending.extend(subdirs.into_iter().rev());
        Ok(true)
    }
}

impl Iterator for Listing<'_> {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.pop() {
                return Some(Ok(item));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.pending.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BackupKind;
    use crate::testutil::snap;

    fn paths(view: &View<Repo>, path: &[u8], recursive: bool) -> Vec<String> {
        list(view, path, recursive)
            .unwrap()
            .map(|r| String::from_utf8(r.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn recursive_listing_is_grouped_by_directory_and_holds_what_walk_holds() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        for d in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        for f in ["a/b/c/f", "a/b/g", "a/h", "e/i", "j"] {
            std::fs::write(src.join(f), f).unwrap();
        }
        let repo = crate::open::Open::new(t.path().join("repo"))
            .create(&Default::default())
            .unwrap();
        snap(&repo, &src, BackupKind::Full);
        std::fs::remove_file(src.join("a/h")).unwrap();
        std::fs::write(src.join("a/d/k"), b"k").unwrap();
        let s = snap(&repo, &src, BackupKind::Incremental);
        let view = View::open(&repo, &s.id).unwrap();

        let all = paths(&view, b"", true);
        assert_eq!(
            all,
            ["a", "e", "j", "a/b", "a/d", "a/b/c", "a/b/g", "a/b/c/f", "a/d/k", "e/i"]
        );
        let mut walked: Vec<String> = view
            .walk(b"")
            .unwrap()
            .map(|r| String::from_utf8(r.unwrap().0).unwrap())
            .collect();
        let mut sorted = all.clone();
        walked.sort();
        sorted.sort();
        assert_eq!(sorted, walked);

        assert_eq!(paths(&view, b"a", false), ["a/b", "a/d"]);
        assert_eq!(
            paths(&view, b"./a//b/", true),
            ["a/b/c", "a/b/g", "a/b/c/f"]
        );
        assert_eq!(paths(&view, b"a/b/g", true), ["a/b/g"]);
        assert!(list(&view, b"a/h", false).is_err());
        assert!(list(&view, b"../a", false).is_err());
    }
}
