//! The reference social network over the hub: users and friends, posts and live feeds,
//! chats with live messages and unread counts, generic counters.
//!
//! ```text
//! cargo run -p social-app -- serve --dev      # then open http://127.0.0.1:8080
//! ```
//!
//! Four gRPC services ([`services`]: users, posts, chats, counters) own their data through
//! the [`social_store`] traits (redb files by default, MongoDB in production, Redis for
//! counters and feed caches when configured) and publish live events through the hub
//! ([`realtime`]: a hub-core node embedded in the process by default, or an external
//! hub-server cluster over its gRPC API). The [`gateway`] serves the JSON API and the web
//! page and calls the services over gRPC ([`rpc`]). `serve` runs everything in one process;
//! `service NAME` and `gateway` run the parts as separate processes ([`app`]).

pub mod app;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod realtime;
pub mod rpc;
pub mod seed;
pub mod services;

/// The code protox and tonic generate from `proto/social.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("social.v1");
}
