//! How the gateway and the services call each other: gRPC over tonic channels, each call
//! carrying the internal token; store errors as gRPC statuses.

use std::sync::Arc;

use social_store::StoreError;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

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

/// Counts the calls made through it in `social_rpc_calls_total{service,method,code}`.
///
/// The code is the call's gRPC status: a failed call comes back as a trailers-only response
/// (`grpc-status` in the headers, which is how tonic answers an error to a unary call), a
/// service that cannot be reached or answer in time as a transport error (`Unavailable`,
/// `Canceled`, tonic's code for a timeout); any other response counts as `OK`.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    service: &'static str,
}

impl<S> Metered<S> {
    /// `inner`, its calls counted under `service`.
    pub fn new(inner: S, service: &'static str) -> Self {
        Metered { inner, service }
    }
}

impl<S, B, R> Service<http::Request<B>> for Metered<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<StdError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Status::from_error(e.into()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // `/social.v1.Users/Login`: the method is the last segment.
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        let service = self.service;
        let call = self.inner.call(req);
        Box::pin(async move {
            let r = call.await.map_err(|e| Status::from_error(e.into()));
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes())),
                Err(status) => status.code(),
            };
            metrics::counter!("social_rpc_calls_total", "service" => service, "method" => method, "code" => code_name(code))
                .increment(1);
            r
        })
    }
}

/// A gRPC code as gRPC's own implementations name it (`OK`, `NotFound`...).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A client channel with the internal token attached, its calls counted.
pub type Authed = Metered<InterceptedService<Channel, Attach>>;

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
        let channel = |addr: &str, service: &'static str| -> Result<Authed, String> {
            let ch = Endpoint::from_shared(addr.to_string())
                .map_err(|e| format!("service address {addr:?}: {e}"))?
                .connect_timeout(std::time::Duration::from_secs(3))
                .timeout(std::time::Duration::from_secs(30))
                .connect_lazy();
            Ok(Metered::new(
                InterceptedService::new(ch, attach.clone()),
                service,
            ))
        };
        Ok(Clients {
            users: UsersClient::new(channel(&addresses.users, "users")?),
            posts: PostsClient::new(channel(&addresses.posts, "posts")?),
            chats: ChatsClient::new(channel(&addresses.chats, "chats")?),
            counters: CountersClient::new(channel(&addresses.counters, "counters")?),
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
