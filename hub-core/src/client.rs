//! One connection's session: the protocol state machine between decoded commands and the
//! outgoing queue. It owns no socket; the transport feeds it frames and timer ticks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use crate::error::{Disconnect, Error, Reject};
use crate::handler::{
    ChannelAction, ClientContext, ConnectingEvent, PublishEvent, SubscribeEvent, SubscribeOptions,
    TransportInfo,
};
use crate::limits::{CommandLimiter, Verdict};
use crate::node::Node;
use crate::outbox::{ClientShared, Control};
use crate::protocol::*;
use crate::util::unix_now;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Connecting,
    Connected,
    /// Connect was refused with an error reply: any further command closes with 3501.
    Failed,
}

struct ChannelState {
    options: SubscribeOptions,
    /// When the subscription must be refreshed by (instant of expiry).
    expires: Option<Instant>,
    /// With server-side refresh: when to ask the handler next.
    next_server_refresh: Option<Instant>,
    /// Subscribed by the server (connect credentials or the server API), not the client.
    server_side: bool,
}

/// A connection's subscriptions: a vector sized exactly, since most connections hold a few
/// channels (at most `channel_limit`) and a hash table's spare buckets would cost more than
/// the rest of an idle connection.
#[derive(Default)]
struct Channels(Vec<(String, ChannelState)>);

impl Channels {
    fn position(&self, channel: &str) -> Option<usize> {
        self.0.iter().position(|(c, _)| c == channel)
    }

    fn contains_key(&self, channel: &str) -> bool {
        self.position(channel).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, channel: &str) -> Option<&ChannelState> {
        self.position(channel).map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, channel: &str) -> Option<&mut ChannelState> {
        self.position(channel).map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, channel: String, state: ChannelState) {
        match self.position(&channel) {
            Some(i) => self.0[i].1 = state,
            None => {
                self.0.reserve_exact(1);
                self.0.push((channel, state));
            }
        }
    }

    fn remove(&mut self, channel: &str) -> Option<ChannelState> {
        let i = self.position(channel)?;
        let (_, st) = self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(st)
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &ChannelState)> {
        self.0.iter().map(|(c, s)| (c, s))
    }

    fn values(&self) -> impl Iterator<Item = &ChannelState> {
        self.0.iter().map(|(_, s)| s)
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(c, _)| c)
    }
}

/// A connection's session.
pub(crate) struct Client {
    node: Node,
    shared: Arc<ClientShared>,
    /// The upgrade request, until `connect` hands it to the handler (then freed).
    transport: Option<Box<TransportInfo>>,
    status: Status,
    ctx: ClientContext,
    opened: Instant,
    expires: Option<Instant>,
    /// The server renews the connection at `expires` (the handler's `on_server_refresh`).
    server_refresh: bool,
    /// When to ask the handler next (the expiry, or a retry after a failed refresh).
    next_server_refresh: Option<Instant>,
    channels: Channels,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    next_presence: Option<Instant>,
    limiter: Option<CommandLimiter>,
}

type CmdResult = Result<(), Disconnect>;

/// Wait before asking the handler again after a failed server-side refresh.
const SERVER_REFRESH_RETRY: Duration = Duration::from_secs(3);

/// Converts a unix expiry into an instant and a TTL in seconds.
fn expiry(expire_at: Option<u64>) -> (Option<Instant>, u32) {
    match expire_at {
        None => (None, 0),
        Some(at) => {
            let ttl = at.saturating_sub(unix_now());
            (
                Some(Instant::now() + Duration::from_secs(ttl)),
                u32::try_from(ttl).unwrap_or(u32::MAX),
            )
        }
    }
}

impl Client {
    pub(crate) fn new(node: Node, shared: Arc<ClientShared>, transport: TransportInfo) -> Self {
        let ctx = ClientContext {
            client_id: shared.id.to_string(),
            user: String::new(),
            info: Bytes::new(),
        };
        let limiter = node
            .config()
            .command_rate_limit
            .and_then(|l| CommandLimiter::new(l, node.config().command_abuse_limit));
        Client {
            limiter,
            node,
            shared,
            transport: Some(Box::new(transport)),
            status: Status::Connecting,
            ctx,
            opened: Instant::now(),
            expires: None,
            server_refresh: false,
            next_server_refresh: None,
            channels: Channels::default(),
            next_ping: None,
            pong_deadline: None,
            next_presence: None,
        }
    }

    /// This connection as presence and join/leave show it, with a channel's info.
    fn info_for(&self, chan_info: &Bytes) -> ClientInfo {
        ClientInfo {
            user: self.ctx.user.clone(),
            client: self.ctx.client_id.clone(),
            conn_info: self.ctx.info.clone(),
            chan_info: chan_info.clone(),
        }
    }

    fn reply(&self, id: u32, body: ReplyBody) {
        self.send(&Reply::new(id, body));
    }

    fn send(&self, reply: &Reply) {
        match self.shared.codec.encode_reply(reply) {
            Ok(b) => self.shared.enqueue(b),
            // Only binary payloads fail to encode; a JSON client cannot take them.
            Err(_) => self.shared.close(Disconnect::INAPPROPRIATE_PROTOCOL),
        }
    }

    fn reply_error(&self, id: u32, e: &Error) {
        self.send(&Reply::error(id, e));
    }

    /// Applies a handler refusal: an error reply, or a disconnect.
    fn refuse(&self, id: u32, r: Reject) -> CmdResult {
        match r {
            Reject::Error(e) => {
                self.reply_error(id, &e);
                Ok(())
            }
            Reject::Disconnect(d) => Err(d),
        }
    }

    /// Handles one frame: its commands, in order.
    pub(crate) async fn handle_frame(&mut self, frame: &[u8]) -> CmdResult {
        for cmd in self.shared.codec.decode_commands(frame) {
            let cmd = match cmd {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "malformed command");
                    return Err(Disconnect::BAD_REQUEST);
                }
            };
            self.handle_command(cmd).await?;
        }
        Ok(())
    }

    async fn handle_command(&mut self, cmd: Command) -> CmdResult {
        let id = cmd.id;
        let req = cmd.into_request();
        let method = method_name(&req);
        metrics::counter!("hub_commands_total", "method" => method).increment(1);
        if self.status == Status::Failed {
            return Err(Disconnect::BAD_REQUEST);
        }
        if id == 0 {
            return match req {
                Request::None if self.status == Status::Connected => {
                    // A pong. Extra or early pongs are tolerated.
                    self.pong_deadline = None;
                    Ok(())
                }
                Request::Send(s) if self.status == Status::Connected => {
                    // No id, so no error reply: a send over the rate is dropped.
                    match self.limiter.as_mut().map_or(Verdict::Allow, |l| l.check()) {
                        Verdict::Allow => self.on_send(s).await,
                        Verdict::Refuse => {
                            metrics::counter!("hub_commands_rate_limited_total").increment(1);
                            Ok(())
                        }
                        Verdict::Abuse => Err(Disconnect::TOO_MANY_REQUESTS),
                    }
                }
                _ => Err(Disconnect::BAD_REQUEST),
            };
        }
        if self.status == Status::Connecting && !matches!(req, Request::Connect(_)) {
            return Err(Disconnect::BAD_REQUEST);
        }
        if let Some(limiter) = &mut self.limiter {
            match limiter.check() {
                Verdict::Allow => {}
                Verdict::Refuse => {
                    metrics::counter!("hub_commands_rate_limited_total").increment(1);
                    self.reply_error(id, &Error::TOO_MANY_REQUESTS);
                    return Ok(());
                }
                Verdict::Abuse => return Err(Disconnect::TOO_MANY_REQUESTS),
            }
        }
        let started = Instant::now();
        let r = match req {
            Request::Connect(r) => self.on_connect(id, r).await,
            Request::Subscribe(r) => self.on_subscribe(id, r).await,
            Request::Unsubscribe(r) => self.on_unsubscribe(id, r).await,
            Request::Publish(r) => self.on_publish(id, r).await,
            Request::Presence(r) => self.on_presence(id, r, false).await,
            Request::PresenceStats(r) => self.on_presence(id, r, true).await,
            Request::History(r) => self.on_history(id, r).await,
            Request::Ping => {
                self.reply_error(id, &Error::NOT_AVAILABLE);
                Ok(())
            }
            Request::Send(s) => self.on_send(s).await,
            Request::Rpc(r) => self.on_rpc(id, r).await,
            Request::Refresh(r) => self.on_refresh(id, r).await,
            Request::SubRefresh(r) => self.on_sub_refresh(id, r).await,
            Request::None => Err(Disconnect::BAD_REQUEST),
        };
        metrics::histogram!("hub_command_duration_seconds", "method" => method)
            .record(started.elapsed().as_secs_f64());
        r
    }

    fn check_channel(&self, channel: &str) -> CmdResult {
        if channel.is_empty() || channel.len() > self.node.config().channel_max_length {
            return Err(Disconnect::BAD_REQUEST);
        }
        Ok(())
    }

    async fn on_connect(&mut self, id: u32, req: ConnectRequest) -> CmdResult {
        if self.status != Status::Connecting {
            return Err(Disconnect::BAD_REQUEST);
        }
        let event = ConnectingEvent {
            client_id: self.ctx.client_id.clone(),
            transport: self.transport.take().map(|t| *t).unwrap_or_default(),
            token: req.token,
            data: req.data,
            name: req.name,
            version: req.version,
        };
        let creds = match self.node.inner.handler.on_connecting(event).await {
            Ok(c) => c,
            Err(Reject::Error(e)) => {
                self.status = Status::Failed;
                self.reply_error(id, &e);
                return Ok(());
            }
            Err(Reject::Disconnect(d)) => return Err(d),
        };
        let (expires, ttl) = expiry(creds.expire_at);
        if creds.expire_at.is_some() && ttl == 0 {
            self.status = Status::Failed;
            self.reply_error(id, &Error::EXPIRED);
            return Ok(());
        }
        let user_limit = self.node.config().user_connection_limit;
        if user_limit > 0
            && !creds.user.is_empty()
            && self.node.inner.hub.user_connection_count(&creds.user) >= user_limit
        {
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        self.expires = expires;
        self.server_refresh = creds.server_side_refresh && expires.is_some();
        self.next_server_refresh = expires.filter(|_| self.server_refresh);
        self.ctx.user = creds.user;
        self.ctx.info = creds.info;
        self.status = Status::Connected;
        self.node
            .inner
            .hub
            .add_client(&self.ctx.user, self.shared.clone());
        metrics::counter!("hub_connects_total").increment(1);

        let node = self.node.clone();
        let cfg = node.config();
        let mut subs = HashMap::new();
        let mut pending = Vec::new();
        for sub in creds.subscriptions {
            if self.channels.contains_key(&sub.channel) {
                continue;
            }
            if self.channels.len() >= cfg.channel_limit {
                debug!(channel = %sub.channel, "server-side subscription over the channel limit skipped");
                continue;
            }
            let recover = req.subs.get(&sub.channel);
            match self
                .subscribe_channel(&sub.channel, sub.options, recover, true)
                .await
            {
                Ok((res, last)) => {
                    pending.push((sub.channel.clone(), last));
                    subs.insert(sub.channel, res);
                }
                Err(Reject::Error(e)) => {
                    debug!(channel = %sub.channel, error = %e, "server-side subscription failed");
                }
                Err(Reject::Disconnect(d)) => return Err(d),
            }
        }
        self.reply(
            id,
            ReplyBody::Connect(ConnectResult {
                client: self.ctx.client_id.clone(),
                version: cfg.version.clone(),
                // With server-side refresh the client is not asked to bring a new token.
                expires: expires.is_some() && !self.server_refresh,
                ttl: if self.server_refresh { 0 } else { ttl },
                data: creds.data,
                subs,
                ping: cfg.ping_interval.as_secs() as u32,
                pong: !cfg.ping_interval.is_zero(),
            }),
        );
        for (channel, last) in pending {
            self.finish_subscribe(&channel, last).await?;
        }
        if !cfg.ping_interval.is_zero() {
            // The first ping goes at a random time in [interval/2, interval).
            let half = cfg.ping_interval / 2;
            let jitter = half.mul_f64(fastrand::f64());
            self.next_ping = Some(Instant::now() + half + jitter);
        }
        self.next_presence = Some(Instant::now() + cfg.presence_update_interval);
        Ok(())
    }

    /// Registers a subscription and reads its stream position (recovering when asked).
    /// Live publications of the channel are held until [`finish_subscribe`]. Returns the
    /// result and the last offset the result accounts for.
    async fn subscribe_channel(
        &mut self,
        channel: &str,
        options: SubscribeOptions,
        recover: Option<&SubscribeRequest>,
        server_side: bool,
    ) -> Result<(SubscribeResult, u64), Reject> {
        let node = self.node.clone();
        let inner = &node.inner;
        self.shared.start_buffering(channel);
        inner.hub.add_sub(
            channel,
            self.shared.clone(),
            options.push_join_leave,
            options.recover || options.position,
        );
        // Every subscription waits until the broker delivers the channel to this node, even
        // when another local subscriber asked first and its broker subscribe is in flight.
        if let Err(e) = inner.broker.subscribe(channel).await {
            tracing::warn!(channel, error = %e, "broker subscribe failed");
            self.rollback_sub(channel).await;
            return Err(Reject::Error(e.into()));
        }
        let mut res = SubscribeResult::default();
        let mut last = 0;
        if options.recover || options.position {
            res.positioned = true;
            res.recoverable = options.recover;
            let want = recover.filter(|r| r.recover && options.recover);
            let filter = crate::broker::HistoryFilter {
                since: want.map(|r| r.offset),
                limit: if want.is_some() {
                    node.config().recovery_max_publication_limit as i32
                } else {
                    0
                },
                reverse: false,
            };
            let (pubs, top) = match inner.broker.history(channel, &filter).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "history read failed");
                    self.rollback_sub(channel).await;
                    return Err(Reject::Error(e.into()));
                }
            };
            inner.hub.note_position(channel, &top.epoch, top.offset);
            res.epoch = top.epoch.clone();
            match want {
                Some(r) => {
                    res.was_recovering = true;
                    let recovered = if !r.epoch.is_empty() && r.epoch != top.epoch {
                        false
                    } else if pubs.is_empty() {
                        top.offset == r.offset
                    } else {
                        pubs[0].offset == r.offset + 1
                            && pubs.last().map(|p| p.offset) == Some(top.offset)
                    };
                    if !recovered && r.flag & SubscribeRequest::FLAG_REJECT_UNRECOVERED != 0 {
                        self.rollback_sub(channel).await;
                        return Err(Error::UNRECOVERABLE_POSITION.into());
                    }
                    metrics::counter!("hub_recoveries_total", "recovered" => if recovered { "yes" } else { "no" })
                        .increment(1);
                    if recovered {
                        res.recovered = true;
                        res.offset = r.offset;
                        last = top.offset;
                        res.publications = pubs;
                    } else {
                        res.offset = top.offset;
                        last = top.offset;
                    }
                }
                None => {
                    res.offset = top.offset;
                    last = top.offset;
                }
            }
        }
        let (expires, ttl) = expiry(options.expire_at);
        // With server-side refresh the client is not asked to bring a new token.
        res.expires = expires.is_some() && !options.server_side_refresh;
        res.ttl = if options.server_side_refresh { 0 } else { ttl };
        res.data = options.data.clone();
        let info = self.info_for(&options.chan_info);
        if options.presence {
            if let Err(e) = inner.presence.add(channel, &info).await {
                tracing::warn!(channel, error = %e, "presence add failed");
            }
        }
        self.channels.insert(
            channel.to_owned(),
            ChannelState {
                next_server_refresh: expires.filter(|_| options.server_side_refresh),
                server_side,
                options,
                expires,
            },
        );
        Ok((res, last))
    }

    /// After the subscribe reply is queued: release held publications and announce the join.
    async fn finish_subscribe(&mut self, channel: &str, last: u64) -> CmdResult {
        if self.shared.stop_buffering(channel, last).is_err() {
            return Err(Disconnect::INSUFFICIENT_STATE);
        }
        if let Some(st) = self.channels.get(channel) {
            if st.options.emit_join_leave {
                let info = self.info_for(&st.options.chan_info);
                let _ = self.node.inner.broker.publish_join(channel, info).await;
            }
        }
        Ok(())
    }

    async fn rollback_sub(&mut self, channel: &str) {
        self.shared.cancel_buffering(channel);
        if self.node.inner.hub.remove_sub(channel, &self.shared.id) {
            let _ = self.node.inner.broker.unsubscribe(channel).await;
        }
    }

    async fn on_subscribe(&mut self, id: u32, req: SubscribeRequest) -> CmdResult {
        self.check_channel(&req.channel)?;
        if self.channels.contains_key(&req.channel) {
            self.reply_error(id, &Error::ALREADY_SUBSCRIBED);
            return Ok(());
        }
        if self.channels.len() >= self.node.config().channel_limit {
            return Err(Disconnect::CHANNEL_LIMIT);
        }
        let event = SubscribeEvent {
            channel: req.channel.clone(),
            token: req.token.clone(),
            data: req.data.clone(),
            recoverable: req.recoverable,
            positioned: req.positioned,
            join_leave: req.join_leave,
        };
        let options = match self.node.inner.handler.on_subscribe(&self.ctx, event).await {
            Ok(o) => o,
            Err(r) => return self.refuse(id, r),
        };
        if options.expire_at.is_some_and(|at| at <= unix_now()) {
            self.reply_error(id, &Error::TOKEN_EXPIRED);
            return Ok(());
        }
        let channel = req.channel.clone();
        match self
            .subscribe_channel(&channel, options, Some(&req), false)
            .await
        {
            Ok((res, last)) => {
                self.reply(id, ReplyBody::Subscribe(res));
                self.finish_subscribe(&channel, last).await
            }
            Err(r) => self.refuse(id, r),
        }
    }

    /// Removes a subscription: registry, broker, presence, leave.
    async fn drop_channel(&mut self, channel: &str) {
        let Some(st) = self.channels.remove(channel) else {
            return;
        };
        let inner = &self.node.inner;
        if inner.hub.remove_sub(channel, &self.shared.id) {
            if let Err(e) = inner.broker.unsubscribe(channel).await {
                tracing::warn!(channel, error = %e, "broker unsubscribe failed");
            }
        }
        if st.options.presence {
            let _ = inner
                .presence
                .remove(channel, &self.ctx.client_id, &self.ctx.user)
                .await;
        }
        if st.options.emit_join_leave {
            let info = self.info_for(&st.options.chan_info);
            let _ = inner.broker.publish_leave(channel, info).await;
        }
    }

    async fn on_unsubscribe(&mut self, id: u32, req: UnsubscribeRequest) -> CmdResult {
        self.drop_channel(&req.channel).await;
        self.reply(id, ReplyBody::Unsubscribe(Empty {}));
        Ok(())
    }

    async fn on_publish(&mut self, id: u32, req: PublishRequest) -> CmdResult {
        self.check_channel(&req.channel)?;
        if req.data.is_empty() {
            self.reply_error(id, &Error::BAD_REQUEST);
            return Ok(());
        }
        let event = PublishEvent {
            channel: req.channel.clone(),
            data: req.data.clone(),
            subscribed: self.channels.contains_key(&req.channel),
        };
        let decision = match self.node.inner.handler.on_publish(&self.ctx, event).await {
            Ok(d) => d,
            Err(r) => return self.refuse(id, r),
        };
        let info = decision.attach_info.then(|| {
            let chan_info = self
                .channels
                .get(&req.channel)
                .map(|c| c.options.chan_info.clone())
                .unwrap_or_default();
            self.info_for(&chan_info)
        });
        let publication = Publication {
            data: decision.data.unwrap_or(req.data),
            info,
            ..Default::default()
        };
        // Cheap: the payload is shared, not copied.
        let mut published = publication.clone();
        match self
            .node
            .publish(&req.channel, publication, &decision.options)
            .await
        {
            Ok(position) => {
                published.offset = position.offset;
                self.node.inner.handler.on_published(
                    &self.ctx,
                    &req.channel,
                    &published,
                    &position,
                );
                self.reply(id, ReplyBody::Publish(Empty {}))
            }
            Err(e) => self.reply_error(id, &e),
        }
        Ok(())
    }

    async fn on_presence(&mut self, id: u32, req: ChannelRequest, stats: bool) -> CmdResult {
        self.check_channel(&req.channel)?;
        let action = if stats {
            ChannelAction::PresenceStats
        } else {
            ChannelAction::Presence
        };
        let subscribed = self.channels.contains_key(&req.channel);
        if let Err(r) = self
            .node
            .inner
            .handler
            .on_channel_request(&self.ctx, &req.channel, action, subscribed)
            .await
        {
            return self.refuse(id, r);
        }
        let body = if stats {
            self.node
                .presence_stats(&req.channel)
                .await
                .map(ReplyBody::PresenceStats)
        } else {
            self.node
                .presence(&req.channel)
                .await
                .map(|presence| ReplyBody::Presence(PresenceResult { presence }))
        };
        match body {
            Ok(b) => self.reply(id, b),
            Err(e) => self.reply_error(id, &e),
        }
        Ok(())
    }

    async fn on_history(&mut self, id: u32, req: HistoryRequest) -> CmdResult {
        self.check_channel(&req.channel)?;
        let subscribed = self.channels.contains_key(&req.channel);
        if let Err(r) = self
            .node
            .inner
            .handler
            .on_channel_request(&self.ctx, &req.channel, ChannelAction::History, subscribed)
            .await
        {
            return self.refuse(id, r);
        }
        let max = self.node.config().history_max_publication_limit;
        match self
            .node
            .history(&req.channel, req.since, req.limit, req.reverse, max)
            .await
        {
            Ok(h) => self.reply(id, ReplyBody::History(h)),
            Err(e) => self.reply_error(id, &e),
        }
        Ok(())
    }

    async fn on_send(&mut self, req: SendRequest) -> CmdResult {
        match self
            .node
            .inner
            .handler
            .on_message(&self.ctx, req.data)
            .await
        {
            Ok(()) => Ok(()),
            Err(Reject::Disconnect(d)) => Err(d),
            Err(Reject::Error(e)) => {
                debug!(error = %e, "send refused");
                Ok(())
            }
        }
    }

    async fn on_rpc(&mut self, id: u32, req: RpcRequest) -> CmdResult {
        match self
            .node
            .inner
            .handler
            .on_rpc(&self.ctx, &req.method, req.data)
            .await
        {
            Ok(data) => {
                self.reply(id, ReplyBody::Rpc(RpcResult { data }));
                Ok(())
            }
            Err(r) => self.refuse(id, r),
        }
    }

    async fn on_refresh(&mut self, id: u32, req: RefreshRequest) -> CmdResult {
        if req.token.is_empty() {
            return Err(Disconnect::BAD_REQUEST);
        }
        let d = match self
            .node
            .inner
            .handler
            .on_refresh(&self.ctx, &req.token)
            .await
        {
            Ok(d) => d,
            Err(r) => return self.refuse(id, r),
        };
        if d.expire_at.is_some_and(|at| at <= unix_now()) {
            self.reply_error(id, &Error::EXPIRED);
            return Ok(());
        }
        if let Some(info) = d.info {
            self.ctx.info = info;
        }
        let (expires, ttl) = expiry(d.expire_at);
        self.expires = expires;
        self.reply(
            id,
            ReplyBody::Refresh(RefreshResult {
                expires: expires.is_some(),
                ttl,
                ..Default::default()
            }),
        );
        Ok(())
    }

    async fn on_sub_refresh(&mut self, id: u32, req: SubRefreshRequest) -> CmdResult {
        self.check_channel(&req.channel)?;
        if req.token.is_empty() {
            return Err(Disconnect::BAD_REQUEST);
        }
        if !self.channels.contains_key(&req.channel) {
            self.reply_error(id, &Error::PERMISSION_DENIED);
            return Ok(());
        }
        let at = match self
            .node
            .inner
            .handler
            .on_sub_refresh(&self.ctx, &req.channel, &req.token)
            .await
        {
            Ok(at) => at,
            Err(r) => return self.refuse(id, r),
        };
        if at.is_some_and(|at| at <= unix_now()) {
            self.reply_error(id, &Error::EXPIRED);
            return Ok(());
        }
        let (expires, ttl) = expiry(at);
        if let Some(st) = self.channels.get_mut(&req.channel) {
            st.expires = expires;
        }
        self.reply(
            id,
            ReplyBody::SubRefresh(SubRefreshResult {
                expires: expires.is_some(),
                ttl,
            }),
        );
        Ok(())
    }

    /// Applies what the node asked of this connection.
    pub(crate) async fn handle_control(&mut self, c: Control) -> CmdResult {
        if self.status != Status::Connected {
            return match c {
                Control::Disconnect(d) => Err(d),
                _ => Ok(()),
            };
        }
        match c {
            Control::Disconnect(d) => Err(d),
            Control::Subscribe { channel, options } => {
                if self.channels.contains_key(&channel) {
                    return Ok(());
                }
                if self.channels.len() >= self.node.config().channel_limit {
                    debug!(channel, "server subscribe over the channel limit skipped");
                    return Ok(());
                }
                match self.subscribe_channel(&channel, options, None, true).await {
                    Ok((res, last)) => {
                        self.send(&Reply::push(Push {
                            channel: channel.clone(),
                            body: PushBody::Subscribe(SubscribePush {
                                recoverable: res.recoverable,
                                epoch: res.epoch,
                                offset: res.offset,
                                positioned: res.positioned,
                                data: res.data,
                            }),
                        }));
                        self.finish_subscribe(&channel, last).await
                    }
                    Err(Reject::Disconnect(d)) => Err(d),
                    Err(Reject::Error(e)) => {
                        debug!(channel, error = %e, "server subscribe failed");
                        Ok(())
                    }
                }
            }
            Control::Unsubscribe { channel } => {
                if self.channels.contains_key(&channel) {
                    self.drop_channel(&channel).await;
                    self.push_unsubscribe(&channel, 2000, "server unsubscribe");
                }
                Ok(())
            }
            Control::InsufficientState { channel } => {
                // A server-side subscription is not resubscribed by the client: reconnect.
                if self.channels.get(&channel).is_some_and(|c| c.server_side) {
                    return Err(Disconnect::INSUFFICIENT_STATE);
                }
                if self.channels.contains_key(&channel) {
                    self.drop_channel(&channel).await;
                    self.push_unsubscribe(&channel, 2500, "insufficient state");
                }
                Ok(())
            }
            Control::Refresh {
                expired,
                expire_at,
                info,
            } => {
                if expired {
                    return Err(Disconnect::EXPIRED);
                }
                self.expires = expiry(expire_at).0;
                if let Some(info) = info {
                    self.ctx.info = info;
                }
                Ok(())
            }
        }
    }

    fn push_unsubscribe(&self, channel: &str, code: u32, reason: &str) {
        self.send(&Reply::push(Push {
            channel: channel.to_owned(),
            body: PushBody::Unsubscribe {
                code,
                reason: reason.to_owned(),
            },
        }));
    }

    /// When [`on_timer`](Self::on_timer) must next run.
    pub(crate) fn next_deadline(&self) -> Instant {
        let cfg = self.node.config();
        // With nothing scheduled: the next whole hour since the socket opened, a deadline
        // that stays the same between calls (so the transport need not re-arm its timer).
        let hours = self.opened.elapsed().as_secs() / 3600 + 1;
        let mut d = self.opened + Duration::from_secs(hours * 3600);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                d = d.min(t);
            }
        };
        match self.status {
            Status::Connecting => consider(Some(self.opened + cfg.stale_close_delay)),
            Status::Failed => {}
            Status::Connected => {
                consider(self.next_ping);
                consider(self.pong_deadline);
                consider(self.next_presence);
                consider(self.expires.map(|e| e + cfg.expired_close_delay));
                consider(self.next_server_refresh);
                for st in self.channels.values() {
                    consider(st.expires.map(|e| e + cfg.expired_close_delay));
                    consider(st.next_server_refresh);
                }
            }
        }
        d
    }

    /// The connection's expiry came and the server renews it: ask the handler.
    async fn refresh_on_server(&mut self, now: Instant) -> CmdResult {
        match self.node.inner.handler.on_server_refresh(&self.ctx).await {
            Ok(d) => {
                if d.expire_at.is_some_and(|at| at <= unix_now()) {
                    return Err(Disconnect::EXPIRED);
                }
                if let Some(info) = d.info {
                    self.ctx.info = info;
                }
                self.expires = expiry(d.expire_at).0;
                self.next_server_refresh = self.expires;
                Ok(())
            }
            Err(Reject::Disconnect(d)) => Err(d),
            Err(Reject::Error(e)) => {
                // Try again shortly; the close at expiry + expired_close_delay still stands.
                debug!(error = %e, "server-side refresh failed; retrying");
                self.next_server_refresh = Some(now + SERVER_REFRESH_RETRY);
                Ok(())
            }
        }
    }

    /// A subscription's expiry came and the server renews it: ask the handler.
    async fn refresh_sub_on_server(&mut self, channel: &str, now: Instant) -> CmdResult {
        let r = self
            .node
            .inner
            .handler
            .on_server_sub_refresh(&self.ctx, channel)
            .await;
        let Some(st) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        match r {
            Ok(at) if at.is_none_or(|at| at > unix_now()) => {
                st.expires = expiry(at).0;
                st.next_server_refresh = st.expires;
                return Ok(());
            }
            // An expiry in the past, or the handler's "expired": end the subscription now.
            Ok(_) => {}
            Err(Reject::Error(e)) if e.code == Error::EXPIRED.code => {}
            Err(Reject::Disconnect(d)) => return Err(d),
            Err(Reject::Error(e)) => {
                debug!(channel, error = %e, "server-side subscription refresh failed; retrying");
                st.next_server_refresh = Some(now + SERVER_REFRESH_RETRY);
                return Ok(());
            }
        }
        self.drop_channel(channel).await;
        self.push_unsubscribe(channel, 2501, "subscription expired");
        Ok(())
    }

    /// Time-driven work: stale and expiry checks, pings, pong timeouts, presence refresh.
    pub(crate) async fn on_timer(&mut self) -> CmdResult {
        let now = Instant::now();
        let node = self.node.clone();
        let cfg = node.config();
        if self.status == Status::Connecting {
            if now >= self.opened + cfg.stale_close_delay {
                return Err(Disconnect::STALE);
            }
            return Ok(());
        }
        if self.status != Status::Connected {
            return Ok(());
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Err(Disconnect::NO_PONG);
        }
        if self.next_server_refresh.is_some_and(|t| now >= t) {
            self.refresh_on_server(now).await?;
        }
        if self
            .expires
            .is_some_and(|e| now >= e + cfg.expired_close_delay)
        {
            return Err(Disconnect::EXPIRED);
        }
        if self.next_ping.is_some_and(|p| now >= p) {
            self.send(&Reply::new(0, ReplyBody::Ping));
            if self.pong_deadline.is_none() {
                self.pong_deadline = Some(now + cfg.pong_timeout);
            }
            self.next_ping = Some(now + cfg.ping_interval);
        }
        let due: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, st)| st.next_server_refresh.is_some_and(|t| now >= t))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            self.refresh_sub_on_server(&channel, now).await?;
        }
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, st)| {
                st.expires
                    .is_some_and(|e| now >= e + cfg.expired_close_delay)
            })
            .map(|(c, _)| c.clone())
            .collect();
        for channel in expired {
            self.drop_channel(&channel).await;
            self.push_unsubscribe(&channel, 2501, "subscription expired");
        }
        if self.next_presence.is_some_and(|p| now >= p) {
            for (channel, st) in self.channels.iter() {
                if st.options.presence {
                    let info = self.info_for(&st.options.chan_info);
                    let _ = self.node.inner.presence.add(channel, &info).await;
                }
            }
            self.next_presence = Some(now + cfg.presence_update_interval);
        }
        Ok(())
    }

    /// Releases everything the connection holds.
    pub(crate) async fn close(&mut self, disconnect: &Disconnect) {
        let channels: Vec<String> = self.channels.keys().cloned().collect();
        for channel in channels {
            self.drop_channel(&channel).await;
        }
        if self.status == Status::Connected {
            self.node
                .inner
                .hub
                .remove_client(&self.ctx.user, &self.ctx.client_id);
            self.node
                .inner
                .handler
                .on_disconnect(&self.ctx, disconnect)
                .await;
        }
        let code = disconnect.code.to_string();
        metrics::counter!("hub_disconnects_total", "code" => code).increment(1);
    }
}

fn method_name(r: &Request) -> &'static str {
    match r {
        Request::None => "pong",
        Request::Connect(_) => "connect",
        Request::Subscribe(_) => "subscribe",
        Request::Unsubscribe(_) => "unsubscribe",
        Request::Publish(_) => "publish",
        Request::Presence(_) => "presence",
        Request::PresenceStats(_) => "presence_stats",
        Request::History(_) => "history",
        Request::Ping => "ping",
        Request::Send(_) => "send",
        Request::Rpc(_) => "rpc",
        Request::Refresh(_) => "refresh",
        Request::SubRefresh(_) => "sub_refresh",
    }
}
