//! Every integration test of the fleet, as modules of one test binary.
//!
//! Each of these files links the whole fleet (every service crate, rdkafka's bundled
//! librdkafka, the HTTP stack); as a test binary of its own, each was a ~185 MB link, and the
//! seventeen of them filled the CI machine's disk (a linker killed by `SIGBUS`, then
//! `No space left on device`). One binary links once. Nothing here shares process state
//! between modules: the fault-injection points live in the `mcplane-under-test` child process,
//! and every test starts its own nats-server on a free port.
//!
//! Run one file's tests with its module name as the filter, e.g.
//! `cargo test -p mcplane-tests --test integration faults::`.

mod alert_feeds;
mod audit_shred;
mod batch_linger;
mod correlator_replicas;
mod deploy;
mod discovery;
mod e2e;
mod faults;
mod incident_history;
mod large_requests;
mod limits;
mod model_crash;
mod nats_isolation;
mod openai_compat;
mod policy;
mod probes;
mod redaction_roundtrip;
mod tenancy;
