// The correlator's throughput is bound by `malloc` (docs/BENCHMARKS.md, "mimalloc for the
// correlator"), and with mimalloc it still idles within the 20 MB budget.
mcplane_shared::use_mimalloc!();

fn main() -> std::process::ExitCode {
    mcplane_shared::process::service_main(
        mcplane_shared::Service::Correlator,
        mcplane_correlator::run,
    )
}
