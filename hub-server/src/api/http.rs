//! The HTTP server API: `POST {prefix}/<method>` with Centrifugo's auth, envelopes and error
//! modes (PROTOCOL.md §5.1).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_core::Error;
use serde_json::value::RawValue;
use tracing::Instrument as _;

use super::{same, ApiError, Executor};

/// What the HTTP API handler needs.
#[derive(Clone)]
pub struct ApiState {
    /// The executor.
    pub executor: Executor,
    /// The configured key ("" = none).
    pub key: String,
    /// Serve without a key.
    pub insecure: bool,
    /// Errors as HTTP statuses by default.
    pub transport_errors: bool,
}

/// Centrifugo's check: `X-API-Key` if set, else `Authorization: apikey <key>`; when that
/// does not authorize, `?api_key=` still may. Empty header values count as absent.
fn authorized(
    st: &ApiState,
    headers: &HeaderMap,
    query: &std::collections::HashMap<String, String>,
) -> bool {
    if st.insecure {
        return true;
    }
    if st.key.is_empty() {
        return false;
    }
    let key = st.key.as_bytes();
    let header = |name| {
        headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty())
    };
    let by_header = if let Some(v) = header(axum::http::HeaderName::from_static("x-api-key")) {
        same(v, key)
    } else if let Some(v) =
        header(axum::http::header::AUTHORIZATION).and_then(|v| std::str::from_utf8(v).ok())
    {
        super::apikey_matches(v, key)
    } else {
        false
    };
    by_header
        || query
            .get("api_key")
            .is_some_and(|k| same(k.as_bytes(), key))
}

fn status_of(e: &Error) -> StatusCode {
    match e.code {
        100 => StatusCode::INTERNAL_SERVER_ERROR,
        102 | 104 => StatusCode::NOT_FOUND,
        107 | 108 => StatusCode::BAD_REQUEST,
        112 => StatusCode::RANGE_NOT_SATISFIABLE,
        113 => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `POST {prefix}/{method}`
pub async fn handle(
    State(st): State<ApiState>,
    Path(method): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&st, &headers, &query) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let transport_mode = st.transport_errors
        || headers
            .get("x-centrifugo-error-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"transport"));
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        "{}"
    } else {
        match std::str::from_utf8(&body) {
            Ok(t) => t,
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "request body is not UTF-8").into_response()
            }
        }
    };
    let params: &RawValue = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}"),
            )
                .into_response()
        }
    };
    if !params.get().trim_start().starts_with('{') {
        return (
            StatusCode::BAD_REQUEST,
            "request body must be a JSON object",
        )
            .into_response();
    }
    metrics::counter!("hub_api_calls_total", "method" => method.clone(), "transport" => "http")
        .increment(1);
    let span = crate::telemetry::api_span(&method, "http");
    crate::telemetry::adopt(&span, crate::telemetry::http_context(&headers));
    let result = st
        .executor
        .call(&method, params)
        .instrument(span.clone())
        .await;
    crate::telemetry::record_outcome(&span, result.as_ref().err());
    match result {
        Ok(result) => json_response(
            StatusCode::OK,
            serde_json::json!({ "result": result }).to_string(),
        ),
        Err(e) if transport_mode => json_response(
            status_of(&e),
            serde_json::to_string(&ApiError::from(e.clone())).unwrap_or_default(),
        ),
        Err(e) => json_response(
            StatusCode::OK,
            serde_json::json!({ "error": ApiError::from(e) }).to_string(),
        ),
    }
}
