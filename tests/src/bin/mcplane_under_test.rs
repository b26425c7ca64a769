//! `mcplane` as the tests run it: the same command line, with the fault-injection points armed
//! from the `FAILPOINTS` environment variable (the crash tests set it; nothing else does).

fn main() -> std::process::ExitCode {
    let _faults = fail::FailScenario::setup();
    mcplane_cli::main()
}
