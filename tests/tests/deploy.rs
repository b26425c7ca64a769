//! docker-compose.yml cannot be run here (no Docker engine), so it is checked as data: it must
//! start every service binary against a JetStream-enabled NATS configured like the tests'.

use std::collections::BTreeMap;

use mcplane_shared::Service;
use yaml_rust2::{Yaml, YamlLoader};

/// Resolves `<<` merge keys (YAML 1.1), which compose files use with anchors.
fn merged(y: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    if let Yaml::Hash(h) = y {
        if let Some(base) = h.get(&Yaml::String("<<".into())) {
            out.extend(merged(base));
        }
        for (k, v) in h {
            if let Yaml::String(k) = k {
                if k != "<<" {
                    let v = if matches!(v, Yaml::Hash(_)) {
                        let m = merged(v);
                        let mut h = yaml_rust2::yaml::Hash::new();
                        for (k, v) in m {
                            h.insert(Yaml::String(k), v);
                        }
                        Yaml::Hash(h)
                    } else {
                        v.clone()
                    };
                    out.insert(k.clone(), v);
                }
            }
        }
    }
    out
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_every_service_against_jetstream_nats() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .expect("docker-compose.yml");
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let root = merged(&docs[0]);
    let services = merged(root.get("services").expect("services"));

    let nats = services.get("nats").expect("a nats service");
    let nats = merged(nats);
    let image = nats["image"].as_str().expect("nats image");
    let version = image.split(':').nth(1).expect("a pinned nats image tag");
    assert!(
        mcplane_shared::bus::version_at_least(version, 2, 10),
        "nats image {image} must be 2.10 or newer"
    );
    let cmd = strings(&nats["command"]);
    assert!(
        cmd.windows(2).any(|w| w == ["-c", "/etc/nats/auth.conf"]),
        "NATS enforces the generated authorization: {cmd:?}"
    );
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/nats-auth.conf"
    ))
    .expect("examples/nats-auth.conf");
    let users = mcplane_shared::permissions::users(
        &mcplane_shared::Subjects::default(),
        &["demo".to_string(), "acme".to_string()],
        |u| format!("change-me-{u}"),
    );
    assert_eq!(
        shipped,
        mcplane_shared::permissions::render(&users),
        "examples/nats-auth.conf drifted: mcplane nats-config --example --tenant demo --tenant acme --out examples/nats-auth.conf"
    );
    // The same server options the test harness uses: JetStream with a storage folder.
    assert!(
        cmd.contains(&"-js".to_string()) && cmd.contains(&"-sd".to_string()),
        "{cmd:?}"
    );

    for service in Service::ALL {
        let binary = format!("mcplane-{service}");
        let (name, def) = services
            .iter()
            .find(|(_, def)| strings(&merged(def)["command"]).first() == Some(&binary))
            .unwrap_or_else(|| panic!("no compose service runs {binary}"));
        let def = merged(def);
        let env = merged(&def["environment"]);
        // Each service connects to the compose NATS as its own user of the shipped
        // authorization file.
        let url = env
            .get("MCPLANE_BUS__URL")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let user = users
            .iter()
            .find(|u| u.user == format!("mcplane-{service}"))
            .expect("a NATS user per service");
        assert_eq!(
            url,
            user.url("nats://nats:4222"),
            "{name} must use the compose NATS as its own user"
        );
        let depends = strings(&def["depends_on"]);
        assert!(
            depends.contains(&"nats".to_string()),
            "{name} depends on nats"
        );
    }
    // Stateless stages run several replicas.
    for stateless in ["auth", "enrichment", "redaction", "model"] {
        let def = merged(&services[stateless]);
        let replicas = merged(&def["deploy"])["replicas"].as_i64().unwrap_or(1);
        assert!(replicas >= 2, "{stateless} should run replicas");
    }
}
