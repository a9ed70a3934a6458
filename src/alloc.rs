//! A counting global allocator. Rhai's own array/map size limits re-measure a container on
//! every change (quadratic for array-building scripts, see DESIGN.md), so the memory cap is
//! enforced here instead: the allocator keeps a running total of live bytes and the engine's
//! progress callback compares it with the `[limits] memory` cap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct CountingAllocator;

/// Live heap bytes of the whole process, give or take what each thread has not yet added.
/// Signed: a thread may free what another has not yet added.
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

/// A thread adds its allocations to [`ALLOCATED`] in steps of at least this many bytes: an
/// atomic add on every allocation and free was 6 % of a call-heavy script (bench P8 fib).
/// What a thread holds back when it exits is lost to the count (less than this per thread);
/// one large allocation is counted at once, so the memory cap still stops `s += s` in time.
const STEP: isize = 256 * 1024;

thread_local! {
    /// This thread's allocations not yet added to [`ALLOCATED`] (negative: frees). Const
    /// initialised and without a destructor, so reading it never allocates.
    static PENDING: Cell<isize> = const { Cell::new(0) };
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Live heap bytes of the whole process (to within [`STEP`] per thread).
#[inline]
pub fn allocated() -> usize {
    usize::try_from(ALLOCATED.load(Ordering::Relaxed)).unwrap_or(0)
}

// Not inlined: it would be copied into every allocation site of the binary (+3 MiB).
#[inline(never)]
fn count(delta: isize) {
    let flush = |delta: isize| {
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    };
    let counted = PENDING.try_with(|pending| {
        let total = pending.get().saturating_add(delta);
        if total.abs() >= STEP {
            pending.set(0);
            flush(total);
        } else {
            pending.set(total);
        }
    });
    if counted.is_err() {
        flush(delta);
    }
}

#[inline]
fn grew(size: usize) {
    count(isize::try_from(size).unwrap_or(isize::MAX));
}

#[inline]
fn shrank(size: usize) {
    count(-isize::try_from(size).unwrap_or(isize::MAX));
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
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(
                isize::try_from(new_size).unwrap_or(isize::MAX)
                    - isize::try_from(layout.size()).unwrap_or(isize::MAX),
            );
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
