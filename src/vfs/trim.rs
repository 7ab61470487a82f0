//! Keeping the inode table within its budget. The table holds what the kernel holds (see
//! `live`), and the kernel keeps the entries it was given for as long as it has memory to spare:
//! walking every snapshot of a large repository would leave millions of them, each a node here.
//! So when the table's estimated size ([`Node::weight`]) passes [`VfsOptions::table_bytes`],
//! the oldest entries that were not handed out again since the last pass (second chance, in
//! inode order, which is the order they were made) are invalidated in the kernel
//! (`FUSE_NOTIFY_INVAL_ENTRY`, through [`Stale`]): an unused one is dropped there at once, and
//! its `forget` then frees the node; one in use (an open file, a working directory) stays until
//! its user lets go. Nodes the kernel never held (listed by a plain `readdir`) are freed here.

use std::sync::atomic::Ordering;

use super::names::{ASKED, IDLE, RECENT};
use super::*;

/// Nodes looked at per pass at most: a pass holds the table's lock.
const PASS: usize = 65_536;

impl Vfs {
    /// One trimming pass (see the module documentation); returns how many entries the kernel
    /// was asked to forget.
    pub(super) fn trim_table(&self) -> usize {
        let budget = self.opts.table_bytes;
        let mut t = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let live = t.nodes.len();
        if t.order.len() > 2 * live + 1024 {
            // Numbers of freed nodes pile up when no pass needs to run.
            let nodes = std::mem::take(&mut t.nodes);
            t.order.retain(|ino| nodes.contains_key(ino));
            t.nodes = nodes;
        }
        let going = t.asked.load(Ordering::Relaxed);
        let mut excess = t.bytes.saturating_sub(going).saturating_sub(budget);
        let mut stale = Stale::default();
        let mut passed = 0;
        while excess > 0 && passed < PASS.min(t.order.len()) {
            passed += 1;
            let Some(ino) = t.order.pop_front() else {
                break;
            };
            let Some(slot) = t.nodes.get(&ino) else {
                continue;
            };
            if ino <= STATS_INO {
                continue; // fixed: never freed, never passed again
            }
            let (refs, w) = (slot.refs.load(Ordering::Acquire), slot.node.weight());
            match slot.age.load(Ordering::Relaxed) {
                RECENT => slot.age.store(IDLE, Ordering::Relaxed),
                ASKED => {}
                _ if refs == 0 => {
                    t.remove(ino);
                    excess = excess.saturating_sub(w);
                    continue;
                }
                _ => {
                    if let Some(e) = slot.node.entry_name(&t) {
                        slot.age.store(ASKED, Ordering::Relaxed);
                        t.asked.fetch_add(w, Ordering::Relaxed);
                        excess = excess.saturating_sub(w);
                        stale.entries.push(e);
                    }
                }
            }
            t.order.push_back(ino);
        }
        drop(t);
        let n = stale.entries.len();
        if n > 0 {
            log::debug!("Inode table over its budget: asking the kernel to forget {n} entries");
            lock(&self.live.stale).append(stale);
        }
        n
    }

    /// The inode table's estimated size, in bytes, and how much of it the kernel was asked to
    /// let go of.
    pub fn table_bytes(&self) -> (u64, u64) {
        let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        (t.bytes, t.asked.load(Ordering::Relaxed))
    }
}
