fn main() -> std::process::ExitCode {
    rampart::device::keep_freed_tensors();
    rampart::device::quiet_headless_vulkan();
    rampart::cli::main()
}
