//! The service dependency graph of a CMDB file (`[[services]]` with `name` and
//! `dependencies`, as in `examples/cmdb.toml`), reduced to what alert correlation needs: which
//! services are connected, which depends on which, and which of a set of alerting services is
//! the probable root.
//!
//! Only the two fields are read, so the enrichment service's richer CMDB model (owners,
//! runbooks, restricted fields) stays its own; both read the same file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    services: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// Services and their direct dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    dependencies: BTreeMap<String, BTreeSet<String>>,
    /// Each service's connected component, named by its smallest member.
    components: BTreeMap<String, String>,
}

impl Topology {
    /// Parses a CMDB file's text; a dependency naming an unknown service is an error.
    pub fn parse(text: &str) -> Result<Topology, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut dependencies = BTreeMap::new();
        for s in &file.services {
            if dependencies
                .insert(
                    s.name.clone(),
                    s.dependencies.iter().cloned().collect::<BTreeSet<_>>(),
                )
                .is_some()
            {
                return Err(format!("service {:?} is listed twice", s.name));
            }
        }
        for (name, deps) in &dependencies {
            if let Some(unknown) = deps.iter().find(|d| !dependencies.contains_key(*d)) {
                return Err(format!(
                    "service {name:?} depends on {unknown:?}, which is not in the file"
                ));
            }
        }
        Ok(Topology::from_edges(dependencies))
    }

    /// Reads and parses a CMDB file.
    pub fn load(path: &Path) -> Result<Topology, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Topology::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A topology from `service -> direct dependencies` (tests, and [`Topology::parse`]).
    pub fn from_edges(dependencies: BTreeMap<String, BTreeSet<String>>) -> Topology {
        // Union-find over the undirected edges; the component is named by its smallest member.
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        fn find(parent: &mut BTreeMap<String, String>, x: &str) -> String {
            let mut root = x.to_string();
            while let Some(p) = parent.get(&root).filter(|p| **p != root) {
                root = p.clone();
            }
            root
        }
        for (name, deps) in &dependencies {
            parent.entry(name.clone()).or_insert_with(|| name.clone());
            for d in deps {
                parent.entry(d.clone()).or_insert_with(|| d.clone());
                let (a, b) = (find(&mut parent, name), find(&mut parent, d));
                if a != b {
                    let (small, large) = if a < b { (a, b) } else { (b, a) };
                    parent.insert(large, small);
                }
            }
        }
        let names: Vec<String> = parent.keys().cloned().collect();
        let components = names
            .into_iter()
            .map(|n| {
                let c = find(&mut parent, &n);
                (n, c)
            })
            .collect();
        Topology {
            dependencies,
            components,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
    }

    /// Whether `service` is in the CMDB.
    pub fn contains(&self, service: &str) -> bool {
        self.components.contains_key(service)
    }

    /// The connected component `service` belongs to (its own name when not in the CMDB).
    pub fn component<'s>(&'s self, service: &'s str) -> &'s str {
        self.components.get(service).map_or(service, String::as_str)
    }

    /// Whether `service` depends on `on`, directly or through other services.
    pub fn depends_on(&self, service: &str, on: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![service];
        while let Some(s) = stack.pop() {
            for d in self.dependencies.get(s).into_iter().flatten() {
                if d == on {
                    return true;
                }
                if seen.insert(d.as_str()) {
                    stack.push(d);
                }
            }
        }
        false
    }

    /// Whether one of the two depends on the other.
    pub fn related(&self, a: &str, b: &str) -> bool {
        // Services in different components (or outside the CMDB) never are: a lookup, not a walk.
        a != b
            && self.contains(a)
            && self.component(a) == self.component(b)
            && (self.depends_on(a, b) || self.depends_on(b, a))
    }

    /// The probable root among alerting `services`: one none of whose (transitive) dependencies
    /// is alerting, preferring the one most of the others depend on, then the deepest, then
    /// the first by name. `None` for an empty set.
    pub fn root<'s>(&self, services: &[&'s str]) -> Option<&'s str> {
        let candidates = services
            .iter()
            .filter(|s| !services.iter().any(|o| o != *s && self.depends_on(s, o)));
        candidates
            .map(|s| {
                let dependents = services
                    .iter()
                    .filter(|o| *o != s && self.depends_on(o, s))
                    .count();
                (dependents, self.depth(s), std::cmp::Reverse(*s))
            })
            .max()
            .map(|(_, _, std::cmp::Reverse(s))| s)
    }

    /// The length of the longest chain of services depending on `service`.
    fn depth(&self, service: &str) -> usize {
        let mut depth = 0;
        let mut level: BTreeSet<&str> = BTreeSet::from([service]);
        let mut seen = level.clone();
        while depth <= self.dependencies.len() {
            let next: BTreeSet<&str> = self
                .dependencies
                .iter()
                .filter(|(_, deps)| deps.iter().any(|d| level.contains(d.as_str())))
                .map(|(n, _)| n.as_str())
                .filter(|n| seen.insert(n))
                .collect();
            if next.is_empty() {
                break;
            }
            depth += 1;
            level = next;
        }
        depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cmdb.toml");
        Topology::load(&path).unwrap()
    }

    #[test]
    fn the_example_cmdb_is_one_connected_graph() {
        let t = example();
        assert!(t.depends_on("checkout", "payments-db"), "via payments");
        assert!(!t.depends_on("payments-db", "checkout"));
        assert!(t.related("payments-db", "checkout"));
        assert!(!t.related("inventory", "payments-db"));
        assert_eq!(t.component("payments-db"), t.component("web-frontend"));
        assert_eq!(t.component("not-in-cmdb"), "not-in-cmdb");
    }

    #[test]
    fn the_root_is_the_deepest_alerting_dependency() {
        let t = example();
        assert_eq!(
            t.root(&["checkout", "payments", "payments-db"]),
            Some("payments-db")
        );
        assert_eq!(t.root(&["web-frontend", "checkout"]), Some("checkout"));
        assert_eq!(t.root(&["search"]), Some("search"));
        assert_eq!(t.root(&[]), None);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let e =
            Topology::parse("[[services]]\nname = \"a\"\ndependencies = [\"b\"]\n").unwrap_err();
        assert!(e.contains("\"b\""), "{e}");
        let e = Topology::parse("[[services]]\nname = \"a\"\n[[services]]\nname = \"a\"\n")
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
