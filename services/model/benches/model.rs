//! Benchmarks of the model service's own cost: the routing decision (pure), and the invoke
//! step with the built-in provider against a real nats-server (claim, budget settlement and
//! claim completion — everything the stage adds around a model call).
//!
//! `cargo bench -p mcplane-model --bench model` prints criterion's report, then one JSON line
//! with the mean of each benchmark in nanoseconds (`{"bench": "model", "ns": {...}}`).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use mcplane_model::config::{Boundary, Config, ProviderConfig, ProviderKind};
use mcplane_model::routing::{ProviderView, RouteInput, RoutingConfig};
use mcplane_shared::{
    AiRequest, Classification, Envelope, Exchange, Itinerary, Principal, PrincipalKind,
    RequestType, Step,
};

fn providers() -> Vec<ProviderConfig> {
    (0..5)
        .map(|i| ProviderConfig {
            kind: ProviderKind::Openai,
            model: format!("model-{i}"),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            boundary: Some(if i % 2 == 0 {
                Boundary::PublicCloud
            } else {
                Boundary::Private
            }),
            input_cost_per_mtok: f64::from(i) * 0.5,
            output_cost_per_mtok: f64::from(i) * 1.5,
            ..ProviderConfig::local(&format!("p{i}"))
        })
        .collect()
}

fn rules() -> RoutingConfig {
    let mut text = String::from("version = \"bench\"\n");
    for i in 0..9 {
        text.push_str(&format!(
            "[[rules]]\nname = \"tenant-{i}\"\nmatch = {{ tenants = [\"t{i}\"], roles = [\"r{i}\"] }}\nproviders = [\"p1\", \"p3\"]\n"
        ));
    }
    text.push_str(
        "[[rules]]\nname = \"split\"\nstrategy = \"weighted\"\nweights = { p0 = 1, p1 = 2, p2 = 3 }\n\
         [[rules]]\nname = \"cheap\"\nmatch = { request_types = [\"classify\"] }\nstrategy = \"cheapest\"\nlatency_slo_ms = 800\n",
    );
    toml::from_str(&text).expect("bench rules")
}

fn bench_routing(c: &mut Criterion) {
    let providers = providers();
    let views: Vec<ProviderView<'_>> = providers
        .iter()
        .enumerate()
        .map(|(i, config)| ProviderView {
            config,
            available: i != 4,
            p95_ms: Some(100 + 150 * i as u32),
        })
        .collect();
    let roles = vec!["sre".to_string()];
    let input = |request_type, classification| RouteInput {
        id: uuid::Uuid::now_v7(),
        request_type,
        tenant: "acme",
        roles: &roles,
        classification,
        max_latency_ms: None,
        model: None,
        input_tokens: 800,
        output_tokens: 400,
    };
    let mut group = c.benchmark_group("route");
    let none = RoutingConfig::default();
    let eleven = rules();
    for (name, table, request_type, classification) in [
        (
            "no_rules",
            &none,
            RequestType::Answer,
            Classification::Internal,
        ),
        (
            "weighted_after_9_misses",
            &eleven,
            RequestType::Answer,
            Classification::Internal,
        ),
        (
            "cheapest",
            &eleven,
            RequestType::Classify,
            Classification::Internal,
        ),
        (
            "restricted",
            &eleven,
            RequestType::Answer,
            Classification::Restricted,
        ),
    ] {
        let input = input(request_type, classification);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| table.decide(std::hint::black_box(&views), std::hint::black_box(&input)))
        });
    }
    group.finish();
}

fn request() -> Envelope<Exchange> {
    let mut env = Envelope::new(
        "acme",
        Exchange::new(AiRequest::new(RequestType::Summarize, "checkout: HighErrorRate (critical incident on checkout)\n- [critical] checkout: 5xx at 7% (x3)")),
    );
    env.itinerary = Itinerary::ai_request();
    env.itinerary.next = 2;
    env.principal = Some(Principal {
        id: "key-1".into(),
        tenant: "acme".into(),
        roles: vec!["sre".into()],
        kind: PrincipalKind::User,
    });
    env
}

fn bench_stage(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let nats = mcplane_testkit::NatsServer::start();
    let stage = runtime.block_on(async {
        let bus = mcplane_shared::bus::connect(&mcplane_testkit::bus_config(&nats), "bench")
            .await
            .expect("bus");
        mcplane_model::stage(
            &bus,
            &Config::default(),
            mcplane_shared::policy::live::LivePolicy::new(
                mcplane_shared::policy::PolicyEngine::builtin().expect("built-in policy"),
            ),
        )
        .await
        .expect("stage")
    });
    let mut group = c.benchmark_group("invoke_step");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("local_provider_with_claim_and_budget", |b| {
        b.to_async(&runtime)
            .iter(|| async { stage.handle(request(), Step::Invoke).await })
    });
    group.finish();
}

/// Reads criterion's mean estimates back and prints them as one JSON line.
fn print_json(home: &std::path::Path, ids: &[&str]) {
    let mut ns = serde_json::Map::new();
    for id in ids {
        let path = home.join(id).join("new").join("estimates.json");
        if let Some(mean) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64())
        {
            ns.insert(id.to_string(), serde_json::json!(mean.round()));
        }
    }
    println!("{}", serde_json::json!({"bench": "model", "ns": ns}));
}

fn main() {
    let home = std::env::temp_dir().join("mcplane-criterion");
    // SAFETY-free in edition 2021: set before any thread reads the environment.
    std::env::set_var("CRITERION_HOME", &home);
    let mut c = Criterion::default().configure_from_args();
    bench_routing(&mut c);
    bench_stage(&mut c);
    c.final_summary();
    print_json(
        &home,
        &[
            "route/no_rules",
            "route/weighted_after_9_misses",
            "route/cheapest",
            "route/restricted",
            "invoke_step/local_provider_with_claim_and_budget",
        ],
    );
}
