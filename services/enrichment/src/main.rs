fn main() -> std::process::ExitCode {
    mcplane_shared::process::service_main(
        mcplane_shared::Service::Enrichment,
        mcplane_enrichment::run,
    )
}
