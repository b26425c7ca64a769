fn main() -> std::process::ExitCode {
    mcplane_cli::main()
}
