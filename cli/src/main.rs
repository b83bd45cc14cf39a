//! The `vault` binary: everything lives in the `vault_cli` library so that
//! the end-to-end tests run exactly this `main`.
fn main() -> std::process::ExitCode {
    tune_malloc();
    vault_cli::main()
}

/// Gives buffers of 8 MiB and more (packs, large pack reads) back to the
/// system when they are freed.
///
/// glibc serves large allocations with `mmap`, but each time one is freed it
/// raises that threshold to the freed size (up to 32 MiB). After the first
/// 16 MiB pack, packs come from the threads' arenas, which keep the memory:
/// a first snapshot peaked at 152–164 MiB where a fixed threshold gives
/// 94 MiB (`benches/README.md`). A fixed threshold also turns the raising
/// off. Left alone when the user set `MALLOC_MMAP_THRESHOLD_`.
#[allow(unsafe_code)]
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before
        // any other thread exists and takes no pointers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        }
    }
}
