//! The body types that travel inside an [`crate::Envelope`], one module per domain.

pub mod alert;
pub mod audit;
pub mod catalog;
pub mod dead_letter;
pub mod exchange;
pub mod incident;
pub mod usage;
