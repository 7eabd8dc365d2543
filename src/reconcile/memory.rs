//! Gives the allocator's free memory back to the operating system after a burst of work.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas for reuse. After the initial sync (every
//! object of the initial state parsed, every workload recorded once) much of the heap is free, scattered
//! between live objects where the arenas' automatic trimming (top of heap only) never reaches. Measured at
//! the M scale of `benches/scale`: 42 MiB resident before `malloc_trim`, 31 MiB after (with list pages;
//! with streaming lists 8 MiB of the heap is still free after it, see benches/README.md).
#![allow(unsafe_code)]

/// Returns whole free pages of every malloc arena to the OS. A no-op where the allocator is not glibc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and has no preconditions; it only walks glibc's own arenas
        // under their locks and advises the kernel about pages that hold no allocation.
        unsafe {
            malloc_trim(0);
        }
    }
}
