//! A per-thread cache of freed generator allocations, so that entering the
//! same `#[async_context_manager]` fn over and over allocates nothing in
//! steady state (SPEC §7).
//!
//! Blocks are plain global-allocator memory, so one freed on another thread
//! than the one that allocated it is fine: it joins that thread's cache.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;

/// At most this many blocks wait per thread; beyond, they are freed.
const CAPACITY: usize = 16;

struct Cache(Vec<(Layout, NonNull<u8>)>);

impl Drop for Cache {
    fn drop(&mut self) {
        for (layout, ptr) in self.0.drain(..) {
            // SAFETY: every cached block came from `alloc::alloc(layout)`.
            unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache(Vec::with_capacity(CAPACITY)));
}

/// A block for `layout` (non-zero-sized), from the cache if one fits.
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0);
    let cached = CACHE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            let i = c.0.iter().rposition(|(l, _)| *l == layout)?;
            Some(c.0.swap_remove(i).1)
        })
        .ok()
        .flatten();
    cached.unwrap_or_else(|| {
        // SAFETY: `layout` is not zero-sized (an `Inner` holds a slot).
        let ptr = unsafe { alloc::alloc(layout) };
        NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
    })
}

/// Gives a block back.
///
/// # Safety
///
/// `ptr` came from [`alloc`] with the same `layout`, holds nothing that
/// needs dropping, and is not used again.
pub(crate) unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
    let kept = CACHE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if c.0.len() < CAPACITY {
                c.0.push((layout, ptr));
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: per the caller, `ptr` came from `alloc::alloc(layout)`.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
    }
}
