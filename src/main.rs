fn main() -> std::process::ExitCode {
    rampart::device::keep_freed_tensors();
    rampart::cli::main()
}
