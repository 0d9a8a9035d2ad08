//! # hub-server
//!
//! The hub server over [`hub_core`]: configuration in Centrifugo v6's layout, JWT auth,
//! the HTTP server API, `/metrics`, health, and graceful drain. `main` only parses the
//! command line and calls [`server::serve`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod duration;
pub mod handler;
pub mod metrics;
pub mod server;
