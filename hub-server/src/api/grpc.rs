//! The gRPC server API (PROTOCOL.md §5.3): Centrifugo's `centrifugal.centrifugo.api.CentrifugoApi`
//! service over the same [`Executor`] as the HTTP API. This module only converts between the
//! protobuf messages and the executor's requests and results; no method is written twice.
//!
//! - Auth: metadata `authorization: apikey <KEY>` (scheme case-insensitive, constant-time
//!   comparison); otherwise `UNAUTHENTICATED`. An empty key refuses every call unless
//!   `grpc_api.insecure`.
//! - Errors travel in the response's `error` field with gRPC status OK, unless the call sends
//!   metadata `x-centrifugo-error-mode: transport`: then a gRPC status (100→INTERNAL,
//!   102/104→NOT_FOUND, 107/108→INVALID_ARGUMENT, 112→OUT_OF_RANGE, 113→ALREADY_EXISTS, others
//!   INTERNAL). Per-channel errors of `Broadcast` and per-command errors of `Batch` always stay
//!   in their replies.
//! - `bytes` payloads (`data`, `info`) must be JSON: this server speaks the JSON client protocol.
//!   Binary payloads go in `b64data`, as over HTTP.
//! - RPCs not listed in [`CentrifugoApi`]'s implementation below answer `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hub_core::Error;
use serde_json::value::RawValue;
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::{ApiError, Executor};

/// Types and stubs generated from `proto/api.proto` (package `centrifugal.centrifugo.api`):
/// the messages, the server trait and a client (`centrifugo_api_client::CentrifugoApiClient`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("centrifugal.centrifugo.api");
}

use proto::centrifugo_api_server::{CentrifugoApi, CentrifugoApiServer};

/// The gRPC service, ready for [`crate::server::serve_grpc`]: the API behind the key check.
pub type Service = InterceptedService<CentrifugoApiServer<GrpcApi>, KeyCheck>;

/// Builds the service over `executor`; `key` as in `grpc_api.key` ("" refuses every call
/// unless `insecure`).
pub fn service(executor: Executor, key: &str, insecure: bool) -> Service {
    CentrifugoApiServer::with_interceptor(
        GrpcApi { executor },
        KeyCheck {
            key: Arc::from(key),
            insecure,
        },
    )
}

/// The `authorization: apikey <KEY>` check, run before any method (unknown ones included).
#[derive(Clone)]
pub struct KeyCheck {
    key: Arc<str>,
    insecure: bool,
}

impl tonic::service::Interceptor for KeyCheck {
    fn call(&mut self, req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if self.insecure {
            return Ok(req);
        }
        let ok = !self.key.is_empty()
            && req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| super::apikey_matches(v, self.key.as_bytes()));
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated("unauthenticated"))
        }
    }
}

/// The implementation of `CentrifugoApi` over the executor.
#[derive(Clone)]
pub struct GrpcApi {
    executor: Executor,
}

type Result<T> = std::result::Result<T, Error>;

fn bad(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::BAD_REQUEST.with_message(message)
}

/// A `bytes` field that must hold JSON; empty = absent. `binary` names the field for base64
/// binary payloads, when the message has one.
fn json(
    field: &'static str,
    binary: Option<&'static str>,
    b: Bytes,
) -> Result<Option<Box<RawValue>>> {
    if b.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice::<Box<RawValue>>(&b)
        .map(Some)
        .map_err(|_| {
            bad(match binary {
                Some(alt) => format!(
                    "{field} is not valid JSON (this server speaks JSON; send binary as base64 in {alt})"
                ),
                None => format!("{field} is not valid JSON (this server speaks JSON)"),
            })
        })
}

fn unsigned(field: &'static str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| bad(format!("{field} must not be negative")))
}

fn proto_error(e: ApiError) -> proto::Error {
    proto::Error {
        code: e.code,
        message: e.message,
    }
}

fn publish_result(r: super::PublishResult) -> proto::PublishResult {
    proto::PublishResult {
        offset: r.offset,
        epoch: r.epoch,
    }
}

fn client_info(c: hub_core::protocol::ClientInfo) -> proto::ClientInfo {
    proto::ClientInfo {
        user: c.user,
        client: c.client,
        conn_info: c.conn_info,
        chan_info: c.chan_info,
    }
}

fn bool_value(v: Option<proto::BoolValue>) -> Option<super::BoolValue> {
    v.map(|v| super::BoolValue { value: v.value })
}

/// gRPC status of an API error in the transport error mode.
fn status_of(e: Error) -> Status {
    let code = match e.code {
        102 | 104 => tonic::Code::NotFound,
        107 | 108 => tonic::Code::InvalidArgument,
        112 => tonic::Code::OutOfRange,
        113 => tonic::Code::AlreadyExists,
        _ => tonic::Code::Internal,
    };
    Status::new(code, e.message)
}

fn transport_mode(md: &MetadataMap) -> bool {
    md.get("x-centrifugo-error-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"transport"))
}

/// Runs one method: counts the call, then wraps its outcome into `XxxResponse { error, result }`
/// (or a gRPC status in the transport error mode).
async fn unary<Req, T, R, Fut>(
    method: &'static str,
    req: Request<Req>,
    run: impl FnOnce(Req) -> Fut,
    make: impl FnOnce(Option<proto::Error>, Option<T>) -> R,
) -> std::result::Result<Response<R>, Status>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    metrics::counter!("hub_api_calls_total", "method" => method, "transport" => "grpc")
        .increment(1);
    let transport = transport_mode(req.metadata());
    let span = crate::telemetry::api_span(method, "grpc");
    crate::telemetry::adopt(&span, crate::telemetry::grpc_context(req.metadata()));
    let result = run(req.into_inner()).instrument(span.clone()).await;
    crate::telemetry::record_outcome(&span, result.as_ref().err());
    match result {
        Ok(v) => Ok(Response::new(make(None, Some(v)))),
        Err(e) if transport => Err(status_of(e)),
        Err(e) => Ok(Response::new(make(Some(proto_error(e.into())), None))),
    }
}

impl GrpcApi {
    async fn publish(&self, r: proto::PublishRequest) -> Result<proto::PublishResult> {
        let req = super::PublishRequest {
            channel: r.channel,
            data: json("data", Some("b64data"), r.data)?,
            b64data: r.b64data,
            skip_history: r.skip_history,
            tags: r.tags,
        };
        self.executor.publish(req).await.map(publish_result)
    }

    async fn broadcast(&self, r: proto::BroadcastRequest) -> Result<proto::BroadcastResult> {
        let req = super::BroadcastRequest {
            channels: r.channels,
            data: json("data", Some("b64data"), r.data)?,
            b64data: r.b64data,
            skip_history: r.skip_history,
            tags: r.tags,
        };
        let res = self.executor.broadcast(req).await?;
        Ok(proto::BroadcastResult {
            responses: res
                .responses
                .into_iter()
                .map(|r| proto::PublishResponse {
                    error: r.error.map(proto_error),
                    result: r.result.map(publish_result),
                })
                .collect(),
        })
    }

    async fn subscribe(&self, r: proto::SubscribeRequest) -> Result<proto::SubscribeResult> {
        let req = super::SubscribeRequest {
            channel: r.channel,
            user: r.user,
            client: r.client,
            expire_at: unsigned("expire_at", r.expire_at)?,
            info: json("info", Some("b64info"), r.info)?,
            b64info: r.b64info,
            data: json("data", None, r.data)?,
            override_: r.r#override.map(|o| super::SubscribeOverride {
                presence: bool_value(o.presence),
                join_leave: bool_value(o.join_leave),
                force_push_join_leave: bool_value(o.force_push_join_leave),
                force_recovery: bool_value(o.force_recovery),
                force_positioning: bool_value(o.force_positioning),
            }),
        };
        self.executor.subscribe(req).await?;
        Ok(proto::SubscribeResult {})
    }

    async fn unsubscribe(&self, r: proto::UnsubscribeRequest) -> Result<proto::UnsubscribeResult> {
        let req = super::UnsubscribeRequest {
            channel: r.channel,
            user: r.user,
            client: r.client,
        };
        self.executor.unsubscribe(req).await?;
        Ok(proto::UnsubscribeResult {})
    }

    async fn disconnect(&self, r: proto::DisconnectRequest) -> Result<proto::DisconnectResult> {
        let disconnect = match r.disconnect {
            Some(d) => Some(super::DisconnectSpec {
                code: u16::try_from(d.code)
                    .map_err(|_| bad("disconnect code must be at most 65535"))?,
                reason: d.reason,
            }),
            None => None,
        };
        let req = super::DisconnectRequest {
            user: r.user,
            client: r.client,
            whitelist: r.whitelist,
            disconnect,
        };
        self.executor.disconnect(req).await?;
        Ok(proto::DisconnectResult {})
    }

    async fn refresh(&self, r: proto::RefreshRequest) -> Result<proto::RefreshResult> {
        let req = super::RefreshRequest {
            user: r.user,
            client: r.client,
            expired: r.expired,
            expire_at: unsigned("expire_at", r.expire_at)?,
            info: json("info", None, r.info)?,
        };
        self.executor.refresh(req).await?;
        Ok(proto::RefreshResult {})
    }

    async fn presence(&self, r: proto::PresenceRequest) -> Result<proto::PresenceResult> {
        let res = self
            .executor
            .presence(super::ChannelRequest { channel: r.channel })
            .await?;
        Ok(proto::PresenceResult {
            presence: res
                .presence
                .into_iter()
                .map(|(k, c)| (k, client_info(c)))
                .collect(),
        })
    }

    async fn presence_stats(
        &self,
        r: proto::PresenceStatsRequest,
    ) -> Result<proto::PresenceStatsResult> {
        let res = self
            .executor
            .presence_stats(super::ChannelRequest { channel: r.channel })
            .await?;
        Ok(proto::PresenceStatsResult {
            num_clients: res.num_clients,
            num_users: res.num_users,
        })
    }

    async fn history(&self, r: proto::HistoryRequest) -> Result<proto::HistoryResult> {
        let req = super::HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|s| hub_core::protocol::StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: r.reverse,
        };
        let res = self.executor.history(req).await?;
        Ok(proto::HistoryResult {
            publications: res
                .publications
                .into_iter()
                .map(|p| proto::Publication {
                    data: p.data,
                    info: p.info.map(client_info),
                    offset: p.offset,
                    tags: p.tags,
                })
                .collect(),
            epoch: res.epoch,
            offset: res.offset,
        })
    }

    async fn history_remove(
        &self,
        r: proto::HistoryRemoveRequest,
    ) -> Result<proto::HistoryRemoveResult> {
        self.executor
            .history_remove(super::ChannelRequest { channel: r.channel })
            .await?;
        Ok(proto::HistoryRemoveResult {})
    }

    async fn channels(&self, r: proto::ChannelsRequest) -> Result<proto::ChannelsResult> {
        let res = self
            .executor
            .channels(super::ChannelsRequest { pattern: r.pattern })
            .await?;
        Ok(proto::ChannelsResult {
            channels: res
                .channels
                .into_iter()
                .map(|(c, i)| {
                    (
                        c,
                        proto::ChannelInfo {
                            num_clients: i.num_clients,
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
        })
    }

    async fn info(&self, _r: proto::InfoRequest) -> Result<proto::InfoResult> {
        let res = self.executor.info().await?;
        Ok(proto::InfoResult {
            nodes: res
                .nodes
                .into_iter()
                .map(|n| proto::NodeResult {
                    uid: n.uid,
                    name: n.name,
                    version: n.version,
                    num_clients: n.num_clients,
                    num_users: n.num_users,
                    num_channels: n.num_channels,
                    uptime: n.uptime,
                    metrics: None,
                    process: None,
                    num_subs: n.num_subs,
                })
                .collect(),
        })
    }

    /// `Batch`: commands in order (or concurrently with `parallel`), one reply each.
    async fn batch(&self, r: proto::BatchRequest) -> Result<proto::BatchResponse> {
        let replies = if r.parallel {
            let futs = r.commands.into_iter().map(|c| self.command(c));
            futures_util::future::join_all(futs).await
        } else {
            let mut out = Vec::with_capacity(r.commands.len());
            for c in r.commands {
                out.push(self.command(c).await);
            }
            out
        };
        Ok(proto::BatchResponse { replies })
    }

    /// One batch command: the one method it names (implemented here) runs; none → error 104
    /// (method not found), several → error 107.
    async fn command(&self, c: proto::Command) -> proto::Reply {
        let mut reply = proto::Reply::default();
        let named = [
            c.publish.is_some(),
            c.broadcast.is_some(),
            c.subscribe.is_some(),
            c.unsubscribe.is_some(),
            c.disconnect.is_some(),
            c.refresh.is_some(),
            c.presence.is_some(),
            c.presence_stats.is_some(),
            c.history.is_some(),
            c.history_remove.is_some(),
            c.channels.is_some(),
            c.info.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        let r: Result<()> = if named > 1 {
            Err(bad("a batch command has exactly one method"))
        } else if let Some(r) = c.publish {
            self.publish(r).await.map(|v| reply.publish = Some(v))
        } else if let Some(r) = c.broadcast {
            self.broadcast(r).await.map(|v| reply.broadcast = Some(v))
        } else if let Some(r) = c.subscribe {
            self.subscribe(r).await.map(|v| reply.subscribe = Some(v))
        } else if let Some(r) = c.unsubscribe {
            self.unsubscribe(r)
                .await
                .map(|v| reply.unsubscribe = Some(v))
        } else if let Some(r) = c.disconnect {
            self.disconnect(r).await.map(|v| reply.disconnect = Some(v))
        } else if let Some(r) = c.refresh {
            self.refresh(r).await.map(|v| reply.refresh = Some(v))
        } else if let Some(r) = c.presence {
            self.presence(r).await.map(|v| reply.presence = Some(v))
        } else if let Some(r) = c.presence_stats {
            self.presence_stats(r)
                .await
                .map(|v| reply.presence_stats = Some(v))
        } else if let Some(r) = c.history {
            self.history(r).await.map(|v| reply.history = Some(v))
        } else if let Some(r) = c.history_remove {
            self.history_remove(r)
                .await
                .map(|v| reply.history_remove = Some(v))
        } else if let Some(r) = c.channels {
            self.channels(r).await.map(|v| reply.channels = Some(v))
        } else if let Some(r) = c.info {
            self.info(r).await.map(|v| reply.info = Some(v))
        } else {
            Err(Error::METHOD_NOT_FOUND)
        };
        if let Err(e) = r {
            reply = proto::Reply {
                error: Some(proto_error(e.into())),
                ..Default::default()
            };
        }
        reply
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl CentrifugoApi for GrpcApi {
    async fn batch(&self, req: Request<proto::BatchRequest>) -> Reply<proto::BatchResponse> {
        metrics::counter!("hub_api_calls_total", "method" => "batch", "transport" => "grpc")
            .increment(1);
        let span = crate::telemetry::api_span("batch", "grpc");
        crate::telemetry::adopt(&span, crate::telemetry::grpc_context(req.metadata()));
        match GrpcApi::batch(self, req.into_inner())
            .instrument(span)
            .await
        {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn publish(&self, req: Request<proto::PublishRequest>) -> Reply<proto::PublishResponse> {
        unary(
            "publish",
            req,
            |r| GrpcApi::publish(self, r),
            |error, result| proto::PublishResponse { error, result },
        )
        .await
    }

    async fn broadcast(
        &self,
        req: Request<proto::BroadcastRequest>,
    ) -> Reply<proto::BroadcastResponse> {
        unary(
            "broadcast",
            req,
            |r| GrpcApi::broadcast(self, r),
            |error, result| proto::BroadcastResponse { error, result },
        )
        .await
    }

    async fn subscribe(
        &self,
        req: Request<proto::SubscribeRequest>,
    ) -> Reply<proto::SubscribeResponse> {
        unary(
            "subscribe",
            req,
            |r| GrpcApi::subscribe(self, r),
            |error, result| proto::SubscribeResponse { error, result },
        )
        .await
    }

    async fn unsubscribe(
        &self,
        req: Request<proto::UnsubscribeRequest>,
    ) -> Reply<proto::UnsubscribeResponse> {
        unary(
            "unsubscribe",
            req,
            |r| GrpcApi::unsubscribe(self, r),
            |error, result| proto::UnsubscribeResponse { error, result },
        )
        .await
    }

    async fn disconnect(
        &self,
        req: Request<proto::DisconnectRequest>,
    ) -> Reply<proto::DisconnectResponse> {
        unary(
            "disconnect",
            req,
            |r| GrpcApi::disconnect(self, r),
            |error, result| proto::DisconnectResponse { error, result },
        )
        .await
    }

    async fn presence(
        &self,
        req: Request<proto::PresenceRequest>,
    ) -> Reply<proto::PresenceResponse> {
        unary(
            "presence",
            req,
            |r| GrpcApi::presence(self, r),
            |error, result| proto::PresenceResponse { error, result },
        )
        .await
    }

    async fn presence_stats(
        &self,
        req: Request<proto::PresenceStatsRequest>,
    ) -> Reply<proto::PresenceStatsResponse> {
        unary(
            "presence_stats",
            req,
            |r| GrpcApi::presence_stats(self, r),
            |error, result| proto::PresenceStatsResponse { error, result },
        )
        .await
    }

    async fn history(&self, req: Request<proto::HistoryRequest>) -> Reply<proto::HistoryResponse> {
        unary(
            "history",
            req,
            |r| GrpcApi::history(self, r),
            |error, result| proto::HistoryResponse { error, result },
        )
        .await
    }

    async fn history_remove(
        &self,
        req: Request<proto::HistoryRemoveRequest>,
    ) -> Reply<proto::HistoryRemoveResponse> {
        unary(
            "history_remove",
            req,
            |r| GrpcApi::history_remove(self, r),
            |error, result| proto::HistoryRemoveResponse { error, result },
        )
        .await
    }

    async fn info(&self, req: Request<proto::InfoRequest>) -> Reply<proto::InfoResponse> {
        unary(
            "info",
            req,
            |r| GrpcApi::info(self, r),
            |error, result| proto::InfoResponse { error, result },
        )
        .await
    }

    async fn refresh(&self, req: Request<proto::RefreshRequest>) -> Reply<proto::RefreshResponse> {
        unary(
            "refresh",
            req,
            |r| GrpcApi::refresh(self, r),
            |error, result| proto::RefreshResponse { error, result },
        )
        .await
    }

    async fn channels(
        &self,
        req: Request<proto::ChannelsRequest>,
    ) -> Reply<proto::ChannelsResponse> {
        unary(
            "channels",
            req,
            |r| GrpcApi::channels(self, r),
            |error, result| proto::ChannelsResponse { error, result },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_pass_and_other_bytes_are_a_bad_request() {
        let ok = json("data", Some("b64data"), Bytes::from_static(br#"{"a":1}"#)).unwrap();
        assert_eq!(ok.unwrap().get(), r#"{"a":1}"#);
        assert!(json("data", None, Bytes::new()).unwrap().is_none());
        let e = json(
            "data",
            Some("b64data"),
            Bytes::from_static(b"\x00\x01 not json"),
        )
        .unwrap_err();
        assert_eq!(e.code, 107);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn transport_mode_maps_codes_like_centrifugo() {
        let code = |c: u32| status_of(Error::new(c, "x")).code();
        assert_eq!(code(100), tonic::Code::Internal);
        assert_eq!(code(102), tonic::Code::NotFound);
        assert_eq!(code(104), tonic::Code::NotFound);
        assert_eq!(code(107), tonic::Code::InvalidArgument);
        assert_eq!(code(108), tonic::Code::InvalidArgument);
        assert_eq!(code(112), tonic::Code::OutOfRange);
        assert_eq!(code(113), tonic::Code::AlreadyExists);
        assert_eq!(code(111), tonic::Code::Internal);
    }
}
