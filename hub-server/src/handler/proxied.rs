//! The decisions handed to backends over gRPC ([`crate::proxy`]): each `proxy_*` call turns a
//! client event into a proxy request and the backend's answer into the client protocol.

use bytes::Bytes;
use hub_core::{
    ClientContext, ConnectingEvent, Credentials, Disconnect, Error, PublishDecision, PublishEvent,
    RefreshDecision, Reject, ServerSubscription, SubscribeEvent, SubscribeOptions,
};

use super::{Rules, ServerHandler};
use crate::config::ChannelOptions;
use crate::proxy::{self, proto};

/// Fields 1-4 of every proxy request. hub-core does not tell the encoding; the JSON protocol
/// is what the hub's clients speak.
const TRANSPORT: &str = "websocket";
const PROTOCOL: &str = "json";
const ENCODING: &str = "json";

/// Bytes a backend sent as `bytes` or base64, or the temporary error 100 when the base64 is bad.
pub(super) fn backend_payload(raw: Bytes, b64: &str) -> Result<Bytes, Reject> {
    proxy::payload(raw, b64).ok_or_else(|| {
        tracing::warn!("proxy backend sent invalid base64");
        Reject::from(Error::INTERNAL)
    })
}

impl ServerHandler {
    /// `client.proxy.connect`: the backend authenticates a connection without a token.
    pub(super) async fn proxy_connect(
        &self,
        backend: &proxy::Backend,
        e: ConnectingEvent,
    ) -> Result<Credentials, Reject> {
        let req = proto::ConnectRequest {
            client: e.client_id,
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            data: e.data,
            name: e.name,
            version: e.version,
            ..Default::default()
        };
        let resp = backend
            .call("connect", |mut c, left| async move {
                c.connect(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        let Some(res) = resp.result else {
            tracing::warn!("connect proxy answered without result, error or disconnect");
            return Err(Error::INTERNAL.into());
        };
        let rules = &self.0;
        let mut subscriptions = Vec::new();
        let mut channels: Vec<(String, Option<proto::SubscribeOptions>)> =
            res.channels.into_iter().map(|c| (c, None)).collect();
        channels.extend(res.subs.into_iter().map(|(c, o)| (c, Some(o))));
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
                options.chan_info = backend_payload(so.info, &so.b64info)?;
                options.data = backend_payload(so.data, &so.b64data)?;
                options.expire_at = proxy::expire_at(so.expire_at);
                apply_override(&mut options, so.r#override.as_ref());
            }
            subscriptions.push(ServerSubscription { channel, options });
        }
        Ok(Credentials {
            user: res.user,
            info: backend_payload(res.info, &res.b64info)?,
            expire_at: proxy::expire_at(res.expire_at),
            data: backend_payload(res.data, &res.b64data)?,
            subscriptions,
            // As Centrifugo: connections the connect proxy made are renewed by the refresh
            // proxy when they expire, not by the client.
            server_side_refresh: self.0.proxies.refresh.is_some(),
        })
    }

    /// `channel.proxy.subscribe`: the backend decides a subscription without a token.
    pub(super) async fn proxy_subscribe(
        &self,
        backend: &proxy::Backend,
        client: &ClientContext,
        e: SubscribeEvent,
        mut options: SubscribeOptions,
    ) -> Result<SubscribeOptions, Reject> {
        let req = proto::SubscribeRequest {
            client: client.client_id.clone(),
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            user: client.user.clone(),
            channel: e.channel,
            token: e.token,
            data: e.data,
            ..Default::default()
        };
        let resp = backend
            .call("subscribe", |mut c, left| async move {
                c.subscribe(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        if let Some(res) = resp.result {
            options.chan_info = backend_payload(res.info, &res.b64info)?;
            options.data = backend_payload(res.data, &res.b64data)?;
            options.expire_at = proxy::expire_at(res.expire_at);
            apply_override(&mut options, res.r#override.as_ref());
        }
        Ok(options)
    }

    /// `channel.proxy.publish`: the backend decides a client publication and may rewrite it.
    pub(super) async fn proxy_publish(
        &self,
        backend: &proxy::Backend,
        client: &ClientContext,
        e: PublishEvent,
        o: &ChannelOptions,
    ) -> Result<PublishDecision, Reject> {
        let req = proto::PublishRequest {
            client: client.client_id.clone(),
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            user: client.user.clone(),
            channel: e.channel,
            data: e.data,
            ..Default::default()
        };
        let resp = backend
            .call("publish", |mut c, left| async move {
                c.publish(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        let mut decision = PublishDecision {
            options: Rules::publish_options(o),
            attach_info: true,
            data: None,
        };
        if let Some(res) = resp.result {
            let data = backend_payload(res.data, &res.b64data)?;
            if !data.is_empty() {
                decision.data = Some(data);
            }
            if res.skip_history {
                decision.options.history = None;
            }
        }
        Ok(decision)
    }
}

impl ServerHandler {
    /// `rpc.proxy`: the backend answers a client RPC.
    pub(super) async fn proxy_rpc(
        &self,
        backend: &proxy::Backend,
        client: &ClientContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, Reject> {
        let req = proto::RpcRequest {
            client: client.client_id.clone(),
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            user: client.user.clone(),
            method: method.to_string(),
            data,
            ..Default::default()
        };
        let resp = backend
            .call("rpc", |mut c, left| async move {
                c.rpc(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        match resp.result {
            Some(res) => backend_payload(res.data, &res.b64data),
            None => Ok(Bytes::new()),
        }
    }

    /// `client.proxy.refresh`: the backend decides whether the connection stays.
    pub(super) async fn proxy_refresh(
        &self,
        backend: &proxy::Backend,
        client: &ClientContext,
    ) -> Result<RefreshDecision, Reject> {
        let req = proto::RefreshRequest {
            client: client.client_id.clone(),
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            user: client.user.clone(),
            ..Default::default()
        };
        let resp = backend
            .call("refresh", |mut c, left| async move {
                c.refresh(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        let Some(res) = resp.result else {
            tracing::warn!("refresh proxy answered without result, error or disconnect");
            return Err(Error::INTERNAL.into());
        };
        if res.expired {
            return Err(Disconnect::EXPIRED.into());
        }
        let info = backend_payload(res.info, &res.b64info)?;
        Ok(RefreshDecision {
            expire_at: proxy::expire_at(res.expire_at),
            info: (!info.is_empty()).then_some(info),
        })
    }

    /// `channel.proxy.sub_refresh`: the backend decides whether a subscription stays.
    pub(super) async fn proxy_sub_refresh(
        &self,
        backend: &proxy::Backend,
        client: &ClientContext,
        channel: &str,
    ) -> Result<Option<u64>, Reject> {
        let req = proto::SubRefreshRequest {
            client: client.client_id.clone(),
            transport: TRANSPORT.into(),
            protocol: PROTOCOL.into(),
            encoding: ENCODING.into(),
            user: client.user.clone(),
            channel: channel.to_string(),
            ..Default::default()
        };
        let resp = backend
            .call("sub_refresh", |mut c, left| async move {
                c.sub_refresh(proxy::request(req, left)).await
            })
            .await
            .map_err(proxy::unavailable)?;
        if let Some(r) = proxy::refusal(resp.error, resp.disconnect) {
            return Err(r);
        }
        let Some(res) = resp.result else {
            tracing::warn!("sub_refresh proxy answered without result, error or disconnect");
            return Err(Error::INTERNAL.into());
        };
        if res.expired {
            return Err(Error::EXPIRED.into());
        }
        Ok(proxy::expire_at(res.expire_at))
    }
}

/// Applies a backend's per-subscription overrides of the namespace options.
fn apply_override(o: &mut SubscribeOptions, ov: Option<&proto::SubscribeOptionOverride>) {
    let Some(ov) = ov else { return };
    if let Some(v) = &ov.presence {
        o.presence = v.value;
    }
    if let Some(v) = &ov.join_leave {
        o.emit_join_leave = v.value;
        o.push_join_leave = o.push_join_leave && v.value;
    }
    if let Some(v) = &ov.force_push_join_leave {
        o.push_join_leave = v.value && o.emit_join_leave;
    }
    // Recovery and positioning need history, which the namespace decides: an override can
    // only turn them off.
    if let Some(v) = &ov.force_recovery {
        o.recover = o.recover && v.value;
    }
    if let Some(v) = &ov.force_positioning {
        o.position = o.position && v.value;
    }
}
