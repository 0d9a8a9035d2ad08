//! `channel.proxy.publication_forward`: every publication on a channel whose namespace has
//! `forward_publications` goes to the backend's `ForwardPublication` (a hub extension of
//! `proto/proxy.proto`), fire and forget: retried, then dead-lettered
//! ([`super::fire_and_forget`]).
//!
//! A publication is forwarded once per cluster, by the node where it was published (server
//! API `publish` and `broadcast`, client `publish`), never by the nodes that deliver it.
//!
//! Metrics: `hub_proxy_publication_forward_total{result}`,
//! `hub_proxy_publication_forward_retries_total`.

use std::collections::HashMap;

use bytes::Bytes;

use super::fire_and_forget::{describe, Deliverable, Sender};
use super::{proto, request, Backend};
use crate::dead_letter::{Entry, Kind};

/// A publication that succeeded on a forwarding channel.
#[derive(Debug, Clone, Default)]
pub struct PublicationEvent {
    /// The channel.
    pub channel: String,
    /// The payload as published.
    pub data: Bytes,
    /// Its offset in the channel's stream (0 without history).
    pub offset: u64,
    /// The stream's epoch ("" without history).
    pub epoch: String,
    /// The publishing client's user id ("" for the server API, or anonymous).
    pub user: String,
    /// The publishing client's id ("" for the server API).
    pub client: String,
    /// The publication's tags.
    pub tags: HashMap<String, String>,
    /// When the hub published it, unix milliseconds.
    pub timestamp_ms: i64,
}

/// Forwards publications.
pub type Forwarder = Sender<PublicationEvent>;

impl Deliverable for PublicationEvent {
    const EVENT: &'static str = "publication_forward";
    const PLURAL: &'static str = "publication forwards";
    const TOTAL_METRIC: &'static str = "hub_proxy_publication_forward_total";
    const RETRIES_METRIC: &'static str = "hub_proxy_publication_forward_retries_total";

    async fn attempt(&self, backend: &Backend, attempt: u32) -> Result<(), String> {
        let req = proto::ForwardPublicationRequest {
            channel: self.channel.clone(),
            data: self.data.clone(),
            offset: self.offset,
            epoch: self.epoch.clone(),
            user: self.user.clone(),
            client: self.client.clone(),
            tags: self.tags.clone(),
            attempt,
            timestamp_ms: self.timestamp_ms,
        };
        backend
            .call(Self::EVENT, |mut c, left| async move {
                c.forward_publication(request(req, left)).await
            })
            .await
            .map(|_| ())
            .map_err(describe)
    }

    fn dead_letter(&self, attempts: u32, why: &str) -> Entry {
        Entry {
            kind: Kind::Publication,
            channel: self.channel.clone(),
            offset: self.offset,
            epoch: self.epoch.clone(),
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Entry::new(
                self.user.clone(),
                self.client.clone(),
                &self.data,
                attempts,
                why.to_string(),
                self.timestamp_ms,
            )
        }
    }

    fn from_entry(e: &Entry) -> Option<Self> {
        Some(PublicationEvent {
            channel: e.channel.clone(),
            data: e.payload()?,
            offset: e.offset,
            epoch: e.epoch.clone(),
            user: e.user.clone(),
            client: e.client.clone(),
            tags: e.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            timestamp_ms: e.timestamp_ms,
        })
    }
}
