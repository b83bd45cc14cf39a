//! The `vault` binary: everything lives in the `vault_cli` library so that
//! the end-to-end tests run exactly this `main`.
fn main() -> std::process::ExitCode {
    tune_malloc();
    raise_open_file_limit();
    vault_cli::main()
}

/// Raises the soft limit on open files towards the hard one, as Go programs
/// do at start: a restore holds each batch's files open (up to 4096), and a
/// soft limit of 1024 would only make its batches smaller. Capped at 8192,
/// so that a child (`--stdin-from-command`) that closes every descriptor
/// up to its limit isn't slowed down.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(8192);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
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
///
/// Fixing it also fixes the trim threshold at its default of 128 KiB, which
/// glibc would otherwise keep at twice the mmap threshold: then every free
/// of a chunk-sized buffer at the top of an arena gives the pages back and
/// the next allocation faults them in again (a `dump` of 500 MiB took 140 k
/// page faults, 0.38 s of system time; with 16 MiB, 21 k and 0.1 s, at the
/// same peak RSS). So the trim threshold is set to twice the mmap one, as
/// glibc's own rule has it, unless `MALLOC_TRIM_THRESHOLD_` is set.
#[allow(unsafe_code)]
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: i32 = 8 << 20;
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets an allocator parameter; it runs
            // before any other thread exists and takes no pointers.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
            }
        }
    }
}
