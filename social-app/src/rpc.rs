//! How the gateway and the services call each other: gRPC over tonic channels, each call
//! carrying the internal token; store errors as gRPC statuses.

use std::sync::Arc;

use social_store::StoreError;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::chats_client::ChatsClient;
use crate::pb::counters_client::CountersClient;
use crate::pb::posts_client::PostsClient;
use crate::pb::users_client::UsersClient;

/// The metadata key of the internal token.
pub const TOKEN_KEY: &str = "x-internal-token";

/// Adds the internal token to outgoing calls.
#[derive(Clone)]
pub struct Attach(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Attach {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        r.metadata_mut().insert(TOKEN_KEY, self.0.clone());
        Ok(r)
    }
}

/// Refuses incoming calls without the internal token; counts the calls of its service in
/// `social_service_calls_total`.
#[derive(Clone)]
pub struct Check {
    token: Arc<str>,
    service: &'static str,
}

impl Check {
    /// Accepts calls that carry `token`.
    pub fn new(token: &str) -> Self {
        Check {
            token: token.into(),
            service: "",
        }
    }

    /// The same check, counting calls under `service`.
    pub fn named(&self, service: &'static str) -> Self {
        Check {
            token: self.token.clone(),
            service,
        }
    }
}

impl Interceptor for Check {
    fn call(&mut self, r: Request<()>) -> Result<Request<()>, Status> {
        let given = r
            .metadata()
            .get(TOKEN_KEY)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let ok = constant_time_eq(given, self.token.as_bytes());
        let result = if ok { "ok" } else { "unauthenticated" };
        metrics::counter!("social_service_calls_total", "service" => self.service, "result" => result)
            .increment(1);
        if ok {
            Ok(r)
        } else {
            Err(Status::unauthenticated("missing or wrong internal token"))
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client channel with the internal token attached.
pub type Authed = InterceptedService<Channel, Attach>;

/// Clients of the four services.
#[derive(Clone)]
pub struct Clients {
    /// Users and friends.
    pub users: UsersClient<Authed>,
    /// Posts and feeds.
    pub posts: PostsClient<Authed>,
    /// Chats.
    pub chats: ChatsClient<Authed>,
    /// Counters.
    pub counters: CountersClient<Authed>,
}

/// Where each service listens (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Users service.
    pub users: String,
    /// Posts service.
    pub posts: String,
    /// Chats service.
    pub chats: String,
    /// Counters service.
    pub counters: String,
}

impl Clients {
    /// Clients that connect on first use (and reconnect) to `addresses`, sending `token`.
    pub fn lazy(addresses: &Addresses, token: &str) -> Result<Self, String> {
        let attach = Attach(
            token
                .parse()
                .map_err(|_| "the internal token must be printable ASCII".to_string())?,
        );
        let channel = |addr: &str| -> Result<Authed, String> {
            let ch = Endpoint::from_shared(addr.to_string())
                .map_err(|e| format!("service address {addr:?}: {e}"))?
                .connect_timeout(std::time::Duration::from_secs(3))
                .timeout(std::time::Duration::from_secs(30))
                .connect_lazy();
            Ok(InterceptedService::new(ch, attach.clone()))
        };
        Ok(Clients {
            users: UsersClient::new(channel(&addresses.users)?),
            posts: PostsClient::new(channel(&addresses.posts)?),
            chats: ChatsClient::new(channel(&addresses.chats)?),
            counters: CountersClient::new(channel(&addresses.counters)?),
        })
    }
}

/// A store error as a gRPC status.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(m) => Status::already_exists(m),
        StoreError::Unavailable(m) => {
            tracing::warn!(error = %m, "store unavailable");
            Status::unavailable("storage unavailable, retry later")
        }
        StoreError::Corrupt(m) => {
            tracing::error!(error = %m, "corrupt record");
            Status::internal("corrupt record")
        }
    }
}

/// An invalid argument, as `field: reason` (the gateway turns it into a 400 naming both).
pub fn invalid(field: &str, reason: &str) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}
