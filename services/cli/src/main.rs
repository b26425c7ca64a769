// `mcplane` hosts the whole fleet in one process (`up`, the demo) and the alert load
// generator, so it takes the allocator the correlator runs with (docs/BENCHMARKS.md).
mcplane_shared::use_mimalloc!();

fn main() -> std::process::ExitCode {
    mcplane_cli::main()
}
