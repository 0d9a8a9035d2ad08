//! # hub-client
//!
//! A small client for the hub's gRPC server API, so a backend publishes with one call. The
//! API is Centrifugo's `centrifugal.centrifugo.api.CentrifugoApi` (the stubs are generated at
//! build time from `hub-server/proto/api.proto`), so the same client works against Centrifugo.
//!
//! ## Quick start
//!
//! Start the server with the gRPC API on (`grpc_api.enabled`, `grpc_api.key`), then:
//!
//! ```no_run
//! use hub_client::HubClient;
//!
//! # async fn example() -> Result<(), hub_client::ClientError> {
//! let c = HubClient::connect("http://127.0.0.1:10000", "API_KEY").await?;
//! let pos = c.publish("news", &serde_json::json!({"text": "hi"})).await?;
//! println!("published at offset {} (epoch {})", pos.offset, pos.epoch);
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors
//!
//! Every call returns a [`ClientError`]: [`ClientError::Transport`] when the server was not
//! reached or failed at the gRPC level, [`ClientError::Unauthenticated`] for a wrong or
//! missing key, [`ClientError::Api`] for the API's own errors (for example code 102, unknown
//! channel namespace), and [`ClientError::InvalidInput`] for what could not be sent at all.
//!
//! ## Calls
//!
//! [`HubClient::publish`], [`HubClient::broadcast`], [`HubClient::history`],
//! [`HubClient::presence_stats`], [`HubClient::disconnect_user`], [`HubClient::unsubscribe`].
//! A [`HubClient`] is cheap to clone; clones share one HTTP/2 connection.

use std::fmt;

use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
mod api {
    tonic::include_proto!("centrifugal.centrifugo.api");
}

use api::centrifugo_api_client::CentrifugoApiClient;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The server was not reached, or answered with a gRPC status other than OK and
    /// `UNAUTHENTICATED` (the text says which).
    Transport(String),
    /// The server refused the API key (gRPC status `UNAUTHENTICATED`).
    Unauthenticated,
    /// The API refused the call with an error of its own (for example 102, unknown channel).
    Api {
        /// The API error code (Centrifugo's codes: 100 internal, 102 unknown channel, ...).
        code: u32,
        /// The error message.
        message: String,
    },
    /// The call could not be made: an invalid address or key, or data that does not encode
    /// as JSON.
    InvalidInput(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(e) => write!(f, "transport error: {e}"),
            ClientError::Unauthenticated => {
                f.write_str("unauthenticated: wrong or missing API key")
            }
            ClientError::Api { code, message } => write!(f, "API error {code}: {message}"),
            ClientError::InvalidInput(e) => write!(f, "invalid input: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unauthenticated => ClientError::Unauthenticated,
            code => ClientError::Transport(format!("{code:?}: {}", s.message())),
        }
    }
}

/// Where a publication landed in its channel's history stream. `offset` is 0 and `epoch`
/// empty when the channel keeps no history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPosition {
    /// The publication's offset in the stream.
    pub offset: u64,
    /// The stream's epoch (changes when the stream is lost and restarted).
    pub epoch: String,
}

/// One publication from a channel's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication {
    /// The payload as published (JSON bytes for JSON payloads).
    pub data: Vec<u8>,
    /// Its offset in the stream.
    pub offset: u64,
    /// The publisher's user id, when a client published it.
    pub user: String,
}

impl Publication {
    /// The payload parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.data)
            .map_err(|e| ClientError::InvalidInput(format!("payload is not JSON: {e}")))
    }
}

/// A channel's history: publications (oldest first) and the stream's current position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The publications returned.
    pub publications: Vec<Publication>,
    /// The stream's current position (the offset of its last publication).
    pub position: StreamPosition,
}

/// How many clients and distinct users are present in a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Connections subscribed with presence.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// A connection to the hub's gRPC server API with its API key.
#[derive(Debug, Clone)]
pub struct HubClient {
    inner: CentrifugoApiClient<Channel>,
    auth: MetadataValue<Ascii>,
}

/// The API error of a response envelope, if any.
fn check(error: Option<api::Error>) -> Result<(), ClientError> {
    match error {
        Some(e) if e.code != 0 => Err(ClientError::Api {
            code: e.code,
            message: e.message,
        }),
        _ => Ok(()),
    }
}

fn to_json<T: Serialize + ?Sized>(data: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(data).map_err(|e| ClientError::InvalidInput(format!("data: {e}")))
}

impl HubClient {
    /// Connects to the gRPC API at `addr` (`http://host:port`; the hub's default port is
    /// 10000) and authenticates every call with `api_key` (metadata
    /// `authorization: apikey KEY`).
    pub async fn connect(addr: &str, api_key: &str) -> Result<Self, ClientError> {
        let auth: MetadataValue<Ascii> = format!("apikey {api_key}")
            .parse()
            .map_err(|_| ClientError::InvalidInput("the API key is not valid metadata".into()))?;
        let channel = Channel::from_shared(addr.to_string())
            .map_err(|e| ClientError::InvalidInput(format!("address {addr:?}: {e}")))?
            .connect()
            .await
            .map_err(|e| ClientError::Transport(format!("cannot connect to {addr}: {e}")))?;
        Ok(HubClient {
            inner: CentrifugoApiClient::new(channel),
            auth,
        })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    /// Publishes `data` (encoded as JSON) to `channel`; returns where it landed in the
    /// channel's history.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<StreamPosition, ClientError> {
        let req = self.request(api::PublishRequest {
            channel: channel.to_string(),
            data: to_json(data)?,
            ..Default::default()
        });
        let resp = self.inner.clone().publish(req).await?.into_inner();
        check(resp.error)?;
        let r = resp.result.unwrap_or_default();
        Ok(StreamPosition {
            offset: r.offset,
            epoch: r.epoch,
        })
    }

    /// Publishes the same `data` to several channels; returns one result per channel, in
    /// order (a channel's API error does not fail the others).
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        channels: &[&str],
        data: &T,
    ) -> Result<Vec<Result<StreamPosition, ClientError>>, ClientError> {
        let req = self.request(api::BroadcastRequest {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            data: to_json(data)?,
            ..Default::default()
        });
        let resp = self.inner.clone().broadcast(req).await?.into_inner();
        check(resp.error)?;
        Ok(resp
            .result
            .unwrap_or_default()
            .responses
            .into_iter()
            .map(|r| {
                check(r.error)?;
                let r = r.result.unwrap_or_default();
                Ok(StreamPosition {
                    offset: r.offset,
                    epoch: r.epoch,
                })
            })
            .collect())
    }

    /// The last `limit` publications of `channel` (0 = only the stream position; a negative
    /// limit = all the server allows).
    pub async fn history(&self, channel: &str, limit: i32) -> Result<History, ClientError> {
        let req = self.request(api::HistoryRequest {
            channel: channel.to_string(),
            limit,
            ..Default::default()
        });
        let resp = self.inner.clone().history(req).await?.into_inner();
        check(resp.error)?;
        let r = resp.result.unwrap_or_default();
        Ok(History {
            publications: r
                .publications
                .into_iter()
                .map(|p| Publication {
                    data: p.data,
                    offset: p.offset,
                    user: p.info.map(|i| i.user).unwrap_or_default(),
                })
                .collect(),
            position: StreamPosition {
                offset: r.offset,
                epoch: r.epoch,
            },
        })
    }

    /// How many clients and users are present in `channel` (needs presence on).
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, ClientError> {
        let req = self.request(api::PresenceStatsRequest {
            channel: channel.to_string(),
        });
        let resp = self.inner.clone().presence_stats(req).await?.into_inner();
        check(resp.error)?;
        let r = resp.result.unwrap_or_default();
        Ok(PresenceStats {
            num_clients: r.num_clients,
            num_users: r.num_users,
        })
    }

    /// Disconnects every connection of `user` with close `code` (3000–4999) and `reason`.
    pub async fn disconnect_user(
        &self,
        user: &str,
        code: u32,
        reason: &str,
    ) -> Result<(), ClientError> {
        let req = self.request(api::DisconnectRequest {
            user: user.to_string(),
            disconnect: Some(api::Disconnect {
                code,
                reason: reason.to_string(),
            }),
            ..Default::default()
        });
        let resp = self.inner.clone().disconnect(req).await?.into_inner();
        check(resp.error)
    }

    /// Unsubscribes every connection of `user` from `channel`.
    pub async fn unsubscribe(&self, user: &str, channel: &str) -> Result<(), ClientError> {
        let req = self.request(api::UnsubscribeRequest {
            user: user.to_string(),
            channel: channel.to_string(),
            ..Default::default()
        });
        let resp = self.inner.clone().unsubscribe(req).await?.into_inner();
        check(resp.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_typed_errors() {
        assert_eq!(
            ClientError::from(tonic::Status::unauthenticated("no")),
            ClientError::Unauthenticated
        );
        assert!(matches!(
            ClientError::from(tonic::Status::unavailable("down")),
            ClientError::Transport(_)
        ));
        assert_eq!(
            check(Some(api::Error {
                code: 102,
                message: "unknown channel".into()
            })),
            Err(ClientError::Api {
                code: 102,
                message: "unknown channel".into()
            })
        );
        assert_eq!(check(None), Ok(()));
    }

    #[tokio::test]
    async fn a_bad_address_is_invalid_input_and_a_closed_port_is_transport() {
        assert!(matches!(
            HubClient::connect("not a uri", "k").await,
            Err(ClientError::InvalidInput(_))
        ));
        assert!(matches!(
            HubClient::connect("http://127.0.0.1:1", "k").await,
            Err(ClientError::Transport(_))
        ));
        assert!(matches!(
            HubClient::connect("http://127.0.0.1:1", "bad\nkey").await,
            Err(ClientError::InvalidInput(_))
        ));
    }
}
