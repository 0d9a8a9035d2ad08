//! Sessions: an HS256 JWT whose `sub` is the user id, carried either in the `session`
//! cookie (HttpOnly, SameSite=Lax; `Secure` outside `--dev`) for the web page or as a
//! `Bearer` token for API clients. Cookie sessions are protected from cross-site requests by
//! a double-submit token: every request that changes something must send the `csrf` cookie's
//! value in the `x-csrf-token` header (a bearer token needs none: browsers never attach it on
//! their own). Login attempts are rate limited per email and per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::Gateway;
use crate::rpc::constant_time_eq;

/// How long a session lasts.
pub const SESSION_SECS: u64 = 7 * 24 * 3600;
/// The session cookie.
pub const SESSION_COOKIE: &str = "session";
/// The CSRF cookie (readable by the page's script).
pub const CSRF_COOKIE: &str = "csrf";
/// The header that must repeat the CSRF cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Signs and checks session tokens.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    secure: bool,
}

impl Sessions {
    /// With `secret`; `secure` adds the cookies' `Secure` attribute.
    pub fn new(secret: &str, secure: bool) -> Self {
        Sessions {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            secure,
        }
    }

    /// A session token for `user`.
    pub fn token(&self, user: &str) -> Result<String, ApiError> {
        let now = now();
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: user.to_string(),
                exp: now + SESSION_SECS,
                iat: now,
            },
            &self.encoding,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a session");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
    }

    /// The user of a valid token.
    pub fn verify(&self, token: &str) -> Option<String> {
        let v = Validation::new(Algorithm::HS256);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims.sub)
            .filter(|s| !s.is_empty())
    }

    /// The cookies that open a session: `(session, csrf)` `Set-Cookie` values.
    pub fn cookies(&self, token: &str, csrf: &str) -> [HeaderValue; 2] {
        let secure = if self.secure { "; Secure" } else { "" };
        [
            format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECS}{secure}"),
            format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Lax; Max-Age={SESSION_SECS}{secure}"),
        ]
        .map(|c| HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("")))
    }

    /// The cookies that end a session.
    pub fn clear_cookies(&self) -> [HeaderValue; 2] {
        [
            HeaderValue::from_static("session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
            HeaderValue::from_static("csrf=; Path=/; SameSite=Lax; Max-Age=0"),
        ]
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct Session {
    /// User id.
    pub user: String,
}

impl FromRequestParts<Arc<Gateway>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ApiError::unauthenticated("Authorization: expected Bearer <token>")
                })?;
            let user = gw
                .sessions
                .verify(token.trim())
                .ok_or_else(|| ApiError::unauthenticated("invalid or expired session"))?;
            return Ok(Session { user });
        }
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .ok_or_else(|| ApiError::unauthenticated("not signed in"))?;
        let user = gw
            .sessions
            .verify(token)
            .ok_or_else(|| ApiError::unauthenticated("invalid or expired session"))?;
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let expected = cookie(&parts.headers, CSRF_COOKIE).unwrap_or_default();
            let given = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if expected.is_empty() || !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf: the x-csrf-token header must repeat the csrf cookie",
                ));
            }
        }
        Ok(Session { user })
    }
}

/// Login attempts per minute, per email and per client address.
pub struct LoginLimiter {
    by_email: DefaultKeyedRateLimiter<String>,
    by_addr: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimiter {
    /// `per_minute` attempts (at least 1) per key.
    pub fn new(per_minute: u32) -> Arc<Self> {
        let q = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        let l = Arc::new(LoginLimiter {
            by_email: RateLimiter::keyed(q),
            by_addr: RateLimiter::keyed(q.allow_burst(
                NonZeroU32::new(per_minute.max(1).saturating_mul(5)).unwrap_or(NonZeroU32::MIN),
            )),
        });
        // Forget idle keys now and then, so the maps stay small.
        let weak = Arc::downgrade(&l);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(l) = weak.upgrade() else { return };
                l.by_email.retain_recent();
                l.by_addr.retain_recent();
            }
        });
        l
    }

    /// Whether one more attempt for `email` from `addr` is allowed now.
    pub fn allow(&self, email: &str, addr: Option<IpAddr>) -> bool {
        let by_addr = addr.is_none_or(|a| self.by_addr.check_key(&a).is_ok());
        by_addr
            && self
                .by_email
                .check_key(&email.trim().to_lowercase())
                .is_ok()
    }
}
