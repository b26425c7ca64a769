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
        assert_eq!(
            env.get("MCPLANE_BUS__URL").and_then(|v| v.as_str()),
            Some("nats://nats:4222"),
            "{name} must use the compose NATS"
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
