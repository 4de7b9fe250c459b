fn main() -> std::process::ExitCode {
    keep_freed_tensors();
    rampart::cli::main()
}

/// glibc's malloc serves allocations above its mmap threshold (128 KiB at first, raised only
/// by frees of mapped blocks) with fresh mappings, so every batch's activations were new,
/// zero-filled pages: 4.1 s of system time in one 23 s cnn training epoch on 10,000 images.
/// With the threshold at its 32 MiB maximum and freed memory kept for reuse, the same epoch
/// spends 1.2 s there and takes 19.4 s (flex, 2 cores). Same effect as
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`.
fn keep_freed_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread
    // starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
