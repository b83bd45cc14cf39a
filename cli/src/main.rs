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

/// Tunes glibc's allocator for vault's pattern: chunk-sized buffers (up to
/// 4 MiB) passed between threads, packs of 16 MiB and more.
///
/// - Buffers of 8 MiB and more (packs, large pack reads) go back to the
///   system when freed. glibc serves them with `mmap` but raises that
///   threshold to each freed size (up to 32 MiB), after which packs come
///   from the threads' arenas, which keep the memory: a first snapshot
///   peaked at 152–164 MiB where a fixed threshold gives 94 MiB
///   (`benches/README.md`).
/// - Fixing it also froze the trim threshold at its 128 KiB default: every
///   free of a chunk at the top of an arena gave the pages back and the
///   next allocation faulted them in again (a `dump` of 500 MiB: 140 k page
///   faults, 0.38 s of system time). The trim threshold is set to the mmap
///   threshold, so what an arena serves it may keep: 29 k faults and 0.1 s
///   (4 MiB: 85 k and 0.25 s).
/// - An arena keeps up to that much, and glibc makes up to eight arenas per
///   core: the eight reader threads of a restore from S3 peaked at 140-170
///   MiB. Two arenas per core: 111-126 MiB and less CPU, the threads reusing
///   each other's freed chunks.
///
/// Each setting is left alone when the user set its `MALLOC_*_` variable.
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
                libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
            }
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let arenas = i32::try_from(2 * cores).unwrap_or(i32::MAX);
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}
