//! `client.proxy.send`: client `send` messages go to the backend's `SendMessage` (a hub
//! extension of `proto/proxy.proto`; Centrifugo's proxy API has no call for `send`), fire and
//! forget: retried, then dead-lettered ([`super::fire_and_forget`]).
//!
//! Metrics: `hub_proxy_send_total{result}`, `hub_proxy_send_retries_total`.

use bytes::Bytes;

use super::fire_and_forget::{describe, Deliverable, Sender};
use super::{proto, request, Backend};
use crate::dead_letter::Entry;

/// A client's `send` message.
#[derive(Debug, Clone)]
pub struct SendEvent {
    /// The sender's user id.
    pub user: String,
    /// The sender's client id.
    pub client: String,
    /// The payload.
    pub data: Bytes,
    /// When the client sent it, unix milliseconds.
    pub timestamp_ms: i64,
}

/// Delivers client `send` messages.
pub type SendSender = Sender<SendEvent>;

impl Deliverable for SendEvent {
    const EVENT: &'static str = "send";
    const PLURAL: &'static str = "sends";
    const TOTAL_METRIC: &'static str = "hub_proxy_send_total";
    const RETRIES_METRIC: &'static str = "hub_proxy_send_retries_total";

    async fn attempt(&self, backend: &Backend, attempt: u32) -> Result<(), String> {
        let req = proto::SendMessageRequest {
            client: self.client.clone(),
            transport: "websocket".into(),
            protocol: "json".into(),
            encoding: "json".into(),
            user: self.user.clone(),
            data: self.data.clone(),
            attempt,
            timestamp_ms: self.timestamp_ms,
            ..Default::default()
        };
        backend
            .call(Self::EVENT, |mut c, left| async move {
                c.send_message(request(req, left)).await
            })
            .await
            .map(|_| ())
            .map_err(describe)
    }

    fn dead_letter(&self, attempts: u32, why: &str) -> Entry {
        Entry::new(
            self.user.clone(),
            self.client.clone(),
            &self.data,
            attempts,
            why.to_string(),
            self.timestamp_ms,
        )
    }

    fn from_entry(e: &Entry) -> Option<Self> {
        Some(SendEvent {
            user: e.user.clone(),
            client: e.client.clone(),
            data: e.payload()?,
            timestamp_ms: e.timestamp_ms,
        })
    }
}
