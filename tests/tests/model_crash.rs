//! The model worker killed after the provider answered and before the message was
//! acknowledged: the redelivery is answered from the fleet-wide claim, and the provider is
//! called exactly once.
//!
//! The crash is a real process dying at a fault-injection point (`model-after-invoke`, armed
//! through the `FAILPOINTS` environment variable in the test binary of `mcplane`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcplane_shared::subjects::StreamKind;
use mcplane_shared::{
    AiRequest, Envelope, Exchange, Itinerary, Principal, PrincipalKind, RequestType, Service,
};
use mcplane_testkit::{bus_config, stored_messages, Behavior, NatsServer, StubProvider};

fn model_process(
    nats: &NatsServer,
    config: &std::path::Path,
    data: &std::path::Path,
    fault: bool,
) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcplane-under-test"));
    cmd.args(["run", "model", "--config"])
        .arg(config)
        .args(["--nats", &nats.url(), "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if fault {
        cmd.env("FAILPOINTS", "model-after-invoke=panic");
    }
    cmd.spawn().expect("spawn the model worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_killed_after_the_call_before_the_ack_calls_the_provider_once() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let stub = StubProvider::start(Behavior::answer("Restart the payments pool.")).await;
    let config = data.path().join("model.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"pretty\"\nfilter = \"error\"\n[bus]\nack_wait_secs = 2\n\
             [[model.providers]]\nname = \"stub\"\nkind = \"openai\"\nmodel = \"stub-1\"\nbase_url = \"{}\"\n",
            stub.url()
        ),
    )
    .unwrap();
    let bus = mcplane_shared::bus::connect(&bus_config(&nats), "test")
        .await
        .unwrap();

    let mut first = model_process(&nats, &config, data.path(), true);
    let mut env = Envelope::new(
        "acme",
        Exchange::new(AiRequest::new(
            RequestType::Answer,
            "Why do payments time out?",
        )),
    );
    env.itinerary = Itinerary::ai_request();
    env.itinerary.next = 2;
    env.principal = Some(Principal {
        id: "key-1".into(),
        tenant: "acme".into(),
        roles: vec!["sre".into()],
        kind: PrincipalKind::User,
    });
    bus.publish_envelope(bus.subjects.stage(Service::Model, "acme"), &env, "test")
        .await
        .unwrap();

    // The worker calls the provider, records the outcome, and dies before acknowledging.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the armed worker never crashed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "the worker died at the fault point");
    assert_eq!(stub.call_count(), 1);
    let forwarded_to = bus.subjects.stage(Service::Redaction, "acme");
    assert!(
        stored_messages(&bus, StreamKind::Pipeline, forwarded_to.clone())
            .await
            .is_empty(),
        "nothing was forwarded before the crash"
    );

    // A new worker gets the redelivery and answers it from the claim.
    let mut second = model_process(&nats, &config, data.path(), false);
    let started = Instant::now();
    let out = loop {
        let found = stored_messages(&bus, StreamKind::Pipeline, forwarded_to.clone())
            .await
            .into_iter()
            .map(|p| Envelope::<Exchange>::from_slice(&p).unwrap())
            .find(|e| e.id == env.id);
        if let Some(out) = found {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never redelivered and answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    second.kill().unwrap();
    let _ = second.wait();
    assert_eq!(
        out.body.response.unwrap().text,
        "Restart the payments pool."
    );
    assert_eq!(stub.call_count(), 1, "the provider was called exactly once");
}
