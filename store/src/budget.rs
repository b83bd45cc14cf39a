//! A budget of bytes that parallel readers of whole objects share, so that
//! loading thousands of index segments or snapshots on every core at once
//! holds a bounded number of bytes however large each object may be.
//!
//! A reader takes its share ([`ByteBudget::take`]) once it knows the
//! object's size and before it reads the body (see
//! [`Backend::read_admitted`](crate::backend::Backend::read_admitted)), grows
//! it once it knows what decompressing and decoding will take
//! ([`Held::at_least`]), and gives it back when it is done (dropping the
//! [`Held`]). Small objects, the common case, fit many at a time and go at
//! full speed; large ones wait for room.
//!
//! Two rules keep it from ever stalling: a reader that holds nothing takes
//! any amount when nobody else holds anything (an object larger than the
//! whole budget is read alone), and when every holder is waiting to grow,
//! one of them grows past the budget (each would otherwise wait for the
//! others). So the bytes held at once are at most the budget, or one
//! object's share past it. Holders must not wait for anything but their
//! own share, and never take a second one while they hold a first.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::backend::{Backend, FileType, read_checked};
use crate::crypto::Keys;
use crate::error::Result;
use crate::format::envelope;

/// Bytes that whole-object reads of metadata (index segments, snapshots)
/// hold at once, process-wide: a few hundred typical segments, tens of
/// thousands of snapshots, or one of the largest segments a reader accepts
/// (two copies of `MAX_SEGMENT_LEN`).
pub const METADATA_READ_BUDGET: u64 = 128 << 20;

/// The process-wide budget of whole-object metadata reads.
pub fn metadata_reads() -> &'static ByteBudget {
    static BUDGET: ByteBudget = ByteBudget::new(METADATA_READ_BUDGET);
    &BUDGET
}

/// Reads the sealed metadata object `name` of type `t`, named by the keyed
/// hash `id` of its payload of at most `limit` bytes, and decodes the
/// payload with `decode`, holding a share of [`metadata_reads`] while it
/// does: twice the object's size from before its body is read (the object,
/// decrypted where it lies, and what it decodes to), and what
/// decompressing adds once the payload is authenticated and its size
/// known. What `decode` returns is the caller's to account for. As
/// [`read_checked`], a local copy that fails is dropped and the object read
/// again from the repository.
#[allow(clippy::too_many_arguments)]
pub fn load_sealed<T>(
    backend: &dyn Backend,
    keys: &Keys,
    t: FileType,
    name: &str,
    (aad, id): (&str, &[u8; 32]),
    limit: usize,
    what: &str,
    decode: impl Fn(Vec<u8>) -> Result<T>,
) -> Result<T> {
    let share = metadata_reads().share();
    read_checked(backend, t, name, &mut |size| share.at_least(2 * size), |sealed| {
        let size = sealed.len() as u64;
        let opened = envelope::authenticate(keys, aad, sealed, what)?;
        if opened.is_compressed() {
            // The object, the payload decompressed, and what that decodes to.
            share.at_least(size + 2 * opened.payload_len(limit) as u64);
        }
        let plain = opened.payload(limit, what)?;
        envelope::check_name(keys, &plain, id, what)?;
        decode(plain)
    })
}

/// How many of the objects `sizes` describes (at least one if there are
/// any, at most `max`)
/// a caller that holds a batch of decoded objects at once should take, so
/// that the batch stays within `budget` bytes; each object costs what
/// `sizes` says.
pub fn batch_len(sizes: impl IntoIterator<Item = u64>, max: usize, budget: u64) -> usize {
    let mut sum = 0u64;
    let mut n = 0;
    for size in sizes.into_iter().take(max) {
        sum = sum.saturating_add(size);
        if n > 0 && sum > budget {
            break;
        }
        n += 1;
    }
    n
}

/// Bytes shared by parallel readers.
#[derive(Debug)]
pub struct ByteBudget {
    total: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes held.
    used: u64,
    /// Shares held (a [`Held`] of zero bytes is no holder).
    holders: usize,
    /// Holders waiting in [`Held::at_least`].
    growing: usize,
}

impl ByteBudget {
    /// A budget of `total` bytes.
    pub const fn new(total: u64) -> Self {
        ByteBudget { total, state: Mutex::new(State { used: 0, holders: 0, growing: 0 }), changed: Condvar::new() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is a few counter updates done together.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty share, to grow with [`Held::at_least`] once its size is known.
    pub fn share(&self) -> Held<'_> {
        Held { budget: self, bytes: std::cell::Cell::new(0) }
    }

    /// `n` bytes of the budget, waiting until they fit (or nobody holds any).
    pub fn take(&self, n: u64) -> Held<'_> {
        let h = self.share();
        h.at_least(n);
        h
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.state().used
    }
}

/// A share of a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    budget: &'a ByteBudget,
    bytes: std::cell::Cell<u64>,
}

impl Held<'_> {
    /// Grows the share to at least `n` bytes, waiting until they fit: see
    /// the module's rules for when a share grows past the budget.
    pub fn at_least(&self, n: u64) {
        let have = self.bytes.get();
        if n <= have {
            return;
        }
        let more = n - have;
        let b = self.budget;
        let mut s = b.state();
        let holder = have > 0;
        if holder {
            s.growing += 1;
        }
        loop {
            let fits = s.used + more <= b.total;
            let alone = if holder { s.growing == s.holders } else { s.used == 0 };
            if fits || alone {
                break;
            }
            s = b.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if holder {
            s.growing -= 1;
        } else {
            s.holders += 1;
        }
        s.used += more;
        self.bytes.set(n);
        drop(s);
        // Others wait for "every holder is growing": one fewer now is.
        b.changed.notify_all();
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let n = self.bytes.get();
        if n == 0 {
            return;
        }
        let mut s = self.budget.state();
        s.used -= n;
        s.holders -= 1;
        drop(s);
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn readers_together_hold_at_most_the_budget() {
        let budget = ByteBudget::new(100);
        let (now, peak) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, now, peak) = (&budget, &now, &peak);
                s.spawn(move || {
                    for j in 0..200u64 {
                        let n = 1 + (i * 7 + j * 13) % 60;
                        let h = budget.take(n);
                        let held = now.fetch_add(n, Ordering::SeqCst) + n;
                        peak.fetch_max(held, Ordering::SeqCst);
                        std::thread::yield_now();
                        now.fetch_sub(n, Ordering::SeqCst);
                        drop(h);
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100, "peak {}", peak.load(Ordering::SeqCst));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn batches_end_at_the_budget_or_the_count() {
        assert_eq!(batch_len([10, 10, 10, 10], 8, 25), 2);
        assert_eq!(batch_len([10, 10, 10, 10], 3, 1000), 3);
        assert_eq!(batch_len([100, 1], 8, 25), 1, "one object larger than the budget goes alone");
        assert_eq!(batch_len([1, 100], 8, 25), 1);
        assert_eq!(batch_len([], 8, 25), 0);
    }

    #[test]
    fn an_object_larger_than_the_budget_is_read_alone() {
        let budget = Arc::new(ByteBudget::new(10));
        let small = budget.take(4);
        let b = budget.clone();
        let big = std::thread::spawn(move || {
            let h = b.take(50);
            h.bytes()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!big.is_finished(), "it waits for the others to finish");
        drop(small);
        assert_eq!(big.join().unwrap(), 50);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn holders_that_all_need_more_never_wait_for_each_other() {
        // Each holds a share that leaves no room for the others to grow.
        let budget = ByteBudget::new(100);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let budget = &budget;
                s.spawn(move || {
                    for _ in 0..50 {
                        let h = budget.take(30);
                        h.at_least(90);
                        assert_eq!(h.bytes(), 90);
                    }
                });
            }
        });
        assert_eq!(budget.used(), 0);
    }
}
