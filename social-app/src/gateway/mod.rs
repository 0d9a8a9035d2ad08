//! The web gateway: the JSON API and the web page over the services (gRPC), the hub's
//! WebSocket endpoint when the node is embedded, and security headers on every answer.
//!
//! The API is described route by route in `social-app/API.md`.

pub mod api;
pub mod auth;
pub mod error;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hub_core::Node;

use crate::config::Secrets;
use crate::rpc::Clients;
use auth::{LoginLimiter, Sessions};

/// What the handlers share.
pub struct Gateway {
    /// The services.
    pub clients: Clients,
    /// Session tokens and cookies.
    pub sessions: Sessions,
    /// Signs connection tokens for the hub.
    pub hub_secret: String,
    /// The hub's WebSocket URL for browsers; `None`: this gateway's `/connection/websocket`.
    pub hub_ws_url: Option<String>,
    /// Login attempts.
    pub login_limiter: Arc<LoginLimiter>,
}

impl Gateway {
    /// The gateway state.
    pub fn new(
        clients: Clients,
        secrets: &Secrets,
        secure_cookies: bool,
        hub_ws_url: Option<String>,
        login_per_minute: u32,
    ) -> Arc<Self> {
        Arc::new(Gateway {
            clients,
            sessions: Sessions::new(&secrets.session, secure_cookies),
            hub_secret: secrets.hub.clone(),
            hub_ws_url,
            login_limiter: LoginLimiter::new(login_per_minute),
        })
    }
}

/// The gateway's routes; with `node`, also the hub's WebSocket endpoint. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (login limits use the address).
pub fn router(gw: Arc<Gateway>, node: Option<Node>) -> Router {
    let mut r = Router::new()
        .route("/", get(page::index))
        .route("/static/{file}", get(page::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::handler))
        .nest("/api", api::routes())
        .with_state(gw);
    if let Some(node) = node {
        r = r.route("/connection/websocket", any(websocket).with_state(node));
    }
    // `layer`, not `route_layer`: requests no route matches are counted too (as `other`).
    r.layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn(security_headers))
}

async fn websocket(
    State(node): State<Node>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    node.accept_websocket(req, Some(addr)).into_response()
}

/// Headers that keep the page to its own scripts and out of frames.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// The web page and its assets, compiled into the binary (no CDN).
mod page {
    use super::*;
    use axum::extract::Path;

    const INDEX: &str = include_str!("../../web/index.html");
    const ASSETS: &[(&str, &str, &[u8])] = &[
        (
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        ),
        (
            "style.css",
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        ),
        (
            "centrifuge.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/centrifuge.js"),
        ),
    ];

    pub(super) async fn index() -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            INDEX,
        )
            .into_response()
    }

    pub(super) async fn asset(Path(file): Path<String>) -> Response {
        match ASSETS.iter().find(|(name, _, _)| *name == file) {
            Some((_, mime, body)) => (
                [
                    (header::CONTENT_TYPE, *mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
        }
    }
}
