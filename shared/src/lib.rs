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
pub mod rfc3339;
pub mod schema;
pub mod subjects;
pub mod telemetry;
pub mod tenant_keys;
pub mod topology;

pub use body::{
    alert::{
        AlertBatch, AlertSegment, AlertStatus, BatchedAlert, CanonicalAlert, RawAlert, Severity,
    },
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
/// The correlator's binary and `mcplane` take mimalloc anyway, with [`use_mimalloc!`].
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator [`use_mimalloc!`] declares; re-exported so that a binary needs no dependency
/// of its own (and every binary builds the one mimalloc the workspace pins).
#[doc(hidden)]
pub use mimalloc::MiMalloc;

/// Makes mimalloc the allocator of the program whose `main.rs` says `use_mimalloc!();`, for
/// the workers whose throughput is bound by `malloc` and whose idle memory stays in budget with
/// it (the correlator: a quarter to a third more alerts/s, `docs/BENCHMARKS.md`, "mimalloc for
/// the correlator").
/// A no-op when the `mimalloc` feature already made it every program's allocator.
#[cfg(not(feature = "mimalloc"))]
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;
    };
}

/// See the other definition: with the `mimalloc` feature the allocator is declared already.
#[cfg(feature = "mimalloc")]
#[macro_export]
macro_rules! use_mimalloc {
    () => {};
}
