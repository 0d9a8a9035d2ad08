//! The server's decisions for hub-core: JWT auth and namespace permissions, as Centrifugo
//! makes them, and the proxies that hand decisions to backends ([`crate::proxy`]).

use std::sync::Arc;

use bytes::Bytes;
use hub_core::broker::{HistoryOptions, PublishOptions};
use hub_core::protocol::{Publication, StreamPosition};
use hub_core::{
    async_trait, ChannelAction, ClientContext, ConnectingEvent, Credentials, Disconnect, Error,
    Handler, PublishDecision, PublishEvent, RefreshDecision, Reject, ServerSubscription,
    SubscribeEvent, SubscribeOptions, TracedDelivery,
};

use crate::auth::{effective_expiry, info_bytes, TokenError, Verifier};
use crate::config::{ChannelOptions, Config};
use crate::proxy::fire_and_forget::Retry;
use crate::proxy::{self, Proxies};

mod proxied;

/// Config, verifiers and the rules built from them.
pub struct Rules {
    /// The configuration.
    pub config: Config,
    conn: Verifier,
    sub: Verifier,
    /// The configured proxies to backends.
    pub proxies: Proxies,
    /// Delivers client `send` messages when `client.proxy.send` is enabled.
    pub sender: Option<proxy::send::SendSender>,
    /// Forwards publications when `channel.proxy.publication_forward` is configured.
    pub forwarder: Option<proxy::forward::Forwarder>,
}

impl Rules {
    /// Builds the rules; fails on unreadable keys.
    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let conn = Verifier::new(&config.client.token)?;
        let sub = if config.client.subscription_token.enabled {
            Verifier::new(&config.client.subscription_token.token)?
        } else {
            Verifier::new(&config.client.token)?
        };
        let proxies = Proxies::new(&config)?;
        let store = Arc::new(crate::dead_letter::DeadLetters::new(&config)?);
        let sender = proxies.send.clone().map(|backend| {
            proxy::send::SendSender::new(
                backend,
                Retry::from_config(&config.client.proxy.send.retry),
                store.clone(),
            )
        });
        let forwarder = proxies.publication_forward.clone().map(|backend| {
            proxy::forward::Forwarder::new(
                backend,
                Retry::from_config(&config.channel.proxy.publication_forward.retry),
                store.clone(),
            )
        });
        Ok(Arc::new(Rules {
            config,
            conn,
            sub,
            proxies,
            sender,
            forwarder,
        }))
    }

    /// Whether publications on `channel` are forwarded (its namespace has
    /// `forward_publications` and the forward proxy is configured).
    pub fn forwards(&self, channel: &str) -> bool {
        self.forwarder.is_some()
            && self
                .config
                .channel
                .options_for(channel)
                .is_some_and(|o| o.forward_publications)
    }

    /// Hands a publication that succeeded on `channel` to the forward proxy, when the channel
    /// forwards; returns at once (delivery runs in the background). `publisher` is the
    /// publishing client (none for the server API).
    pub fn forward(
        &self,
        channel: &str,
        publication: &Publication,
        position: &StreamPosition,
        publisher: Option<&ClientContext>,
    ) {
        let Some(forwarder) = self.forwarder.as_ref().filter(|_| self.forwards(channel)) else {
            return;
        };
        let (user, client) = publisher
            .map(|c| (c.user.clone(), c.client_id.clone()))
            .unwrap_or_default();
        forwarder.spawn(proxy::forward::PublicationEvent {
            channel: channel.to_string(),
            data: publication.data.clone(),
            offset: position.offset,
            epoch: position.epoch.clone(),
            user,
            client,
            tags: publication.tags.clone(),
            timestamp_ms: crate::dead_letter::now_ms(),
        });
    }

    /// The options of a channel's namespace, or error 102.
    pub fn channel_options(&self, channel: &str) -> Result<&ChannelOptions, Error> {
        self.config
            .channel
            .options_for(channel)
            .ok_or(Error::UNKNOWN_CHANNEL)
    }

    /// History options for publishing to a channel.
    pub fn publish_options(o: &ChannelOptions) -> PublishOptions {
        PublishOptions {
            history: o.history_enabled().then(|| HistoryOptions {
                size: o.history_size,
                ttl: o.history_ttl,
                meta_ttl: o.meta_ttl(),
            }),
            trace: None,
        }
    }

    /// Subscribe options for a channel by namespace config (server-side subscriptions).
    pub fn server_subscribe_options(o: &ChannelOptions) -> SubscribeOptions {
        SubscribeOptions {
            presence: o.presence,
            emit_join_leave: o.join_leave,
            push_join_leave: o.join_leave && o.force_push_join_leave,
            recover: o.force_recovery,
            position: o.force_positioning || o.force_recovery,
            ..Default::default()
        }
    }

    /// Whether the user may subscribe to a user-limited channel (`name#u1,u2`).
    fn user_limited_allows(&self, o: &ChannelOptions, channel: &str, user: &str) -> bool {
        if !o.allow_user_limited_channels || user.is_empty() {
            return false;
        }
        let ch = &self.config.channel;
        match channel.rsplit_once(ch.user_boundary.as_str()) {
            Some((_, users)) => users.split(ch.user_separator.as_str()).any(|u| u == user),
            None => false,
        }
    }
}

/// Implements [`Handler`] from [`Rules`].
pub struct ServerHandler(pub Arc<Rules>);

fn token_reject(e: TokenError) -> Reject {
    match e {
        TokenError::Expired => Error::TOKEN_EXPIRED.into(),
        TokenError::Invalid(why) => {
            tracing::info!(reason = %why, "invalid token");
            Disconnect::INVALID_TOKEN.into()
        }
    }
}

#[async_trait]
impl Handler for ServerHandler {
    async fn on_connecting(&self, e: ConnectingEvent) -> Result<Credentials, Reject> {
        let rules = &self.0;
        if e.token.is_empty() {
            if let Some(backend) = &rules.proxies.connect {
                return self.proxy_connect(backend, e).await;
            }
            if rules.config.client.allow_anonymous_connect_without_token {
                return Ok(Credentials::default());
            }
            return Err(Disconnect::BAD_REQUEST.into());
        }
        if !rules.conn.enabled() {
            tracing::info!("connection token sent but no token key configured");
            return Err(Disconnect::INVALID_TOKEN.into());
        }
        let claims = rules.conn.verify_connect(&e.token).map_err(token_reject)?;
        let info = info_bytes(&claims.info, &claims.b64info).map_err(token_reject)?;
        let mut subscriptions = Vec::new();
        let mut channels: Vec<(String, Option<&crate::auth::SubOptions>)> =
            claims.channels.iter().map(|c| (c.clone(), None)).collect();
        channels.extend(claims.subs.iter().map(|(c, o)| (c.clone(), Some(o))));
        for (channel, sub_opts) in channels {
            let Ok(o) = rules.channel_options(&channel) else {
                tracing::info!(
                    channel,
                    "server-side subscription to unknown namespace skipped"
                );
                continue;
            };
            let mut options = Rules::server_subscribe_options(o);
            if let Some(so) = sub_opts {
                options.chan_info = info_bytes(&so.info, "").map_err(token_reject)?;
                options.data = info_bytes(&so.data, "").map_err(token_reject)?;
            }
            subscriptions.push(ServerSubscription { channel, options });
        }
        Ok(Credentials {
            user: claims.sub,
            info,
            expire_at: effective_expiry(claims.exp, claims.expire_at),
            data: Bytes::new(),
            subscriptions,
            // JWT connections refresh client-side: the client brings a new token.
            server_side_refresh: false,
        })
    }

    async fn on_subscribe(
        &self,
        client: &ClientContext,
        e: SubscribeEvent,
    ) -> Result<SubscribeOptions, Reject> {
        let rules = &self.0;
        let o = rules.channel_options(&e.channel)?;
        let mut options = SubscribeOptions {
            presence: o.presence,
            emit_join_leave: o.join_leave,
            push_join_leave: o.join_leave && (o.force_push_join_leave || e.join_leave),
            recover: o.force_recovery || (o.allow_recovery && e.recoverable),
            position: o.force_positioning
                || o.force_recovery
                || (o.allow_positioning && e.positioned)
                || (o.allow_recovery && e.recoverable),
            ..Default::default()
        };
        if !e.token.is_empty() {
            if !rules.sub.enabled() {
                return Err(Error::PERMISSION_DENIED.into());
            }
            let claims = match rules.sub.verify_subscribe(&e.token) {
                Ok(c) => c,
                Err(TokenError::Expired) => return Err(Error::TOKEN_EXPIRED.into()),
                Err(TokenError::Invalid(why)) => {
                    tracing::info!(reason = %why, "invalid subscription token");
                    return Err(Error::PERMISSION_DENIED.into());
                }
            };
            if claims.channel != e.channel
                || claims.sub != client.user
                || (!claims.client.is_empty() && claims.client != client.client_id)
            {
                return Err(Disconnect::INVALID_TOKEN.into());
            }
            options.chan_info = info_bytes(&claims.info, &claims.b64info).map_err(token_reject)?;
            options.data = info_bytes(&claims.data, "").map_err(token_reject)?;
            options.expire_at = effective_expiry(claims.exp, claims.expire_at);
            return Ok(options);
        }
        if o.subscribe_proxy_enabled {
            // As Centrifugo: subscriptions the proxy made are renewed server-side by the
            // sub_refresh proxy when the namespace enables it.
            options.server_side_refresh =
                o.sub_refresh_proxy_enabled && rules.proxies.sub_refresh.is_some();
            return match &rules.proxies.subscribe {
                Some(backend) => self.proxy_subscribe(backend, client, e, options).await,
                None => Err(Error::PERMISSION_DENIED.into()),
            };
        }
        let anonymous = client.user.is_empty();
        let allowed = rules.user_limited_allows(o, &e.channel, &client.user)
            || (o.allow_subscribe_for_client && (!anonymous || o.allow_subscribe_for_anonymous));
        if !allowed {
            return Err(Error::PERMISSION_DENIED.into());
        }
        Ok(options)
    }

    async fn on_publish(
        &self,
        client: &ClientContext,
        e: PublishEvent,
    ) -> Result<PublishDecision, Reject> {
        let o = self.0.channel_options(&e.channel)?;
        if o.publish_proxy_enabled {
            return match &self.0.proxies.publish {
                Some(backend) => self.proxy_publish(backend, client, e, o).await,
                None => Err(Error::PERMISSION_DENIED.into()),
            };
        }
        let anonymous = client.user.is_empty();
        let allowed = (o.allow_publish_for_client
            || (o.allow_publish_for_subscriber && e.subscribed))
            && (!anonymous || o.allow_publish_for_anonymous);
        if !allowed {
            return Err(Error::PERMISSION_DENIED.into());
        }
        Ok(PublishDecision {
            options: Rules::publish_options(o),
            attach_info: true,
            data: None,
        })
    }

    async fn on_channel_request(
        &self,
        client: &ClientContext,
        channel: &str,
        action: ChannelAction,
        subscribed: bool,
    ) -> Result<(), Reject> {
        let o = self.0.channel_options(channel)?;
        let anonymous = client.user.is_empty();
        let (enabled, for_sub, for_client, for_anon) = match action {
            ChannelAction::History => (
                o.history_enabled(),
                o.allow_history_for_subscriber,
                o.allow_history_for_client,
                o.allow_history_for_anonymous,
            ),
            ChannelAction::Presence | ChannelAction::PresenceStats => (
                o.presence,
                o.allow_presence_for_subscriber,
                o.allow_presence_for_client,
                o.allow_presence_for_anonymous,
            ),
        };
        if !enabled {
            return Err(Error::NOT_AVAILABLE.into());
        }
        if (for_client || (for_sub && subscribed)) && (!anonymous || for_anon) {
            Ok(())
        } else {
            Err(Error::PERMISSION_DENIED.into())
        }
    }

    async fn on_rpc(
        &self,
        client: &ClientContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, Reject> {
        match &self.0.proxies.rpc {
            Some(backend) if self.0.config.rpc.proxied(method) => {
                self.proxy_rpc(backend, client, method, data).await
            }
            _ => Err(Error::METHOD_NOT_FOUND.into()),
        }
    }

    fn on_published(
        &self,
        client: &ClientContext,
        channel: &str,
        publication: &Publication,
        position: &StreamPosition,
    ) {
        self.0.forward(channel, publication, position, Some(client));
    }

    fn on_traced_delivery(&self, d: &TracedDelivery<'_>) {
        crate::telemetry::delivered(d);
    }

    async fn on_message(&self, client: &ClientContext, data: Bytes) -> Result<(), Reject> {
        let Some(sender) = &self.0.sender else {
            return Err(Disconnect::NOT_AVAILABLE.into());
        };
        sender.spawn(proxy::send::SendEvent {
            user: client.user.clone(),
            client: client.client_id.clone(),
            data,
            timestamp_ms: crate::dead_letter::now_ms(),
        });
        Ok(())
    }

    async fn on_server_refresh(&self, client: &ClientContext) -> Result<RefreshDecision, Reject> {
        match &self.0.proxies.refresh {
            Some(backend) => self.proxy_refresh(backend, client).await,
            None => Err(Disconnect::EXPIRED.into()),
        }
    }

    async fn on_refresh(
        &self,
        client: &ClientContext,
        token: &str,
    ) -> Result<RefreshDecision, Reject> {
        if let Some(backend) = &self.0.proxies.refresh {
            return self.proxy_refresh(backend, client).await;
        }
        let claims = match self.0.conn.verify_connect(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(Disconnect::EXPIRED.into()),
            Err(TokenError::Invalid(_)) => return Err(Disconnect::INVALID_TOKEN.into()),
        };
        if claims.sub != client.user {
            return Err(Disconnect::INVALID_TOKEN.into());
        }
        let info = info_bytes(&claims.info, &claims.b64info).map_err(token_reject)?;
        Ok(RefreshDecision {
            expire_at: effective_expiry(claims.exp, claims.expire_at),
            info: (!info.is_empty()).then_some(info),
        })
    }

    async fn on_server_sub_refresh(
        &self,
        client: &ClientContext,
        channel: &str,
    ) -> Result<Option<u64>, Reject> {
        match (self.0.channel_options(channel), &self.0.proxies.sub_refresh) {
            (Ok(o), Some(backend)) if o.sub_refresh_proxy_enabled => {
                self.proxy_sub_refresh(backend, client, channel).await
            }
            _ => Err(Error::EXPIRED.into()),
        }
    }

    async fn on_sub_refresh(
        &self,
        client: &ClientContext,
        channel: &str,
        token: &str,
    ) -> Result<Option<u64>, Reject> {
        if let Ok(o) = self.0.channel_options(channel) {
            if o.sub_refresh_proxy_enabled {
                if let Some(backend) = &self.0.proxies.sub_refresh {
                    return self.proxy_sub_refresh(backend, client, channel).await;
                }
            }
        }
        let claims = match self.0.sub.verify_subscribe(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(Error::TOKEN_EXPIRED.into()),
            Err(TokenError::Invalid(_)) => return Err(Disconnect::INVALID_TOKEN.into()),
        };
        if claims.channel != channel
            || claims.sub != client.user
            || (!claims.client.is_empty() && claims.client != client.client_id)
        {
            return Err(Disconnect::INVALID_TOKEN.into());
        }
        Ok(effective_expiry(claims.exp, claims.expire_at))
    }
}
