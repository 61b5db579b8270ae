//! A bounded log: the last `capacity` items in arrival order plus a count of
//! everything ever pushed. Used for the commands a run sent
//! ([`crate::RunReport::log`]) and the commands the emulated arm received, so
//! neither grows without limit on a run of unbounded length.

use std::collections::VecDeque;
use std::ops::Index;

/// Iterator over a [`Ring`]'s kept items, oldest first.
pub type Iter<'a, T> = std::collections::vec_deque::Iter<'a, T>;

/// The last `capacity` items pushed, oldest first, and how many were pushed
/// in all: a `VecDeque` that drops its front when full, plus a counter. Once
/// the storage is reserved ([`Ring::reserve`]) a push never allocates.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
    total: u64,
}

impl<T> Ring<T> {
    /// An empty log keeping at most `capacity` items; nothing is allocated
    /// until [`Ring::reserve`] or the first push.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity,
            total: 0,
        }
    }

    /// An empty log with room for `capacity` items allocated now.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut r = Self::new(capacity);
        r.reserve(capacity);
        r
    }

    /// Allocate room for `additional` more items (never beyond the capacity),
    /// so that many pushes do not allocate.
    pub fn reserve(&mut self, additional: usize) {
        let room = self.capacity.saturating_sub(self.items.len());
        self.items.reserve_exact(additional.min(room));
    }

    /// Append `item`, dropping the oldest one when full.
    pub fn push(&mut self, item: T) {
        self.total += 1;
        if self.capacity == 0 {
            return;
        }
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Items kept (at most the capacity).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Most items kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items pushed since creation (or the last [`Ring::clear`]), kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Items pushed but no longer kept: the first kept item is the
    /// `dropped()`-th ever pushed (counting from 0).
    pub fn dropped(&self) -> u64 {
        self.total - self.items.len() as u64
    }

    /// The `i`-th kept item, oldest first.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }

    /// The newest item.
    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }

    /// The kept items, oldest first.
    pub fn iter(&self) -> Iter<'_, T> {
        self.items.iter()
    }

    /// Forget every item and reset the total; the storage is kept.
    pub fn clear(&mut self) {
        self.items.clear();
        self.total = 0;
    }
}

impl<T: Clone> Ring<T> {
    /// The kept items, oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }
}

impl<T> Index<usize> for Ring<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("index {i} out of a log of {} kept items", self.len()),
        }
    }
}

impl<'a, T> IntoIterator for &'a Ring<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_items_in_order_and_counts_all() {
        let mut r = Ring::new(4);
        for i in 0..10u32 {
            r.push(i);
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.total(), 10);
        assert_eq!(r.dropped(), 6);
        assert_eq!(r.to_vec(), vec![6, 7, 8, 9]);
        assert_eq!((r[0], r[3]), (6, 9));
        assert_eq!(r.last(), Some(&9));
        assert_eq!(r.get(4), None);
        assert_eq!(
            r.iter().rev().copied().collect::<Vec<_>>(),
            vec![9, 8, 7, 6]
        );
        r.clear();
        assert_eq!((r.len(), r.total(), r.last()), (0, 0, None));
    }

    #[test]
    fn before_it_is_full_it_is_a_plain_log() {
        let mut r = Ring::with_capacity(8);
        r.push("a");
        r.push("b");
        assert_eq!(r.to_vec(), vec!["a", "b"]);
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn storage_never_grows_past_the_capacity() {
        let mut r = Ring::with_capacity(16);
        let cap = r.items.capacity();
        for i in 0..100_000u64 {
            r.push(i);
        }
        assert_eq!(r.items.capacity(), cap, "no reallocation");
        assert_eq!(r.len(), 16);
        assert_eq!(r.total(), 100_000);
        assert_eq!(r[0], 100_000 - 16);
    }

    #[test]
    fn a_zero_capacity_only_counts() {
        let mut r = Ring::new(0);
        r.push(1);
        assert_eq!((r.len(), r.total()), (0, 1));
    }
}
