//! shoal-core: the API kinds and the pure logic every other layer builds on.
//!
//! Nothing in this crate does IO: no HTTP, no database, no async runtime. It holds
//!
//! - [`kinds`]: every shoal resource kind as a Rust type (`#[derive(CustomResource)]`
//!   gives the object shape, the OpenAPI schema and the printer columns);
//! - [`validation`]: Kubernetes' rules for names and labels, and [`FieldError`], the
//!   field-level error every validator reports;
//! - [`schema`]: checking a JSON object against a structural OpenAPI schema (types,
//!   required fields, enums, unknown fields) the way the Kubernetes API server does for
//!   custom resources;
//! - [`selector`]: label and field selectors, parsed and matched;
//! - [`taskflow`]: the task/pipeline engine's kinds, admission rules and scheduler;
//! - [`clock`]: the one clock abstraction, so nothing reads the system time directly;
//! - [`diff`]: the three-way diff of `kubectl apply` (live, target, last applied → merge patch);
//! - [`render`]: a component rendered for one cluster (values merged group → cluster,
//!   template → checked objects) and the `dependsOn` install order;
//! - [`inventory`]: the fleet view of a component (versions per cluster and node, drift
//!   from the last-applied copy), tallied from what was read in each cluster;
//! - [`plan`]: release planning — waves, order, risk scores;
//! - [`release`]: the release state machine (which clusters start, gates, failure policy);
//! - [`window`]: change windows and freezes, in real time zones.

pub mod clock;
pub mod condition;
pub mod diff;
pub mod inventory;
pub mod kinds;
pub mod plan;
pub mod release;
pub mod render;
pub mod schema;
pub mod selector;
pub mod taskflow;
pub mod validation;
pub mod window;

pub use validation::{FieldError, FieldErrorKind};
