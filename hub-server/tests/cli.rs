//! The `hub-server` binary's subcommands (`genconfig`, `checkconfig`, `gentoken`), run as a
//! user would run them, in a fresh temporary directory per test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hub-cli-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary in `dir` with `args`, without HUB_/CENTRIFUGO_ variables leaking in.
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub-server"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("HUB_") || k.starts_with("CENTRIFUGO_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run hub-server")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Decodes a JWT's payload (base64url, no padding).
fn jwt_payload(token: &str) -> serde_json::Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token:?}");
    assert!(parts.iter().all(|p| !p.is_empty()), "{token:?}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn genconfig_writes_a_config_and_refuses_to_overwrite_it() {
    let dir = TempDir::new("genconfig");
    let o = run(&dir.0, &["genconfig", "-c", "config.json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let path = dir.path("config.json");
    let text = std::fs::read_to_string(&path).expect("genconfig wrote the file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the file is JSON");
    let secret = v["client"]["token"]["hmac_secret_key"]
        .as_str()
        .unwrap_or("");
    let key = v["http_api"]["key"].as_str().unwrap_or("");
    assert!(secret.len() >= 32, "a fresh hmac secret: {text}");
    assert!(key.len() >= 32, "a fresh API key: {text}");
    assert_ne!(secret, key);

    // A second run must not touch the file.
    std::fs::write(&path, "{\"marker\": true}").unwrap();
    let o = run(&dir.0, &["genconfig", "-c", "config.json"]);
    assert!(!o.status.success(), "overwrote: {}", describe(&o));
    assert!(stderr(&o).contains("exists"), "{}", describe(&o));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"marker\": true}"
    );
}

#[test]
fn genconfig_makes_fresh_secrets_each_time() {
    let dir = TempDir::new("genconfig-fresh");
    for f in ["a.json", "b.json"] {
        let o = run(&dir.0, &["genconfig", "-c", f]);
        assert!(o.status.success(), "{}", describe(&o));
    }
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path(f)).unwrap()).unwrap()
    };
    let (a, b) = (read("a.json"), read("b.json"));
    assert_ne!(
        a["client"]["token"]["hmac_secret_key"],
        b["client"]["token"]["hmac_secret_key"]
    );
    assert_ne!(a["http_api"]["key"], b["http_api"]["key"]);
}

#[test]
fn checkconfig_passes_on_a_generated_config() {
    let dir = TempDir::new("checkconfig-ok");
    for f in ["config.json", "config.toml", "config.yaml"] {
        let o = run(&dir.0, &["genconfig", "-c", f]);
        assert!(o.status.success(), "genconfig {f}: {}", describe(&o));
        let o = run(&dir.0, &["checkconfig", "-c", f]);
        assert!(o.status.success(), "checkconfig {f}: {}", describe(&o));
        assert!(stdout(&o).contains("valid"), "{}", describe(&o));
    }
}

#[test]
fn checkconfig_fails_naming_an_unknown_key() {
    let dir = TempDir::new("checkconfig-unknown");
    dir.write(
        "config.json",
        r#"{"http_server": {"port": 9000}, "client": {"ping_intervall": "10s"}}"#,
    );
    let o = run(&dir.0, &["checkconfig", "-c", "config.json"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("ping_intervall"),
        "the unknown key is named: {}",
        describe(&o)
    );
}

#[test]
fn checkconfig_without_a_config_file_fails() {
    let dir = TempDir::new("checkconfig-none");
    let o = run(&dir.0, &["checkconfig"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("-c"), "{}", describe(&o));
}

#[test]
fn checkconfig_fails_on_a_missing_file() {
    let dir = TempDir::new("checkconfig-missing");
    let o = run(&dir.0, &["checkconfig", "-c", "absent.json"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("absent.json"), "{}", describe(&o));
}

#[test]
fn toml_config_loads() {
    let dir = TempDir::new("toml");
    dir.write(
        "config.toml",
        r#"
[http_server]
port = 9100

[client]
ping_interval = "20s"
allowed_origins = ["http://localhost:3000"]

[client.token]
hmac_secret_key = "secret"

[http_api]
key = "k"

[[channel.namespaces]]
name = "chat"
presence = true
history_size = 10
history_ttl = "5m"
force_recovery = true
"#,
    );
    let o = run(&dir.0, &["checkconfig", "-c", "config.toml"]);
    assert!(o.status.success(), "{}", describe(&o));
    // And the values are used: gentoken reads the key from it.
    let o = run(
        &dir.0,
        &["gentoken", "-c", "config.toml", "-u", "bob", "-q"],
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(jwt_payload(stdout(&o).trim())["sub"], "bob");
}

#[test]
fn yaml_config_loads() {
    let dir = TempDir::new("yaml");
    let yaml = r#"
http_server:
  port: 9101
client:
  ping_interval: 20s
  token:
    hmac_secret_key: secret
http_api:
  key: k
channel:
  without_namespace:
    allow_subscribe_for_client: true
  namespaces:
    - name: chat
      presence: true
      history_size: 10
      history_ttl: 300s
"#;
    for f in ["config.yaml", "config.yml"] {
        dir.write(f, yaml);
        let o = run(&dir.0, &["checkconfig", "-c", f]);
        assert!(o.status.success(), "{f}: {}", describe(&o));
    }
}

#[test]
fn toml_and_yaml_unknown_keys_are_named_too() {
    let dir = TempDir::new("unknown-formats");
    dir.write("config.toml", "[http_server]\nprot = 1\n");
    dir.write("config.yaml", "http_api:\n  kye: x\n");
    let o = run(&dir.0, &["checkconfig", "-c", "config.toml"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("prot"), "{}", describe(&o));
    let o = run(&dir.0, &["checkconfig", "-c", "config.yaml"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("kye"), "{}", describe(&o));
}

#[test]
fn gentoken_quiet_prints_only_a_jwt_for_the_user() {
    let dir = TempDir::new("gentoken");
    let o = run(&dir.0, &["genconfig", "-c", "config.json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let o = run(
        &dir.0,
        &["gentoken", "-c", "config.json", "-u", "alice", "-q"],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "only the token: {out:?}");
    let token = out.trim();
    assert!(
        !token.contains(char::is_whitespace),
        "only the token: {out:?}"
    );
    let claims = jwt_payload(token);
    assert_eq!(claims["sub"], "alice", "{claims}");
    let exp = claims["exp"].as_u64().expect("exp is set by default");
    let now = unix_now();
    assert!(
        exp > now && exp <= now + 604_800 + 60,
        "default ttl is a week: exp {exp}, now {now}"
    );
}

#[test]
fn gentoken_ttl_zero_has_no_expiry_and_verbose_mode_explains() {
    let dir = TempDir::new("gentoken-ttl");
    let o = run(&dir.0, &["genconfig", "-c", "config.json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let o = run(
        &dir.0,
        &[
            "gentoken",
            "-c",
            "config.json",
            "-u",
            "carol",
            "-t",
            "0",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    let claims = jwt_payload(stdout(&o).trim());
    assert_eq!(claims["sub"], "carol");
    assert!(claims.get("exp").is_none(), "{claims}");

    let o = run(&dir.0, &["gentoken", "-c", "config.json", "-u", "dave"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("dave"), "{out}");
    let token = out.lines().last().unwrap_or("").trim();
    assert_eq!(jwt_payload(token)["sub"], "dave");
}

#[test]
fn gentoken_without_an_hmac_key_fails_clearly() {
    let dir = TempDir::new("gentoken-nokey");
    dir.write("config.json", r#"{"http_api": {"key": "k"}}"#);
    let o = run(&dir.0, &["gentoken", "-c", "config.json", "-u", "alice"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stdout(&o).trim().is_empty(),
        "no token printed: {}",
        describe(&o)
    );
    assert!(
        stderr(&o).contains("hmac_secret_key"),
        "the message names the missing key: {}",
        describe(&o)
    );
}

#[test]
fn an_invalid_duration_fails_naming_the_problem() {
    let dir = TempDir::new("duration");
    dir.write(
        "config.json",
        r#"{"client": {"ping_interval": "abc", "token": {"hmac_secret_key": "s"}}}"#,
    );
    for args in [
        &["checkconfig", "-c", "config.json"][..],
        &["gentoken", "-c", "config.json", "-u", "alice", "-q"][..],
    ] {
        let o = run(&dir.0, args);
        assert!(!o.status.success(), "{args:?}: {}", describe(&o));
        let err = stderr(&o);
        assert!(err.contains("duration"), "{args:?}: {}", describe(&o));
        assert!(err.contains("abc"), "{args:?}: {}", describe(&o));
        assert!(
            err.contains("client.ping_interval"),
            "the key is named: {}",
            describe(&o)
        );
        assert!(stdout(&o).trim().is_empty(), "{}", describe(&o));
    }
}

#[test]
fn a_wrongly_typed_value_fails_naming_the_key() {
    let dir = TempDir::new("wrong-type");
    dir.write("config.yaml", "http_server:\n  port: eighty\n");
    let o = run(&dir.0, &["checkconfig", "-c", "config.yaml"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("http_server.port"), "{}", describe(&o));
    dir.write(
        "ns.yaml",
        "channel:\n  namespaces:\n    - name: ok\n    - name: bad\n      presence: maybe\n",
    );
    let o = run(&dir.0, &["checkconfig", "-c", "ns.yaml"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("channel.namespaces[1]"),
        "{}",
        describe(&o)
    );
}

#[test]
fn inconsistent_options_fail_checkconfig() {
    let dir = TempDir::new("inconsistent");
    dir.write(
        "config.json",
        r#"{"client": {"ping_interval": "5s", "pong_timeout": "10s"}}"#,
    );
    let o = run(&dir.0, &["checkconfig", "-c", "config.json"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("pong_timeout"), "{}", describe(&o));

    dir.write("bad.ini", "x = 1");
    let o = run(&dir.0, &["checkconfig", "-c", "bad.ini"]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("extension"), "{}", describe(&o));
}
