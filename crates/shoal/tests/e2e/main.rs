//! shoal's integration and end-to-end tests, as one test binary.
//!
//! Every module drives the real `shoal` binary (see [`common`]) with the clients users
//! have: kubectl, kube-rs, the official Python client, HTTP, the `shoal` CLI and, for the
//! dashboard, headless Chromium. They are modules of one binary rather than one binary per file because each
//! test binary links the whole dependency tree: twenty of them took about 75 MB of disk
//! and a link each, and a CI machine once ran out of disk building them.
//!
//! One module or test at a time, as with separate binaries:
//!
//! ```text
//! cargo test -p shoal --test e2e release::
//! cargo test -p shoal --test e2e ui:: -- --ignored --nocapture
//! ```

mod common;

mod bad_input;
mod cli;
mod cluster_health;
mod component;
mod crash;
mod etcd;
mod fleet_view;
mod ha;
mod kube_client;
mod kubectl;
mod node_pool;
mod plan;
mod python;
mod rehearse;
mod release;
mod rollout;
mod server_edges;
mod sim;
mod ssa;
mod taskflow;
mod tls;
mod ui;
