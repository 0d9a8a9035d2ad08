//! What nodes tell each other over the broker's control channel: who is alive (with
//! statistics), commands acting on a user's connections wherever they are, and surveys that
//! gather an answer from every node.
//!
//! Messages are JSON. Every node receives every control message, its own included, and
//! ignores its own; a message meant for one node names it in `to`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::handler::SubscribeOptions;
use crate::node::NodeInfo;

/// How often a node announces itself.
pub(crate) const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3);
/// A node not heard from for this long is gone.
pub(crate) const NODE_EXPIRY: Duration = Duration::from_secs(10);
/// How long a survey waits for the other nodes.
pub(crate) const SURVEY_TIMEOUT: Duration = Duration::from_secs(3);

/// A control message with its sender.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The sender's node uid.
    pub(crate) from: String,
    #[serde(flatten)]
    pub(crate) msg: Msg,
}

/// Subscribe options as they travel between nodes (raw JSON kept as text).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireSubscribeOptions {
    #[serde(default)]
    presence: bool,
    #[serde(default)]
    emit_join_leave: bool,
    #[serde(default)]
    push_join_leave: bool,
    #[serde(default)]
    recover: bool,
    #[serde(default)]
    position: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    chan_info: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_at: Option<u64>,
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl From<&SubscribeOptions> for WireSubscribeOptions {
    fn from(o: &SubscribeOptions) -> Self {
        WireSubscribeOptions {
            presence: o.presence,
            emit_join_leave: o.emit_join_leave,
            push_join_leave: o.push_join_leave,
            recover: o.recover,
            position: o.position,
            chan_info: text(&o.chan_info),
            data: text(&o.data),
            expire_at: o.expire_at,
        }
    }
}

impl From<WireSubscribeOptions> for SubscribeOptions {
    fn from(o: WireSubscribeOptions) -> Self {
        SubscribeOptions {
            presence: o.presence,
            emit_join_leave: o.emit_join_leave,
            push_join_leave: o.push_join_leave,
            recover: o.recover,
            position: o.position,
            chan_info: Bytes::from(o.chan_info),
            data: Bytes::from(o.data),
            expire_at: o.expire_at,
            server_side_refresh: false,
        }
    }
}

/// The messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Msg {
    /// "I am alive", with statistics.
    Node { info: NodeInfo },
    /// Subscribe a user's connections.
    Subscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: Option<String>,
        options: WireSubscribeOptions,
    },
    /// Unsubscribe a user's connections.
    Unsubscribe {
        user: String,
        channel: String,
        #[serde(default)]
        client: Option<String>,
    },
    /// Disconnect a user's connections.
    Disconnect {
        user: String,
        #[serde(default)]
        client: Option<String>,
        #[serde(default)]
        whitelist: Vec<String>,
        code: u16,
        reason: String,
    },
    /// Refresh a user's connections.
    Refresh {
        user: String,
        #[serde(default)]
        client: Option<String>,
        #[serde(default)]
        expired: bool,
        #[serde(default)]
        expire_at: Option<u64>,
        #[serde(default)]
        info: Option<String>,
    },
    /// Asks every node for its channels.
    SurveyChannels { id: u64 },
    /// One node's answer to a survey.
    SurveyReply {
        id: u64,
        to: String,
        channels: Vec<(String, usize)>,
    },
}

impl Envelope {
    pub(crate) fn encode(&self) -> Bytes {
        // Serialising these plain structs cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Channels and subscriber counts, as one node answers a survey.
type ChannelCounts = Vec<(String, usize)>;

/// What a node knows of the cluster.
#[derive(Default)]
pub(crate) struct Cluster {
    nodes: Mutex<HashMap<String, (NodeInfo, Instant)>>,
    surveys: Mutex<HashMap<u64, mpsc::UnboundedSender<ChannelCounts>>>,
    seq: AtomicU64,
}

impl Cluster {
    /// Records another node's announcement.
    pub(crate) fn seen(&self, info: NodeInfo) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(info.uid.clone(), (info, Instant::now()));
    }

    /// The other live nodes; forgets the silent ones.
    pub(crate) fn peers(&self) -> Vec<NodeInfo> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|_, (_, at)| at.elapsed() < NODE_EXPIRY);
        let mut v: Vec<NodeInfo> = nodes.values().map(|(i, _)| i.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
        v
    }

    /// Opens a survey: its id and where the answers arrive.
    pub(crate) fn open_survey(&self) -> (u64, mpsc::UnboundedReceiver<ChannelCounts>) {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.surveys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        (id, rx)
    }

    pub(crate) fn close_survey(&self, id: u64) {
        self.surveys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// An answer to one of this node's surveys.
    pub(crate) fn answer(&self, id: u64, channels: ChannelCounts) {
        let surveys = self.surveys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = surveys.get(&id) {
            let _ = tx.send(channels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let e = Envelope {
            from: "n1".into(),
            msg: Msg::Disconnect {
                user: "42".into(),
                client: None,
                whitelist: vec!["c1".into()],
                code: 3503,
                reason: "force disconnect".into(),
            },
        };
        let back: Envelope = serde_json::from_slice(&e.encode()).unwrap();
        assert_eq!(back.from, "n1");
        assert!(
            matches!(back.msg, Msg::Disconnect { code: 3503, ref whitelist, .. } if whitelist == &["c1"])
        );
        let o = SubscribeOptions {
            presence: true,
            recover: true,
            chan_info: Bytes::from_static(br#"{"a":1}"#),
            expire_at: Some(5),
            ..Default::default()
        };
        let w = WireSubscribeOptions::from(&o);
        let json = serde_json::to_vec(&w).unwrap();
        let back: WireSubscribeOptions = serde_json::from_slice(&json).unwrap();
        assert_eq!(SubscribeOptions::from(back), o);
    }

    #[test]
    fn silent_nodes_are_forgotten() {
        let c = Cluster::default();
        c.seen(NodeInfo {
            uid: "u".into(),
            name: "n".into(),
            version: "1".into(),
            num_clients: 1,
            num_users: 1,
            num_channels: 0,
            num_subs: 0,
            uptime: 0,
        });
        assert_eq!(c.peers().len(), 1);
        c.nodes.lock().unwrap().get_mut("u").unwrap().1 = Instant::now() - NODE_EXPIRY;
        assert!(c.peers().is_empty());
    }
}
