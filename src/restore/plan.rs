//! What a restore will touch: the snapshot entries under the requested paths, filtered by
//! `--include`/`--exclude`, with unsafe names refused, hard-link groups found and the directories
//! on the way added. Reads the snapshot only through [`View`]; touches no file.
//!
//! The plan is a pre-order list (a directory before its contents) of metadata only; file content
//! is read later, so memory grows with the number of entries restored, never with their size.

use std::collections::HashMap;

use globset::GlobSet;

use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::layers::{components, join, View};

/// What restore does with one planned entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A directory to create (or reuse) and give its metadata.
    Dir,
    /// A file, symlink, FIFO, device or socket written on its own.
    Leaf,
    /// A hard link to the planned item at this index (the group's first path).
    Link(usize),
}

/// One planned entry.
#[derive(Debug)]
pub struct Item {
    /// Snapshot-relative path (root = empty).
    pub rel: Vec<u8>,
    /// Index of the parent directory's item; `None` for the root and for a requested path whose
    /// parent is the target itself.
    pub parent: Option<usize>,
    /// The snapshot's entry.
    pub entry: Entry,
    /// How it is restored.
    pub role: Role,
    /// Directories only: the whole subtree is restored (not only some included paths in it), so
    /// `--delete` may remove what the snapshot does not hold.
    pub whole: bool,
    /// Directories only: every child name the snapshot holds, restored or filtered out.
    pub children: Vec<Vec<u8>>,
    /// A directory above a requested path, not itself requested: if it already exists in the
    /// target, restore leaves its metadata alone.
    pub ancestor: bool,
}

impl Item {
    /// The last path component (empty for the root).
    pub fn name(&self) -> &[u8] {
        match self.rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.rel[i + 1..],
            None => &self.rel,
        }
    }

    /// The parent directory's relative path.
    pub fn dir(&self) -> &[u8] {
        match self.rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.rel[..i],
            None => b"",
        }
    }
}

/// An entry the plan refuses to restore, with why.
#[derive(Debug)]
pub struct Refused {
    /// Snapshot-relative path as stored (may contain the offending bytes).
    pub rel: Vec<u8>,
    /// One line naming the problem.
    pub reason: String,
}

/// The result of planning.
pub struct Plan {
    /// Pre-order: every directory before its contents.
    pub items: Vec<Item>,
    /// Entries refused as unsafe.
    pub refused: Vec<Refused>,
}

/// Why a snapshot name cannot be one path component, if it cannot.
pub fn unsafe_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == b"." || name == b".." {
        Some("name is '.' or '..'")
    } else if name.contains(&b'/') {
        Some("name contains '/'")
    } else if name.contains(&0) {
        Some("name contains a NUL byte")
    } else {
        None
    }
}

struct Walk<'a> {
    view: &'a View,
    includes: &'a GlobSet,
    excludes: &'a GlobSet,
    items: Vec<Item>,
    /// Parallel to `items`: whether the item is restored (selected, or a directory holding one).
    needed: Vec<bool>,
    index: HashMap<Vec<u8>, usize>,
    refused: Vec<Refused>,
}

/// Builds the plan for `paths` (snapshot-relative; empty list = the whole snapshot).
pub fn build(
    view: &View,
    paths: &[Vec<u8>],
    includes: &GlobSet,
    excludes: &GlobSet,
) -> Result<Plan> {
    let mut w = Walk {
        view,
        includes,
        excludes,
        items: Vec::new(),
        needed: Vec::new(),
        index: HashMap::new(),
        refused: Vec::new(),
    };
    let roots: Vec<Vec<u8>> = if paths.is_empty() {
        vec![Vec::new()]
    } else {
        paths
            .iter()
            .map(|p| components(p).map(|c| c.join(&b'/')))
            .collect::<Result<_>>()?
    };
    // Resolve every requested path first: a typo fails the command before anything is written.
    let mut resolved = Vec::new();
    for rel in roots {
        let entry = view.lookup(&rel)?;
        resolved.push((rel, entry));
    }
    for (rel, entry) in resolved {
        if w.index.contains_key(&rel) {
            continue;
        }
        let parent = w.ancestors(&rel)?;
        w.walk(rel, entry, parent, includes.is_empty())?;
    }
    Ok(w.finish())
}

impl Walk<'_> {
    /// Adds the directories above `rel` (not needed on their own); returns the parent's index.
    fn ancestors(&mut self, rel: &[u8]) -> Result<Option<usize>> {
        let comps: Vec<&[u8]> = if rel.is_empty() {
            return Ok(None);
        } else {
            rel.split(|&b| b == b'/').collect()
        };
        let mut parent = None;
        let mut cur = Vec::new();
        for depth in 0..comps.len() {
            // The root ("") and every proper prefix of `rel`.
            if depth > 0 {
                cur = join(&cur, comps[depth - 1]);
            }
            if let Some(&i) = self.index.get(&cur) {
                parent = Some(i);
                continue;
            }
            let entry = self.view.lookup(&cur)?;
            let i = self.push(cur.clone(), entry, parent, Role::Dir, false);
            self.items[i].ancestor = true;
            parent = Some(i);
        }
        Ok(parent)
    }

    fn push(
        &mut self,
        rel: Vec<u8>,
        entry: Entry,
        parent: Option<usize>,
        role: Role,
        needed: bool,
    ) -> usize {
        let i = self.items.len();
        self.index.insert(rel.clone(), i);
        self.items.push(Item {
            rel,
            parent,
            entry,
            role,
            whole: false,
            children: Vec::new(),
            ancestor: false,
        });
        self.needed.push(needed);
        i
    }

    /// Depth-first walk from one requested path; `selected` is whether an ancestor matched an
    /// include (or there are no includes).
    fn walk(
        &mut self,
        rel: Vec<u8>,
        entry: Entry,
        parent: Option<usize>,
        selected: bool,
    ) -> Result<()> {
        let mut stack = vec![(rel, entry, parent, selected)];
        while let Some((rel, entry, parent, inherited)) = stack.pop() {
            if !rel.is_empty() && self.excludes.is_match(lossy_path(&rel)) {
                continue;
            }
            let selected = inherited || self.includes.is_match(lossy_path(&rel));
            if entry.kind != Kind::Dir {
                if entry.kind == Kind::Symlink {
                    self.refuse_children_of_non_dir(&rel)?;
                }
                if selected {
                    self.push(rel, entry, parent, Role::Leaf, true);
                }
                continue;
            }
            let i = self.push(rel.clone(), entry, parent, Role::Dir, selected);
            self.items[i].whole = selected;
            let mut children = Vec::new();
            let mut names = Vec::new();
            for kv in self.view.children(&rel)? {
                let (name, e) = kv?;
                let path = join(&rel, &name);
                if let Some(why) = unsafe_name(&name) {
                    self.refused.push(Refused {
                        rel: path,
                        reason: format!("Refused unsafe entry in snapshot ({why})"),
                    });
                    continue;
                }
                names.push(name);
                children.push((path, e));
            }
            self.items[i].children = names;
            for (path, e) in children.into_iter().rev() {
                stack.push((path, e, Some(i), selected));
            }
        }
        Ok(())
    }

    /// A symlink (or any non-directory) cannot have children; a snapshot that claims some is
    /// crafted or damaged. Those entries are refused by name, never written through the link.
    fn refuse_children_of_non_dir(&mut self, rel: &[u8]) -> Result<()> {
        if let Some(first) = self.view.children(rel)?.next() {
            let (name, _) = first?;
            self.refused.push(Refused {
                rel: join(rel, &name),
                reason: format!(
                    "Refused entries under {}, which is a symlink in the snapshot (not followed)",
                    String::from_utf8_lossy(rel)
                ),
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Plan {
        // A directory is needed when anything below it is.
        for i in (0..self.items.len()).rev() {
            if self.needed[i] {
                if let Some(p) = self.items[i].parent {
                    self.needed[p] = true;
                }
            }
        }
        let mut remap = vec![usize::MAX; self.items.len()];
        let mut items = Vec::new();
        let mut leaders: HashMap<u64, usize> = HashMap::new();
        for (i, mut it) in self.items.into_iter().enumerate() {
            if !self.needed[i] {
                continue;
            }
            it.parent = it.parent.map(|p| remap[p]);
            if it.entry.kind == Kind::File && it.entry.nlink > 1 {
                match leaders.get(&it.entry.ino) {
                    Some(&l) => it.role = Role::Link(l),
                    None => {
                        leaders.insert(it.entry.ino, items.len());
                    }
                }
            }
            remap[i] = items.len();
            items.push(it);
        }
        Plan {
            items,
            refused: self.refused,
        }
    }
}

/// Glob matching works on `str`; non-UTF-8 bytes become U+FFFD (documented).
pub fn lossy_path(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names() {
        assert!(unsafe_name(b"").is_some());
        assert!(unsafe_name(b".").is_some());
        assert!(unsafe_name(b"..").is_some());
        assert!(unsafe_name(b"a/b").is_some());
        assert!(unsafe_name(b"/etc").is_some());
        assert!(unsafe_name(b"a\0b").is_some());
        assert!(unsafe_name(b"...").is_none());
        assert!(unsafe_name(b"bad\xffname").is_none());
    }
}
