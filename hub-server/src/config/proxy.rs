//! The proxy and dead-letter sections: which backends receive which client events, and how.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_go;

/// `dead_letter`: where events that a fire-and-forget proxy (`client.proxy.send`,
/// `channel.proxy.publication_forward`) could not deliver are kept: a Redis stream when
/// `engine.type` is `redis`, else a JSON-lines file (also the stream's fallback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetter {
    /// The file (default `dead_letters.jsonl`; a relative path is taken from the config
    /// file's folder, or the working directory without a config file). With the Redis engine
    /// it receives the entries Redis could not take.
    pub path: String,
    /// Most entries kept (default 10000, at least 1); past it the oldest are dropped (counted
    /// by `hub_dead_letters_dropped_total` and logged). The Redis stream trims approximately
    /// (`MAXLEN ~`): it may hold somewhat more.
    pub max_entries: usize,
}

impl Default for DeadLetter {
    fn default() -> Self {
        DeadLetter {
            path: "dead_letters.jsonl".into(),
            max_entries: 10_000,
        }
    }
}

/// How a fire-and-forget proxy retries an event before dead-lettering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrySettings {
    /// Attempts per event, the first included (default 5, at least 1).
    pub max_attempts: u32,
    /// Cap of the first backoff (default `100ms`); each retry waits a random time between 0
    /// and `min(max_backoff, initial_backoff * 2^retry)` (full jitter).
    #[serde(with = "serde_go")]
    pub initial_backoff: Duration,
    /// Largest backoff (default `5s`).
    #[serde(with = "serde_go")]
    pub max_backoff: Duration,
    /// Events being delivered at once on this node (default 10000); past it new events go
    /// straight to the dead-letter store, so a down backend cannot pile up tasks.
    pub max_pending: usize,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_pending: 10_000,
        }
    }
}

impl RetrySettings {
    /// Checks the settings of the proxy at `key`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err(format!("{key}.max_attempts must be at least 1"));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(format!(
                "{key}.max_backoff must not be below {key}.initial_backoff"
            ));
        }
        if self.max_pending == 0 {
            return Err(format!("{key}.max_pending must be at least 1"));
        }
        Ok(())
    }
}

/// `client.proxy.send`: where client `send` messages go (fire and forget) and how delivery
/// is retried. A hub extension: Centrifugo has no `send` proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SendProxy {
    /// Use the proxy (default false; without it a client `send` closes the connection
    /// with 3508).
    pub enabled: bool,
    /// Where and how each attempt calls.
    #[serde(flatten)]
    pub proxy: ProxyEndpoint,
    /// Retries, then the dead-letter store.
    #[serde(flatten)]
    pub retry: RetrySettings,
}

impl SendProxy {
    /// The endpoint, when enabled.
    pub fn active(&self) -> Option<&ProxyEndpoint> {
        self.enabled.then_some(&self.proxy)
    }
}

/// `channel.proxy.publication_forward`: where publications of channels whose namespace has
/// `forward_publications` are forwarded (fire and forget, retried like `client.proxy.send`).
/// A hub extension: Centrifugo has no such proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublicationForwardProxy {
    /// Where and how each attempt calls (empty `endpoint` = no forwarding).
    #[serde(flatten)]
    pub proxy: ProxyEndpoint,
    /// Retries, then the dead-letter store.
    #[serde(flatten)]
    pub retry: RetrySettings,
}

/// Where one proxy calls and how it protects itself (`channel.proxy.subscribe`, `rpc.proxy`,
/// ...). An empty `endpoint` means no proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyEndpoint {
    /// The backend: `grpc://host:port` (default "" = no proxy).
    pub endpoint: String,
    /// Time limit of one call, waiting for a free slot included (default `1s`).
    #[serde(with = "serde_go")]
    pub timeout: Duration,
    /// Consecutive failures that open the endpoint's circuit breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one trial call (default `5s`).
    #[serde(with = "serde_go")]
    pub breaker_cooldown: Duration,
    /// Most calls in flight to the endpoint (default 64).
    pub max_concurrency: usize,
}

impl Default for ProxyEndpoint {
    fn default() -> Self {
        ProxyEndpoint {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            max_concurrency: 64,
        }
    }
}

impl ProxyEndpoint {
    /// Whether a backend is configured.
    pub fn is_set(&self) -> bool {
        !self.endpoint.is_empty()
    }
}

/// A proxy switched on by `enabled` (`client.proxy.connect`, `client.proxy.refresh`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchedProxy {
    /// Use the proxy (default false).
    pub enabled: bool,
    /// Where and how.
    #[serde(flatten)]
    pub proxy: ProxyEndpoint,
}

impl SwitchedProxy {
    /// The endpoint, when enabled.
    pub fn active(&self) -> Option<&ProxyEndpoint> {
        self.enabled.then_some(&self.proxy)
    }
}

/// `client.proxy`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientProxies {
    /// Authenticates connections that come without a token.
    pub connect: SwitchedProxy,
    /// Decides connection refreshes.
    pub refresh: SwitchedProxy,
    /// Receives client `send` messages (fire and forget, retried, dead-lettered).
    pub send: SendProxy,
}

/// `channel.proxy`; namespaces switch each on with `*_proxy_enabled` (and
/// `forward_publications`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelProxies {
    /// Decides subscriptions.
    pub subscribe: ProxyEndpoint,
    /// Decides (and may rewrite) client publications.
    pub publish: ProxyEndpoint,
    /// Decides subscription refreshes.
    pub sub_refresh: ProxyEndpoint,
    /// Receives every publication of the forwarding namespaces (fire and forget).
    pub publication_forward: PublicationForwardProxy,
}

/// RPC options of a namespace (or of methods without namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcOptions {
    /// Send these methods to `rpc.proxy`.
    pub proxy_enabled: bool,
}

/// A named RPC namespace: methods `name:...`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RpcNamespace {
    /// Namespace name.
    pub name: String,
    /// Its options.
    #[serde(flatten)]
    pub options: RpcOptions,
}

/// `rpc`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Rpc {
    /// The RPC proxy.
    pub proxy: ProxyEndpoint,
    /// Options of methods without a namespace.
    pub without_namespace: RpcOptions,
    /// Namespaces.
    pub namespaces: Vec<RpcNamespace>,
    /// Separates namespace and method (default `:`).
    pub namespace_boundary: String,
}

impl Default for Rpc {
    fn default() -> Self {
        Rpc {
            proxy: ProxyEndpoint::default(),
            without_namespace: RpcOptions::default(),
            namespaces: Vec::new(),
            namespace_boundary: ":".into(),
        }
    }
}

impl Rpc {
    /// Whether a method goes to the RPC proxy.
    pub fn proxied(&self, method: &str) -> bool {
        if !self.proxy.is_set() {
            return false;
        }
        match method.split_once(self.namespace_boundary.as_str()) {
            Some((ns, _)) if !ns.is_empty() => self
                .namespaces
                .iter()
                .any(|n| n.name == ns && n.options.proxy_enabled),
            _ => self.without_namespace.proxy_enabled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    /// The config `json` would load as, or the first problem `validate` names.
    fn check(json: serde_json::Value) -> Result<Config, String> {
        let c: Config = serde_json::from_value(json).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn publication_forwarding_is_configured_next_to_the_channel_proxies() {
        let mut unknown = Vec::new();
        let c: Config = serde_ignored::deserialize(
            serde_json::json!({"channel": {
                "proxy": {"publication_forward": {"endpoint": "grpc://127.0.0.1:12000",
                    "timeout": "300ms", "max_attempts": 3, "initial_backoff": "50ms"}},
                "without_namespace": {"forward_publications": true},
                "namespaces": [{"name": "orders", "forward_publications": true}, {"name": "chat"}]
            }}),
            |p| unknown.push(p.to_string()),
        )
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        c.validate().unwrap();
        let f = &c.channel.proxy.publication_forward;
        assert_eq!(f.proxy.timeout, Duration::from_millis(300));
        assert_eq!(f.proxy.breaker_failures, 5);
        assert_eq!(f.retry.max_attempts, 3);
        assert_eq!(f.retry.initial_backoff, Duration::from_millis(50));
        assert_eq!(f.retry.max_backoff, Duration::from_secs(5));
        assert_eq!(f.retry.max_pending, 10_000);
        let forwards = |ch: &str| c.channel.options_for(ch).unwrap().forward_publications;
        assert!(forwards("orders:1") && forwards("news") && !forwards("chat:1"));
    }

    #[test]
    fn bad_publication_forwarding_config_names_the_key() {
        let endpoint = "grpc://127.0.0.1:12000";
        for (bad, key) in [
            (
                serde_json::json!({"channel": {"namespaces": [{"name": "orders", "forward_publications": true}]}}),
                r#"namespace "orders": forward_publications needs channel.proxy.publication_forward.endpoint"#,
            ),
            (
                serde_json::json!({"channel": {"without_namespace": {"forward_publications": true}}}),
                r#"namespace "": forward_publications needs channel.proxy.publication_forward.endpoint"#,
            ),
            (
                serde_json::json!({"channel": {"proxy": {"publication_forward": {"endpoint": "http://h:1"}}}}),
                "channel.proxy.publication_forward.endpoint",
            ),
            (
                serde_json::json!({"channel": {"proxy": {"publication_forward": {"endpoint": endpoint, "timeout": "0s"}}}}),
                "channel.proxy.publication_forward.timeout",
            ),
            (
                serde_json::json!({"channel": {"proxy": {"publication_forward": {"endpoint": endpoint, "max_attempts": 0}}}}),
                "channel.proxy.publication_forward.max_attempts",
            ),
            (
                serde_json::json!({"channel": {"proxy": {"publication_forward": {"endpoint": endpoint, "max_backoff": "1ms"}}}}),
                "channel.proxy.publication_forward.max_backoff",
            ),
            (
                serde_json::json!({"channel": {"proxy": {"publication_forward": {"endpoint": endpoint, "max_pending": 0}}}}),
                "channel.proxy.publication_forward.max_pending",
            ),
            (
                serde_json::json!({"client": {"proxy": {"send": {"enabled": true, "endpoint": endpoint, "max_attempts": 0}}}}),
                "client.proxy.send.max_attempts",
            ),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
