fn main() -> std::process::ExitCode {
    rampart::device::keep_freed_tensors();
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { rampart::device::quiet_headless_vulkan() };
    rampart::cli::main()
}
