fn main() -> std::process::ExitCode {
    mcplane_shared::process::service_main(
        mcplane_shared::Service::KafkaBridge,
        mcplane_kafka_bridge::run,
    )
}
