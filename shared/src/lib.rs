//! The common crate of mcplane: every contract two services share lives here and only here.
//!
//! Services depend on this crate and never on each other. It holds the wire contracts (the
//! [`Envelope`] and its body types, the [`Subjects`], the stable [`ErrorCode`]s) and the
//! machinery every worker needs the same way: the JetStream [`bus`], the sled idempotency
//! [`ledger`], typed [`config`] loading and [`telemetry`].

pub mod alerts;
pub mod api_key;
pub mod body;
pub mod bus;
pub mod canonical_json;
pub mod config;
pub mod envelope;
pub mod error;
pub mod health;
pub mod ledger;
pub mod permissions;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod schema;
pub mod subjects;
pub mod telemetry;
pub mod tenant_keys;
pub mod topology;

pub use body::{
    alert::{AlertBatch, AlertStatus, BatchedAlert, CanonicalAlert, RawAlert, Severity},
    audit::{AuditEvent, AuditOutcome},
    dead_letter::{DeadLetter, RecordOrigin},
    exchange::{AiRequest, AiResponse, ContextItem, Exchange, RequestType, Usage},
    incident::{IncidentAlert, IncidentEvent, IncidentEventKind, IncidentSummary},
    usage::BudgetAlert,
};
pub use envelope::{
    BodyKind, Classification, Envelope, Itinerary, Kind, Principal, PrincipalKind, Step,
    TraceContext,
};
pub use error::{ErrorBody, ErrorCode, ServiceError};
pub use subjects::{Service, Subjects};

/// The default subject prefix, also used to derive stream and bucket names.
pub const DEFAULT_PREFIX: &str = "mcplane";

/// With the `mimalloc` feature every mcplane program allocates through mimalloc (declared here,
/// in the crate every binary links, so that no binary can miss it). Off by default: it makes the
/// request pipeline about a quarter faster at saturation but holds 4-7 MiB more per idle worker,
/// which would break the 20 MB idle budget; `docs/BENCHMARKS.md` ("Allocator") has the figures.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
