//! How hashroll uses glibc's allocator: one arena from the start, and the allocator's free memory given
//! back to the operating system after each burst of work.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas for reuse. After the initial sync (every
//! object of the initial state parsed, every workload recorded once) much of the heap is free, scattered
//! between live objects where the arenas' automatic trimming (top of heap only) never reaches. Measured at
//! the M scale of `benches/scale` (benches/README.md, "Issue 11"): 42 MiB resident before `malloc_trim`,
//! 31 MiB after (with list pages). A fixed 64 KiB mmap threshold took another 0.7 MiB off the steady state
//! and 2 MiB off the peak, but cost about 30 % more CPU before ready (each large Secret's JSON mapped and
//! unmapped on its own): not kept.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    unsafe extern "C" {
        pub fn malloc_trim(pad: usize) -> c_int;
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// A `mallopt` parameter, from glibc's `malloc.h`.
    pub const M_ARENA_MAX: c_int = -8;
}

/// Arenas shared by all threads (glibc's default is up to 8 per core, one per thread that ever contended).
/// The decisions run on one task; the watches mostly wait on the network; most small blocks come from
/// each thread's cache without the arena's lock. More arenas only spread free memory over more heaps:
/// at M one arena holds 24.6–24.8 MiB steady against 25.2–26.3 MiB with two (benches/README.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: std::ffi::c_int = 1;

/// Sets the allocator up for a long-running process holding many small objects. Call first thing in
/// `main`, before any thread starts (glibc fixes the arena limit when a second thread first allocates).
/// Where an operator sets glibc's own `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`, theirs win. A no-op where the
/// allocator is not glibc's.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some()
            || std::env::var_os("MALLOC_ARENA_MAX").is_some()
        {
            return;
        }
        // SAFETY: mallopt takes two integers and no pointers; glibc applies it under its own lock.
        unsafe {
            glibc::mallopt(glibc::M_ARENA_MAX, ARENA_MAX);
        }
    }
}

/// Returns whole free pages of every malloc arena to the OS. A no-op where the allocator is not glibc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and has no preconditions; it only walks glibc's own arenas
        // under their locks and advises the kernel about pages that hold no allocation.
        unsafe {
            glibc::malloc_trim(0);
        }
    }
}
