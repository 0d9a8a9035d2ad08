//! The per-connection outgoing queue, shared between the connection's task and everyone who
//! delivers to it (fan-out, the node's control API).
//!
//! Delivering is only an enqueue of bytes encoded once for all subscribers. The queue is
//! bounded in bytes: a connection that reads too slowly is closed with 3008 instead of
//! growing the hub's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::codec::Codec;
use crate::error::Disconnect;
use crate::handler::SubscribeOptions;

/// Something the node asks a connection to do (from the server API or node shutdown).
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Server-side subscribe while connected.
    Subscribe {
        channel: String,
        options: SubscribeOptions,
    },
    /// Server-side unsubscribe (push 2000).
    Unsubscribe { channel: String },
    /// The channel's stream has a gap: unsubscribe with code 2500, so the client
    /// resubscribes and recovers.
    InsufficientState { channel: String },
    /// Close the connection.
    Disconnect(Disconnect),
    /// Update expiry and info.
    Refresh {
        expired: bool,
        expire_at: Option<u64>,
        info: Option<Bytes>,
    },
}

/// One encoded reply or push, with its permessage-deflate form when it was compressed once
/// for many subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) data: Bytes,
    pub(crate) deflated: Option<Bytes>,
}

impl From<Bytes> for Frame {
    fn from(data: Bytes) -> Self {
        Frame {
            data,
            deflated: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) queue: VecDeque<Frame>,
    bytes: usize,
    /// Channels being subscribed: live publications wait here (offset, encoded push) until
    /// the subscribe reply is queued.
    buffering: HashMap<Arc<str>, Vec<(u64, Frame)>>,
    pub(crate) close: Option<Disconnect>,
    pub(crate) controls: Vec<Control>,
}

/// Counts replies and pushes that never reach their client (`hub_messages_dropped_total`):
/// `closing` (the connection was already closing), `slow_consumer` (discarded with the queue
/// of a client cut with 3008), `unencodable` (binary data for a JSON client, cut with 3506).
pub(crate) fn dropped(reason: &'static str, n: u64) {
    metrics::counter!("hub_messages_dropped_total", "reason" => reason).increment(n);
}

/// The shared half of a connection.
pub(crate) struct ClientShared {
    pub(crate) id: Arc<str>,
    outbox: Mutex<Outbox>,
    pub(crate) notify: Notify,
    max_queue_bytes: usize,
    /// The connection negotiated permessage-deflate.
    pub(crate) deflate: bool,
    /// The protocol flavour the connection speaks.
    pub(crate) codec: Codec,
}

/// A gap between what a subscribe reply delivered and the live publications buffered
/// meanwhile.
#[derive(Debug)]
pub(crate) struct Gap;

impl ClientShared {
    pub(crate) fn new(id: Arc<str>, max_queue_bytes: usize, deflate: bool, codec: Codec) -> Self {
        ClientShared {
            id,
            outbox: Mutex::new(Outbox::default()),
            notify: Notify::new(),
            max_queue_bytes,
            deflate,
            codec,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_locked(&self, ob: &mut Outbox, frame: Frame) {
        if ob.close.is_some() {
            dropped("closing", 1);
            return;
        }
        ob.bytes += frame.data.len();
        ob.queue.push_back(frame);
        if ob.bytes > self.max_queue_bytes {
            dropped("slow_consumer", ob.queue.len() as u64);
            ob.queue = VecDeque::new();
            ob.bytes = 0;
            ob.close = Some(Disconnect::SLOW);
            metrics::counter!("hub_slow_consumers_total").increment(1);
        }
    }

    /// Queues an encoded reply or push.
    pub(crate) fn enqueue(&self, bytes: Bytes) {
        let mut ob = self.lock();
        self.push_locked(&mut ob, bytes.into());
        drop(ob);
        self.notify.notify_one();
    }

    /// Queues a live publication of `channel`, or holds it while the channel is being
    /// subscribed.
    pub(crate) fn deliver(&self, channel: &str, offset: u64, frame: &Frame) {
        let mut ob = self.lock();
        if let Some(buf) = ob.buffering.get_mut(channel) {
            buf.push((offset, frame.clone()));
            return;
        }
        self.push_locked(&mut ob, frame.clone());
        drop(ob);
        self.notify.notify_one();
    }

    /// Starts holding live publications of `channel`.
    pub(crate) fn start_buffering(&self, channel: &str) {
        self.lock().buffering.insert(Arc::from(channel), Vec::new());
    }

    /// Frees what an idle outbox still holds (queue and map capacity).
    fn shrink(ob: &mut Outbox) {
        if ob.queue.is_empty() && ob.queue.capacity() > 0 {
            ob.queue = VecDeque::new();
        }
        if ob.buffering.is_empty() && ob.buffering.capacity() > 0 {
            ob.buffering = HashMap::new();
        }
    }

    /// Stops holding publications of `channel` and queues those after `delivered` (the last
    /// offset the subscribe reply accounted for; 0 = the channel has no stream). Duplicates
    /// are dropped; a missing offset is a gap.
    pub(crate) fn stop_buffering(&self, channel: &str, delivered: u64) -> Result<(), Gap> {
        let mut ob = self.lock();
        let Some(held) = ob.buffering.remove(channel) else {
            return Ok(());
        };
        if ob.buffering.is_empty() {
            ob.buffering = HashMap::new();
        }
        let mut last = delivered;
        let mut result = Ok(());
        for (offset, frame) in held {
            if offset > 0 && delivered > 0 {
                if offset <= last {
                    continue;
                }
                if offset != last + 1 {
                    result = Err(Gap);
                    break;
                }
                last = offset;
            }
            self.push_locked(&mut ob, frame);
        }
        drop(ob);
        self.notify.notify_one();
        result
    }

    /// Drops the hold on `channel` without delivering (a failed subscribe).
    pub(crate) fn cancel_buffering(&self, channel: &str) {
        self.lock().buffering.remove(channel);
    }

    /// Asks the connection's task to act.
    pub(crate) fn control(&self, c: Control) {
        self.lock().controls.push(c);
        self.notify.notify_one();
    }

    /// Closes the connection as soon as its task wakes.
    pub(crate) fn close(&self, d: Disconnect) {
        let mut ob = self.lock();
        if ob.close.is_none() {
            ob.close = Some(d);
        }
        drop(ob);
        self.notify.notify_one();
    }

    /// The disconnect the connection is closing with, if any.
    pub(crate) fn closing(&self) -> Option<Disconnect> {
        self.lock().close.clone()
    }

    /// Takes what is queued to write: the frames, then a pending close.
    pub(crate) fn take(&self) -> (VecDeque<Frame>, Option<Disconnect>, Vec<Control>) {
        let mut ob = self.lock();
        ob.bytes = 0;
        let r = (
            std::mem::take(&mut ob.queue),
            ob.close.clone(),
            std::mem::take(&mut ob.controls),
        );
        Self::shrink(&mut ob);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn buffered_publications_follow_the_reply_without_duplicates() {
        let c = ClientShared::new("c".into(), 1 << 20, false, Codec::Json);
        c.start_buffering("ch");
        c.deliver("ch", 3, &b("p3").into());
        c.deliver("ch", 4, &b("p4").into());
        c.deliver("other", 0, &b("x").into());
        c.enqueue(b("reply"));
        c.stop_buffering("ch", 3).unwrap();
        let (q, close, _) = c.take();
        assert!(close.is_none());
        let q: Vec<Bytes> = q.into_iter().map(|f| f.data).collect();
        assert_eq!(q, vec![b("x"), b("reply"), b("p4")]);
    }

    #[test]
    fn a_gap_in_buffered_publications_is_reported() {
        let c = ClientShared::new("c".into(), 1 << 20, false, Codec::Json);
        c.start_buffering("ch");
        c.deliver("ch", 7, &b("p7").into());
        assert!(c.stop_buffering("ch", 5).is_err());
    }

    #[test]
    fn overflowing_the_queue_closes_with_slow() {
        let c = ClientShared::new("c".into(), 10, false, Codec::Json);
        c.enqueue(b("0123456"));
        c.enqueue(b("0123456"));
        let (q, close, _) = c.take();
        assert!(q.is_empty());
        assert_eq!(close, Some(Disconnect::SLOW));
    }
}
