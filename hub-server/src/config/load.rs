//! Loading: defaults, then the file, then the environment; unknown keys reported; values
//! validated with the key named.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// A config as loaded, with the keys nobody knows.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Unknown keys (dotted paths), reported to the user.
    pub unknown_keys: Vec<String>,
}

/// The file formats.
fn parse_file(path: &Path, text: &str) -> Result<serde_json::Value, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "json" => serde_json::from_str(text).map_err(|e| e.to_string()),
        "toml" => toml::from_str(text).map_err(|e| e.to_string()),
        "yaml" | "yml" => serde_norway::from_str(text).map_err(|e| e.to_string()),
        other => Err(format!(
            "unknown config extension {other:?}: use .json, .toml, .yaml or .yml"
        )),
    }
}

/// Applies `PREFIX_PATH_TO_KEY` environment variables to every key the config knows.
fn apply_env(value: &mut serde_json::Value, env: &BTreeMap<String, String>) {
    fn walk(v: &mut serde_json::Value, path: &mut Vec<String>, env: &BTreeMap<String, String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, child) in map.iter_mut() {
                path.push(k.to_ascii_uppercase());
                walk(child, path, env);
                path.pop();
            }
            return;
        }
        let key = path.join("_");
        for prefix in ["CENTRIFUGO_", "HUB_"] {
            if let Some(raw) = env.get(&format!("{prefix}{key}")) {
                *v = match v {
                    serde_json::Value::String(_) => serde_json::Value::String(raw.clone()),
                    _ => serde_json::from_str(raw)
                        .unwrap_or_else(|_| serde_json::Value::String(raw.clone())),
                };
            }
        }
    }
    walk(value, &mut Vec::new(), env);
}

/// Deep-merges `over` into `base`.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The dotted path of a value serde rejects (serde's own errors do not say where): each
/// leaf of `value` is tried alone over the defaults, which are complete, so only a bad leaf
/// fails. Array elements are tried one at a time, whole.
fn invalid_key(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    fn fails(defaults: &Value, path: &[String], v: &Value) -> bool {
        let mut candidate = defaults.clone();
        let mut slot = &mut candidate;
        for k in path {
            if !slot.is_object() {
                *slot = Value::Object(serde_json::Map::new());
            }
            slot = match slot.as_object_mut() {
                Some(m) => m.entry(k.clone()).or_insert(Value::Null),
                None => return false,
            };
        }
        *slot = v.clone();
        serde_json::from_value::<Config>(candidate).is_err()
    }
    fn walk(defaults: &Value, path: &mut Vec<String>, v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    let found = walk(defaults, path, child);
                    path.pop();
                    if found.is_some() {
                        return found;
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if fails(defaults, path, &Value::Array(vec![item.clone()])) {
                        return Some(format!("{}[{i}]", path.join(".")));
                    }
                }
            }
            _ => {}
        }
        (!path.is_empty() && fails(defaults, path, v)).then(|| path.join("."))
    }
    let defaults = serde_json::to_value(Config::default()).ok()?;
    walk(&defaults, &mut Vec::new(), value)
}

/// Loads the configuration: defaults, then the file (if any), then the environment.
pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Loaded, String> {
    let mut value = serde_json::to_value(Config::default()).map_err(|e| e.to_string())?;
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let file = parse_file(path, &text)
            .map_err(|e| format!("cannot parse config {}: {e}", path.display()))?;
        if !file.is_object() {
            return Err(format!("config {} must be an object", path.display()));
        }
        merge(&mut value, file);
    }
    apply_env(&mut value, env);
    let mut unknown_keys = Vec::new();
    let mut config: Config =
        serde_ignored::deserialize(value.clone(), |p| unknown_keys.push(p.to_string())).map_err(
            |e| match invalid_key(&value) {
                Some(key) => format!("invalid config: {key}: {e}"),
                None => format!("invalid config: {e}"),
            },
        )?;
    config.validate()?;
    config.dead_letter.path = resolve_dead_letter_path(path, &config.dead_letter.path);
    Ok(Loaded {
        config,
        unknown_keys,
    })
}

/// A relative dead-letter path is taken from the config file's folder.
fn resolve_dead_letter_path(config_file: Option<&Path>, p: &str) -> String {
    let rel = Path::new(p);
    match config_file.and_then(Path::parent) {
        Some(dir) if rel.is_relative() && !dir.as_os_str().is_empty() => {
            dir.join(rel).to_string_lossy().into_owned()
        }
        _ => p.to_string(),
    }
}

impl Config {
    /// Checks what serde cannot: names, combinations of options.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let check = |name: &str, o: &ChannelOptions| -> Result<(), String> {
            if (o.force_recovery || o.allow_recovery) && !o.history_enabled() {
                return Err(format!(
                    "namespace {name:?}: recovery needs history (history_size and history_ttl)"
                ));
            }
            if (o.force_positioning || o.allow_positioning) && !o.history_enabled() {
                return Err(format!(
                    "namespace {name:?}: positioning needs history (history_size and history_ttl)"
                ));
            }
            Ok(())
        };
        check("", &self.channel.without_namespace)?;
        for ns in &self.channel.namespaces {
            let valid = !ns.name.is_empty()
                && ns
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!(
                    "invalid namespace name {:?}: use letters, digits, '_', '-' or '.'",
                    ns.name
                ));
            }
            if !seen.insert(ns.name.as_str()) {
                return Err(format!("namespace {:?} is defined twice", ns.name));
            }
            check(&ns.name, &ns.options)?;
        }
        self.validate_proxies()?;
        if !self.client.ping_interval.is_zero()
            && self.client.ping_interval <= self.client.pong_timeout
        {
            return Err("client.ping_interval must be greater than client.pong_timeout".into());
        }
        if !(1..=9).contains(&self.websocket.compression_level) {
            return Err(format!(
                "websocket.compression_level {}: use 1 (fastest) to 9 (smallest)",
                self.websocket.compression_level
            ));
        }
        if self.grpc_api.enabled
            && self.grpc_api.port == self.http_server.port
            && self.grpc_address() == self.http_server.address
        {
            return Err(format!(
                "grpc_api.port {} is also http_server.port: give the gRPC API its own port",
                self.grpc_api.port
            ));
        }
        if !self.http_api.error_mode.is_empty() && self.http_api.error_mode != "transport" {
            return Err(format!(
                "http_api.error_mode {:?}: the only mode is \"transport\"",
                self.http_api.error_mode
            ));
        }
        let ratio = self.opentelemetry.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "opentelemetry.sample_ratio {ratio}: use a share from 0 to 1"
            ));
        }
        Ok(())
    }

    /// Proxy endpoints are `grpc://` addresses, and what namespaces switch on is configured.
    fn validate_proxies(&self) -> Result<(), String> {
        let cp = &self.channel.proxy;
        let endpoints = [
            ("client.proxy.connect", &self.client.proxy.connect.proxy),
            ("client.proxy.refresh", &self.client.proxy.refresh.proxy),
            ("client.proxy.send", &self.client.proxy.send.proxy),
            ("channel.proxy.subscribe", &cp.subscribe),
            ("channel.proxy.publish", &cp.publish),
            ("channel.proxy.sub_refresh", &cp.sub_refresh),
            (
                "channel.proxy.publication_forward",
                &cp.publication_forward.proxy,
            ),
            ("rpc.proxy", &self.rpc.proxy),
        ];
        for (key, p) in endpoints {
            if p.is_set() {
                crate::proxy::grpc_uri(&p.endpoint).map_err(|e| format!("{key}.endpoint: {e}"))?;
                if p.timeout.is_zero() {
                    return Err(format!("{key}.timeout must be above 0"));
                }
                if p.max_concurrency == 0 {
                    return Err(format!("{key}.max_concurrency must be at least 1"));
                }
            }
        }
        for (key, p) in [
            ("client.proxy.connect", &self.client.proxy.connect),
            ("client.proxy.refresh", &self.client.proxy.refresh),
        ] {
            if p.enabled && !p.proxy.is_set() {
                return Err(format!("{key}.enabled needs {key}.endpoint"));
            }
        }
        let send = &self.client.proxy.send;
        if send.enabled {
            if !send.proxy.is_set() {
                return Err("client.proxy.send.enabled needs client.proxy.send.endpoint".into());
            }
            send.retry.validate("client.proxy.send")?;
        }
        if cp.publication_forward.proxy.is_set() {
            cp.publication_forward
                .retry
                .validate("channel.proxy.publication_forward")?;
        }
        if self.dead_letter.path.is_empty() {
            return Err("dead_letter.path must not be empty".into());
        }
        if self.dead_letter.max_entries == 0 {
            return Err("dead_letter.max_entries must be at least 1".into());
        }
        let namespaces = std::iter::once(("", &self.channel.without_namespace)).chain(
            self.channel
                .namespaces
                .iter()
                .map(|n| (n.name.as_str(), &n.options)),
        );
        for (name, o) in namespaces {
            for (on, what, p) in [
                (o.subscribe_proxy_enabled, "subscribe", &cp.subscribe),
                (o.publish_proxy_enabled, "publish", &cp.publish),
                (o.sub_refresh_proxy_enabled, "sub_refresh", &cp.sub_refresh),
            ] {
                if on && !p.is_set() {
                    return Err(format!(
                        "namespace {name:?}: {what}_proxy_enabled needs channel.proxy.{what}.endpoint"
                    ));
                }
            }
            if o.forward_publications && !cp.publication_forward.proxy.is_set() {
                return Err(format!(
                    "namespace {name:?}: forward_publications needs channel.proxy.publication_forward.endpoint"
                ));
            }
        }
        Ok(())
    }

    /// The interface the gRPC API listens on: `grpc_api.address`, or `http_server.address`
    /// when that is empty.
    pub fn grpc_address(&self) -> &str {
        if self.grpc_api.address.is_empty() {
            &self.http_server.address
        } else {
            &self.grpc_api.address
        }
    }

    /// The node settings this config asks for.
    pub fn node_config(&self) -> hub_core::NodeConfig {
        let mut n = hub_core::NodeConfig::default();
        let c = &self.client;
        n.ping_interval = c.ping_interval;
        n.pong_timeout = c.pong_timeout;
        n.stale_close_delay = c.stale_close_delay;
        n.expired_close_delay = c.expired_close_delay;
        n.presence_update_interval = c.presence_update_interval;
        n.max_queue_bytes = c.queue_max_size;
        n.max_message_size = c.max_message_size;
        n.history_max_publication_limit = c.history_max_publication_limit;
        n.recovery_max_publication_limit = c.recovery_max_publication_limit;
        n.channel_max_length = self.channel.max_length;
        n.allowed_origins = c.allowed_origins.clone();
        let rate = |per_second: u32, burst: u32| {
            (per_second > 0).then_some(hub_core::RateLimit { per_second, burst })
        };
        n.command_rate_limit = rate(c.command_rate_limit, c.command_rate_burst.max(1));
        n.command_abuse_limit = c.command_abuse_limit;
        n.connection_limit = c.connection_limit;
        n.connection_rate_limit = rate(c.connection_rate_limit, c.connection_rate_limit);
        n.connection_rate_limit_per_ip = rate(
            c.connection_rate_limit_per_ip,
            c.connection_rate_limit_per_ip,
        );
        n.user_connection_limit = c.user_connection_limit;
        n.channel_limit = c.channel_limit;
        n.overload_lag = c.overload_lag;
        n.position_check_interval = c.channel_position_check_delay;
        n.compression.enabled = self.websocket.compression;
        n.compression.min_size = self.websocket.compression_min_size;
        n.compression.level = self.websocket.compression_level;
        n.name = if self.node.name.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "hub".into());
            format!("{host}_{}", self.http_server.port)
        } else {
            self.node.name.clone()
        };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(ext: &str, text: &str, env: &[(&str, &str)]) -> Result<Loaded, String> {
        let dir = std::env::temp_dir().join(format!("hubcfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("config.{ext}"));
        std::fs::write(&p, text).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = load(Some(&p), &env);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn a_centrifugo_v6_config_loads_unchanged() {
        let l = load_str(
            "json",
            r#"{
              "http_server": {"port": 9001},
              "client": {"token": {"hmac_secret_key": "s"}, "allowed_origins": ["http://localhost:3000"]},
              "http_api": {"key": "k"},
              "channel": {
                "without_namespace": {"allow_subscribe_for_client": true},
                "namespaces": [{"name": "chat", "history_size": 10, "history_ttl": "300s", "force_recovery": true, "presence": true}]
              }
            }"#,
            &[],
        )
        .unwrap();
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        let c = l.config;
        assert_eq!(c.http_server.port, 9001);
        assert_eq!(c.http_server.address, "127.0.0.1");
        let chat = c.channel.options_for("chat:room").unwrap();
        assert_eq!(chat.history_ttl, Duration::from_secs(300));
        assert!(chat.history_enabled() && chat.force_recovery && chat.presence);
        assert!(
            c.channel
                .options_for("news")
                .unwrap()
                .allow_subscribe_for_client
        );
        assert!(c.channel.options_for("nope:x").is_none());
    }

    #[test]
    fn proxies_load_in_centrifugo_v6_layout() {
        let l = load_str(
            "json",
            r#"{
              "client": {"proxy": {"connect": {"enabled": true, "endpoint": "grpc://127.0.0.1:12000", "timeout": "500ms"}}},
              "channel": {
                "proxy": {"subscribe": {"endpoint": "grpc://127.0.0.1:12000"}},
                "namespaces": [{"name": "rooms", "subscribe_proxy_enabled": true}]
              },
              "rpc": {"proxy": {"endpoint": "grpc://127.0.0.1:12001", "max_concurrency": 8},
                      "namespaces": [{"name": "admin", "proxy_enabled": true}]}
            }"#,
            &[],
        )
        .unwrap();
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        let c = l.config;
        let connect = c.client.proxy.connect.active().unwrap();
        assert_eq!(connect.timeout, Duration::from_millis(500));
        assert_eq!(connect.breaker_failures, 5);
        assert_eq!(c.channel.proxy.subscribe.timeout, Duration::from_secs(1));
        assert!(
            c.channel
                .options_for("rooms:1")
                .unwrap()
                .subscribe_proxy_enabled
        );
        assert!(c.rpc.proxied("admin:ban") && !c.rpc.proxied("ban") && !c.rpc.proxied("x:ban"));
        assert_eq!(c.rpc.proxy.max_concurrency, 8);
        let e = load_str(
            "json",
            r#"{"channel": {"proxy": {"publish": {"endpoint": "http://x:1"}}}}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("channel.proxy.publish.endpoint"), "{e}");
    }

    #[test]
    fn toml_and_yaml_work_too() {
        let t = load_str("toml", "[http_server]\nport = 9002\n", &[]).unwrap();
        assert_eq!(t.config.http_server.port, 9002);
        let y = load_str(
            "yaml",
            "http_server:\n  port: 9003\nclient:\n  ping_interval: 10s\n",
            &[],
        )
        .unwrap();
        assert_eq!(y.config.http_server.port, 9003);
        assert_eq!(y.config.client.ping_interval, Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_reported() {
        let l = load_str(
            "json",
            r#"{"http_server": {"prot": 1}, "nonsense": true}"#,
            &[],
        )
        .unwrap();
        assert_eq!(l.unknown_keys.len(), 2, "{:?}", l.unknown_keys);
        assert!(l.unknown_keys.iter().any(|k| k.contains("prot")));
    }

    #[test]
    fn environment_overrides_the_file() {
        let l = load_str(
            "json",
            r#"{"http_server": {"port": 9001}}"#,
            &[
                ("HUB_HTTP_SERVER_PORT", "9100"),
                ("CENTRIFUGO_HTTP_API_KEY", "envkey"),
            ],
        )
        .unwrap();
        assert_eq!(l.config.http_server.port, 9100);
        assert_eq!(l.config.http_api.key, "envkey");
    }

    #[test]
    fn grpc_api_listens_next_to_http_and_needs_its_own_port() {
        let l = load_str(
            "json",
            r#"{"grpc_api": {"enabled": true, "insecure": true}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(l.config.grpc_api.port, 10000);
        assert_eq!(
            l.config.grpc_address(),
            "127.0.0.1",
            "defaults to http_server.address"
        );
        assert!(l.config.grpc_api.insecure);
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        let l = load_str(
            "json",
            r#"{"grpc_api": {"address": "0.0.0.0"}}"#,
            &[("HUB_GRPC_API_ENABLED", "true")],
        )
        .unwrap();
        assert!(l.config.grpc_api.enabled);
        assert_eq!(l.config.grpc_address(), "0.0.0.0");
        let e = load_str(
            "json",
            r#"{"http_server": {"port": 9000}, "grpc_api": {"enabled": true, "port": 9000}}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("grpc_api.port"), "{e}");
    }

    #[test]
    fn invalid_values_get_clear_errors() {
        let e = load_str("json", r#"{"client": {"ping_interval": "5x"}}"#, &[]).unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        assert!(e.contains("client.ping_interval"), "{e}");
        let e = load_str("json", r#"{"http_server": {"port": "x"}}"#, &[]).unwrap_err();
        assert!(e.contains("http_server.port"), "{e}");
        let e = load_str(
            "json",
            r#"{"channel": {"namespaces": [{"name": "a"}, {"name": "b", "history_ttl": true}]}}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("channel.namespaces[1]"), "{e}");
        let e = load_str("json", r#"{"client": {"allowed_origins": "*"}}"#, &[]).unwrap_err();
        assert!(e.contains("client.allowed_origins"), "{e}");
        let e = load_str(
            "json",
            r#"{"channel": {"namespaces": [{"name": "a", "force_recovery": true}]}}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("recovery needs history"), "{e}");
        let e = load_str("ini", "x", &[]).unwrap_err();
        assert!(e.contains("unknown config extension"), "{e}");
        let e = load_str("json", r#"{"opentelemetry": {"sample_ratio": 1.5}}"#, &[]).unwrap_err();
        assert!(e.contains("opentelemetry.sample_ratio 1.5"), "{e}");
        let l = load_str(
            "json",
            r#"{"opentelemetry": {"enabled": true, "endpoint": "http://c:4317", "sample_ratio": 0.25}}"#,
            &[],
        )
        .unwrap();
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        assert_eq!(l.config.opentelemetry.sample_ratio, 0.25);
        assert_eq!(l.config.opentelemetry.service_name, "hub-server");
    }

    #[test]
    fn the_send_proxy_and_dead_letter_store_are_configured_and_checked() {
        let l = load_str(
            "json",
            r#"{"client": {"proxy": {"send": {"enabled": true, "endpoint": "grpc://127.0.0.1:12000",
                 "max_attempts": 3, "initial_backoff": "50ms", "max_backoff": "1s"}}},
                "dead_letter": {"max_entries": 7}}"#,
            &[],
        )
        .unwrap();
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        let send = &l.config.client.proxy.send;
        assert_eq!(
            send.active().map(|p| p.timeout),
            Some(Duration::from_secs(1))
        );
        assert_eq!(send.retry.max_attempts, 3);
        assert_eq!(send.retry.initial_backoff, Duration::from_millis(50));
        assert_eq!(l.config.dead_letter.max_entries, 7);
        // Relative to the config file's folder.
        let dl = Path::new(&l.config.dead_letter.path);
        assert_eq!(
            dl.file_name().and_then(|f| f.to_str()),
            Some("dead_letters.jsonl")
        );
        assert!(
            l.config.dead_letter.path.contains("hubcfg-"),
            "{}",
            dl.display()
        );
        for (bad, why) in [
            (
                r#"{"client": {"proxy": {"send": {"enabled": true}}}}"#,
                "needs client.proxy.send.endpoint",
            ),
            (
                r#"{"client": {"proxy": {"send": {"enabled": true, "endpoint": "grpc://h:1", "max_attempts": 0}}}}"#,
                "max_attempts",
            ),
            (
                r#"{"client": {"proxy": {"send": {"enabled": true, "endpoint": "grpc://h:1", "max_backoff": "1ms"}}}}"#,
                "max_backoff",
            ),
            (
                r#"{"dead_letter": {"max_entries": 0}}"#,
                "dead_letter.max_entries",
            ),
        ] {
            let e = load_str("json", bad, &[]).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let none = load(None, &BTreeMap::new()).unwrap();
        assert_eq!(none.config.dead_letter.path, "dead_letters.jsonl");
    }
}
