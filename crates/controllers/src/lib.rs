//! shoal's controllers: level-triggered reconcilers on kube-runtime that talk to shoal's
//! own API through kube-rs, exactly as an out-of-process controller would.
//!
//! ```text
//!  shoal serve ──► API server ◄──HTTP (kube::Client)── controllers
//!                     │                                  ├─ taskflow: PipelineRun reconciler
//!                   store                                  │     └─ executors (tokio tasks)
//!                                                          ├─ component: the fleet view of
//!                                                          │  each Component (a periodic pass)
//!                                                          ├─ cluster: probes each member,
//!                                                          │  its Ready condition and Events
//!                                                          └─ release: gray-scale releases
//! ```
//!
//! The key decision: controllers never reach into the store or the API server's
//! internals. Everything they decide is derived from the objects they read, so a
//! restart, a second replica or an external controller sees and decides the same.

mod cache;
pub mod clock;
pub mod cluster;
pub mod component;
pub mod events;
pub mod executor;
pub mod passes;
pub mod release;
pub mod taskflow;

pub use clock::Clock;
pub use executor::{ExecContext, ExecError, Executor, Outcome, Registry};

/// Whether `ours` (this process's own last write of an object) is newer than `copy` (a
/// cached, watched or listed one). shoal's resourceVersions are store revisions, so
/// "newer" is a comparison; one that is not a number (not shoal's) is never newer.
pub(crate) fn is_newer<K: kube::Resource>(ours: &K, copy: &K) -> bool {
    let revision = |o: &K| o.meta().resource_version.as_deref()?.parse::<u64>().ok();
    matches!((revision(ours), revision(copy)), (Some(o), Some(c)) if o > c)
}

/// An error and its causes on one line (`a: b: c`), for logs and statuses.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
