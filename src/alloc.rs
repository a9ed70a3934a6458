//! A counting global allocator. Rhai's own array/map size limits re-measure a container on
//! every change (quadratic for array-building scripts, see DESIGN.md), so the memory cap is
//! enforced here instead: the allocator keeps a running total of live bytes and the engine's
//! progress callback compares it with the `[limits] memory` cap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct CountingAllocator;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Live heap bytes of the whole process.
#[inline]
pub fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

#[inline]
fn grew(size: usize) {
    ALLOCATED.fetch_add(size, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

/// Asks glibc's malloc to grow its heaps in large steps and to keep freed memory for reuse
/// rather than trimming it back at once: a string-building script made a few thousand
/// `brk`/`mprotect` calls to grow and shrink the heap (bench P8 strings ran 1.14x plain
/// Rhai; 0.99x with these settings). Resident memory is what is touched, so P7 is unchanged.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets two of glibc's malloc parameters; called before any thread.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
