//! A per-thread cache of freed generator allocations, so that entering the
//! same `#[async_context_manager]` fn over and over allocates nothing in
//! steady state (SPEC §7).
//!
//! Blocks are sorted into size classes (multiples of [`STEP`] bytes,
//! aligned to [`ALIGN`]); each class is a free list threaded through its
//! free blocks, so that taking and giving back a block is a few loads and
//! stores, with no search and no lock (issue 10: the `RefCell<Vec>` it
//! replaces cost ~46 instructions per scope). Larger or more aligned
//! layouts go to the global allocator directly.
//!
//! Blocks are plain global-allocator memory of their class's layout, so
//! one freed on another thread than the one that allocated it is fine: it
//! joins that thread's list for the same class.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};

/// The size classes' step: class `k` holds blocks of `(k + 1) * STEP` bytes.
const STEP: usize = 64;
/// Blocks of up to `CLASSES * STEP` bytes are cached.
const CLASSES: usize = 32;
/// The alignment of every cached block.
const ALIGN: usize = 16;
/// At most this many blocks wait per class and thread; beyond, they are freed.
const CAPACITY: u32 = 16;

/// One class's free list: its first block (whose first word points to the
/// next) and how many it holds.
struct List {
    head: Cell<*mut u8>,
    len: Cell<u32>,
}

struct Cache([List; CLASSES]);

impl Drop for Cache {
    fn drop(&mut self) {
        for (class, list) in self.0.iter().enumerate() {
            let mut block = list.head.replace(ptr::null_mut());
            while !block.is_null() {
                // SAFETY: every block on a list is a free block of this
                // class, whose first word is the next block (see `free`).
                let next = unsafe { next_word(block).read() };
                // SAFETY: the block came from `alloc::alloc(class_layout(class))`.
                unsafe { alloc::dealloc(block, class_layout(class)) };
                block = next;
            }
        }
    }
}

thread_local! {
    static CACHE: Cache = const {
        Cache([const { List { head: Cell::new(ptr::null_mut()), len: Cell::new(0) } }; CLASSES])
    };
}

/// The class of `layout`, if it is cached.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let class = layout.size().div_ceil(STEP).checked_sub(1)?;
    (class < CLASSES && layout.align() <= ALIGN).then_some(class)
}

/// The layout every block of `class` is allocated with.
#[inline]
fn class_layout(class: usize) -> Layout {
    // SAFETY: `ALIGN` is a power of two and `(class + 1) * STEP`, at most
    // `CLASSES * STEP`, is far from overflowing `isize` once rounded.
    unsafe { Layout::from_size_align_unchecked((class + 1) * STEP, ALIGN) }
}

/// A free block's first word: the list's next block.
#[inline]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "every cached block is `ALIGN`-aligned (its class's layout)"
)]
fn next_word(block: *mut u8) -> *mut *mut u8 {
    block.cast()
}

/// A block for `layout` (non-zero-sized), from the cache if one fits.
#[inline]
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0);
    let Some(class) = class_of(layout) else {
        return alloc_global(layout);
    };
    let cached = CACHE
        .try_with(|c| {
            let list = &c.0[class];
            let block = list.head.get();
            if !block.is_null() {
                // SAFETY: a block on the list is free and starts with the
                // next block's address (written by `free`).
                list.head.set(unsafe { next_word(block).read() });
                list.len.set(list.len.get() - 1);
            }
            block
        })
        .unwrap_or(ptr::null_mut());
    NonNull::new(cached).unwrap_or_else(|| alloc_global(class_layout(class)))
}

#[cold]
fn alloc_global(layout: Layout) -> NonNull<u8> {
    // SAFETY: `layout` is not zero-sized (an `Inner` holds a slot; a class
    // layout is at least `STEP` bytes).
    let ptr = unsafe { alloc::alloc(layout) };
    NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// Gives a block back.
///
/// # Safety
///
/// `ptr` came from [`alloc`] with the same `layout`, holds nothing that
/// needs dropping, and is not used again.
#[inline]
pub(crate) unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: per the caller, `ptr` came from `alloc_global(layout)`.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
        return;
    };
    let kept = CACHE
        .try_with(|c| {
            let list = &c.0[class];
            if list.len.get() >= CAPACITY {
                return false;
            }
            // SAFETY: the block is free (per the caller), at least `STEP`
            // bytes and `ALIGN`-aligned (its class's layout), so its first
            // word can hold the list's next block.
            unsafe { next_word(ptr.as_ptr()).write(list.head.get()) };
            list.head.set(ptr.as_ptr());
            list.len.set(list.len.get() + 1);
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: per the caller, `ptr` came from `alloc` for this class.
        unsafe { alloc::dealloc(ptr.as_ptr(), class_layout(class)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_block_is_reused_for_a_layout_of_its_class() {
        let a = Layout::from_size_align(100, 8).unwrap();
        let b = Layout::from_size_align(120, 16).unwrap();
        let first = alloc(a);
        // SAFETY: from `alloc(a)`, holds nothing, not used again.
        unsafe { free(first, a) };
        // 100 and 120 bytes are both in the 128-byte class.
        let second = alloc(b);
        assert_eq!(first, second);
        // SAFETY: as above.
        unsafe { free(second, b) };
    }

    #[test]
    fn each_class_keeps_at_most_its_capacity_and_the_rest_is_freed() {
        let layout = Layout::from_size_align(300, 8).unwrap();
        let blocks: Vec<_> = (0..CAPACITY + 4).map(|_| alloc(layout)).collect();
        for &block in &blocks {
            // SAFETY: from `alloc(layout)`, holds nothing, not used again.
            unsafe { free(block, layout) };
        }
        let len = CACHE.with(|c| c.0[class_of(layout).unwrap()].len.get());
        assert_eq!(len, CAPACITY);
        // The cached ones come back, most recent first, and are writable.
        for _ in 0..CAPACITY {
            let block = alloc(layout);
            // SAFETY: a block of at least 300 bytes, exclusively ours.
            unsafe { block.as_ptr().write_bytes(0xAB, layout.size()) };
            // SAFETY: from `alloc(layout)`, holds nothing, not used again.
            unsafe { free(block, layout) };
        }
    }

    #[test]
    fn large_and_overaligned_layouts_bypass_the_cache() {
        for layout in [
            Layout::from_size_align(CLASSES * STEP + 1, 8).unwrap(),
            Layout::from_size_align(64, 64).unwrap(),
        ] {
            assert_eq!(class_of(layout), None);
            let block = alloc(layout);
            assert_eq!(block.as_ptr() as usize % layout.align(), 0);
            // SAFETY: from `alloc(layout)`, holds nothing, not used again.
            unsafe { free(block, layout) };
        }
    }

    #[test]
    fn a_block_freed_on_another_thread_joins_that_threads_cache() {
        struct Block(NonNull<u8>);
        // SAFETY: a free block of plain memory, handed to the other thread
        // and no longer used here.
        unsafe impl Send for Block {}
        impl Block {
            fn get(self) -> NonNull<u8> {
                self.0
            }
        }
        let layout = Layout::from_size_align(64, 8).unwrap();
        let block = alloc(layout);
        let sent = Block(block);
        std::thread::spawn(move || {
            // Through a method: the closure captures all of `sent`.
            let block = sent.get();
            // SAFETY: from `alloc(layout)`, holds nothing, not used again.
            unsafe { free(block, layout) };
            let again = alloc(layout);
            assert_eq!(again, block);
            // Left in that thread's cache, which frees it when the thread exits.
            // SAFETY: as above.
            unsafe { free(again, layout) };
        })
        .join()
        .unwrap();
    }
}
