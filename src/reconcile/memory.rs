//! How hashroll uses glibc's allocator: fewer arenas and a fixed mmap threshold from the start, and the
//! allocator's free memory given back to the operating system after each burst of work.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas for reuse. After the initial sync (every
//! object of the initial state parsed, every workload recorded once) much of the heap is free, scattered
//! between live objects where the arenas' automatic trimming (top of heap only) never reaches. Measured at
//! the M scale of `benches/scale` (benches/README.md, "Issue 11"): 42 MiB resident before `malloc_trim`,
//! 31 MiB after (with list pages); with streaming lists, the tuning below took another 2-3 MiB off.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    unsafe extern "C" {
        pub fn malloc_trim(pad: usize) -> c_int;
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// `mallopt` parameters, from glibc's `malloc.h`.
    pub const M_MMAP_THRESHOLD: c_int = -3;
    pub const M_ARENA_MAX: c_int = -8;
}

/// Blocks at least this large are mapped on their own and unmapped when freed. glibc's default starts at
/// 128 KiB but rises to the largest block freed so far (up to 32 MiB): after the first large Secret's JSON
/// line is freed, every later one is carved from the heap, between long-lived objects, and its hole stays.
const MMAP_THRESHOLD: i32 = 64 * 1024;

/// Arenas shared by all threads (glibc's default is up to 8 per core, one per thread that ever contended).
/// The decisions run on one task; the watches mostly wait on the network: more arenas only spread free
/// memory over more heaps.
const ARENA_MAX: i32 = 2;

/// Sets the allocator up for a long-running process holding many small objects. Call first thing in
/// `main`, before any thread starts (glibc fixes the arena limit when a second thread first allocates).
/// Where an operator sets glibc's own variables (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
/// `GLIBC_TUNABLES`), theirs win. A no-op where the allocator is not glibc's.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        for (var, param, value) in [
            (
                "MALLOC_MMAP_THRESHOLD_",
                glibc::M_MMAP_THRESHOLD,
                MMAP_THRESHOLD,
            ),
            ("MALLOC_ARENA_MAX", glibc::M_ARENA_MAX, ARENA_MAX),
        ] {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt takes two integers and no pointers; glibc applies it under its own lock.
                unsafe {
                    glibc::mallopt(param, value);
                }
            }
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
