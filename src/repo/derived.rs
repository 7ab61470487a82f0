//! Memory that modules above `repo/` derive from the index and keep beside an open handle: the
//! layer caches (`crate::layers`) and the snapshot records a lookup catalog seeded
//! (`crate::snapshot`). The handle holds them so that they live exactly as long as the index is
//! open, and shares them between every user of the handle; it does not know their types. All it
//! does is tell them when what they were derived from changes ([`Derived`]): `repo/` stays
//! storage only, and the modules that know layers and records keep their caches to themselves.

use std::any::Any;
use std::sync::OnceLock;

use super::Repo;

/// In-memory state derived from the index, kept by [`Repo::derived_or_init`].
pub trait Derived: Any + Send + Sync {
    /// Snapshot records were written or removed: drop records (and anything listed with them)
    /// that were read from somewhere other than the index.
    fn records_changed(&self);
    /// Layers were rewritten in place (only `forget` and `consolidate` do): drop everything.
    fn layers_changed(&self);
}

/// How many [`Derived`] types one handle can hold; each type takes one slot, for good.
const SLOTS: usize = 4;

/// The handle's derived state, one slot per type, filled on first use and never emptied: a
/// probe costs a few atomic loads and no lock.
#[derive(Default)]
pub(super) struct Slots([OnceLock<Box<dyn Derived>>; SLOTS]);

impl Slots {
    fn find<T: Derived>(&self) -> Option<&T> {
        self.0
            .iter()
            .map_while(|s| s.get())
            .find_map(|d| (d.as_ref() as &dyn Any).downcast_ref::<T>())
    }

    fn get_or_init<T: Derived>(&self, init: impl FnOnce() -> T) -> &T {
        let mut init = Some(init);
        for slot in &self.0 {
            // The first slot that is empty or holds a `T` is the `T`'s: slots fill in order, and
            // a slot once filled keeps its value, so every caller asking for `T` meets there.
            let d = slot.get_or_init(|| Box::new(init.take().expect("initialized once")()));
            if let Some(t) = (d.as_ref() as &dyn Any).downcast_ref::<T>() {
                return t;
            }
        }
        panic!("more than {SLOTS} kinds of state derived from one repository handle");
    }

    fn each(&self, f: impl Fn(&dyn Derived)) {
        for d in self.0.iter().map_while(|s| s.get()) {
            f(d.as_ref());
        }
    }
}

impl Repo {
    /// This handle's `T`, if one was made.
    pub fn derived<T: Derived>(&self) -> Option<&T> {
        self.derived.find()
    }

    /// This handle's `T`, made by `init` on first use.
    pub fn derived_or_init<T: Derived>(&self, init: impl FnOnce() -> T) -> &T {
        self.derived.get_or_init(init)
    }

    /// Tells the derived state that snapshot records changed: called by everything that writes a
    /// snapshot record, so that a process whose records came from the lookup catalog reads its
    /// own changes from the index.
    pub(crate) fn snapshots_changed(&self) {
        self.derived.each(|d| d.records_changed());
    }

    /// Drops all derived state (the layer caches, and the records a catalog seeded). Layers are
    /// immutable except under `forget` and `consolidate`, which call this after changing one, so
    /// that later views read the index afresh.
    pub fn clear_layer_caches(&self) {
        self.derived.each(|d| d.layers_changed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct A(AtomicU32);
    impl Derived for A {
        fn records_changed(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn layers_changed(&self) {
            self.0.fetch_add(100, Ordering::Relaxed);
        }
    }
    #[derive(Default)]
    struct B(AtomicU32);
    impl Derived for B {
        fn records_changed(&self) {}
        fn layers_changed(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn each_type_has_one_slot_and_hears_every_change() {
        let s = Slots::default();
        assert!(s.find::<A>().is_none());
        s.get_or_init(A::default);
        s.get_or_init(B::default);
        s.get_or_init(|| -> A { panic!("made twice") });
        s.each(|d| d.records_changed());
        s.each(|d| d.layers_changed());
        assert_eq!(s.find::<A>().unwrap().0.load(Ordering::Relaxed), 101);
        assert_eq!(s.find::<B>().unwrap().0.load(Ordering::Relaxed), 1);
    }
}
