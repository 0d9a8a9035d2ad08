//! Live events through the hub.
//!
//! Each user has one private channel, `social:user#<id>`: the hub's user-limited channel
//! convention (Centrifugo's `#`), so only the user named after `#` may subscribe. Every live
//! event for a user goes there as JSON with a `type`: `post` (a new post in their feed),
//! `message` (a chat message, with their new unread count), `unread` (a chat's unread count
//! changed), `friend_request`, `friend` (a friendship started), `unfriend`.
//!
//! The page connects with a connection token ([`connection_token`]: an HS256 JWT whose `sub`
//! is the user id, as Centrifugo expects) and subscribes to its channel.
//! [`Realtime::Embedded`] runs a hub-core node in this process with [`HubRules`] deciding
//! the same; [`Realtime::External`] publishes through a hub-server cluster's gRPC API, whose
//! `social` namespace must allow user-limited channels (`social-app/hub.json`).
//!
//! Live delivery is best effort: a failed publish is logged and never fails the request
//! that stored the data; the page reloads its lists when it (re)subscribes.

use bytes::Bytes;
use hub_core::broker::PublishOptions;
use hub_core::protocol::Publication;
use hub_core::{
    async_trait, ClientContext, ConnectingEvent, Credentials, Disconnect, Error, Handler, Node,
    RefreshDecision, Reject, SubscribeEvent, SubscribeOptions,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// At most this many channels in one broadcast call.
const BROADCAST_CHUNK: usize = 1000;

/// The private channel of `user`.
pub fn user_channel(user: &str) -> String {
    format!("social:user#{user}")
}

/// Claims of a connection token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// A connection token for `user`, valid `ttl_secs`, signed with the hub's HMAC secret.
pub fn connection_token(secret: &str, user: &str, ttl_secs: u64) -> Result<String, String> {
    let exp = unix_now() + ttl_secs;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: user.to_string(),
            exp,
        },
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign a connection token: {e}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where live events go.
#[derive(Clone)]
pub enum Realtime {
    /// A hub-core node in this process.
    Embedded(Node),
    /// A hub-server (cluster) over its gRPC server API.
    External(hub_client::HubClient),
}

impl Realtime {
    /// Publishes `event` to `user`'s channel.
    pub async fn to_user(&self, user: &str, event: &serde_json::Value) {
        self.to_users(&[user.to_string()], event).await;
    }

    /// Publishes the same `event` to the channels of `users` (in chunks; a failure is logged
    /// and the rest still go).
    pub async fn to_users(&self, users: &[String], event: &serde_json::Value) {
        let channels: Vec<String> = users.iter().map(|u| user_channel(u)).collect();
        let data = Bytes::from(event.to_string());
        for chunk in channels.chunks(BROADCAST_CHUNK) {
            match self {
                Realtime::Embedded(node) => {
                    for ch in chunk {
                        let p = Publication {
                            data: data.clone(),
                            ..Default::default()
                        };
                        let r = node.publish(ch, p, &PublishOptions::default()).await;
                        published(r.is_ok(), 1);
                        if let Err(e) = r {
                            tracing::warn!(channel = %ch, error = %e, "live event not published");
                        }
                    }
                }
                Realtime::External(hub) => {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    match hub.broadcast(&refs, event).await {
                        Ok(results) => {
                            for (ch, r) in chunk.iter().zip(results) {
                                published(r.is_ok(), 1);
                                if let Err(e) = r {
                                    tracing::warn!(channel = %ch, error = %e, "live event not published");
                                }
                            }
                        }
                        Err(e) => {
                            published(false, chunk.len());
                            tracing::warn!(channels = chunk.len(), error = %e, "live events not published")
                        }
                    }
                }
            }
        }
    }
}

/// Counts `n` live events in `social_hub_publishes_total`.
fn published(ok: bool, n: usize) {
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!("social_hub_publishes_total", "result" => result).increment(n as u64);
}

/// The embedded node's rules: connect with a connection token, subscribe only to one's own
/// channel.
pub struct HubRules {
    key: DecodingKey,
}

impl HubRules {
    /// Rules checking tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        HubRules {
            key: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn verify(&self, token: &str) -> Result<Claims, Reject> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Reject::from(Error::TOKEN_EXPIRED)
                }
                _ => Reject::from(Disconnect::INVALID_TOKEN),
            })
    }
}

#[async_trait]
impl Handler for HubRules {
    async fn on_connecting(&self, e: ConnectingEvent) -> Result<Credentials, Reject> {
        let c = self.verify(&e.token)?;
        if c.sub.is_empty() {
            return Err(Disconnect::INVALID_TOKEN.into());
        }
        Ok(Credentials {
            user: c.sub,
            expire_at: Some(c.exp),
            ..Default::default()
        })
    }

    async fn on_refresh(
        &self,
        client: &ClientContext,
        token: &str,
    ) -> Result<RefreshDecision, Reject> {
        let c = self.verify(token)?;
        if c.sub != client.user {
            return Err(Disconnect::INVALID_TOKEN.into());
        }
        Ok(RefreshDecision {
            expire_at: Some(c.exp),
            info: None,
        })
    }

    async fn on_subscribe(
        &self,
        client: &ClientContext,
        e: SubscribeEvent,
    ) -> Result<SubscribeOptions, Reject> {
        if !client.user.is_empty() && e.channel == user_channel(&client.user) {
            Ok(SubscribeOptions::default())
        } else {
            Err(Error::PERMISSION_DENIED.into())
        }
    }
}
