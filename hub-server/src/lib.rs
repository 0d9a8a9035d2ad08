//! # hub-server
//!
//! The hub server over [`hub_core`]: configuration in Centrifugo v6's layout, JWT auth,
//! the HTTP and gRPC server APIs (one [`api::Executor`] behind both), `/metrics`, health, and
//! graceful drain. `main` only parses the command line, binds, and calls
//! [`server::serve_all`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod duration;
pub mod handler;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod telemetry;
pub mod tls;
