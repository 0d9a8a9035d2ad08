//! The deployment files in `docker/`, checked without a Docker engine: the compose file parses
//! and points at files that exist, the hub nodes' config loads with hub-server's own loader
//! and the environment compose gives them, the Dockerfile builds real workspace binaries and
//! runs them as a non-root user, its health check answers against a real node started with
//! the compose config (and a real Redis), Prometheus scrapes the compose hub services, and
//! the nginx config is `nginx/hub.conf` with only the documented changes and passes `nginx -t`.
//! `promtool`, `nginx` and `docker compose` checks are skipped, with a note, where the tool is
//! missing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_norway::Value;
use support::process::{free_port, TempDir};
use support::redis::RedisServer;

/// Where the compose file mounts a node's config, and passes it with `-c`.
const HUB_CONFIG_IN_CONTAINER: &str = "/etc/hub/config.json";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn docker_dir() -> PathBuf {
    repo().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `docker/compose.yml`, with YAML merge keys (`<<: *hub`) applied as compose applies them.
fn compose() -> Value {
    let mut v: Value = serde_norway::from_str(&read(&docker_dir().join("compose.yml")))
        .expect("docker/compose.yml is YAML");
    v.apply_merge().expect("merge keys");
    v
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// The services built from one stage of the Dockerfile.
fn services_of_stage(compose: &Value, stage: &str) -> BTreeMap<String, Value> {
    services(compose)
        .into_iter()
        .filter(|(_, s)| s["build"]["target"].as_str() == Some(stage))
        .collect()
}

/// The hub nodes: services built from the Dockerfile's `hub-server` stage.
fn hub_services(compose: &Value) -> BTreeMap<String, Value> {
    services_of_stage(compose, "hub-server")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|i| i.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Bind mounts of a service as (host path resolved from docker/, container path).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    strings(&service["volumes"])
        .iter()
        .filter(|m| m.starts_with('.') || m.starts_with('/'))
        .map(|m| {
            let mut parts = m.split(':');
            let host = parts.next().unwrap();
            let container = parts.next().expect("host:container").to_owned();
            (docker_dir().join(host), container)
        })
        .collect()
}

/// A compose environment value with `${NAME:?message}` interpolation: the variable's name
/// when it is one, and whether it is required (no default).
fn interpolation(value: &str) -> Option<(String, bool)> {
    let inner = value.strip_prefix("${")?.strip_suffix('}')?;
    let name_end = inner.find([':', '?', '-', '}']).unwrap_or(inner.len());
    let name = &inner[..name_end];
    Some((name.to_owned(), inner[name_end..].starts_with(":?")))
}

/// The environment compose gives a service, with interpolated variables set to
/// `test-<NAME>`. Secrets must be interpolated and required: no secret has a default.
fn service_env(service_name: &str, service: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in service["environment"]
        .as_mapping()
        .expect("environment as a mapping")
    {
        let (k, v) = (k.as_str().unwrap(), v.as_str().expect("a string value"));
        let secret = ["SECRET", "KEY", "PASSWORD", "TOKEN"]
            .iter()
            .any(|w| k.contains(w));
        let value = match interpolation(v) {
            Some((name, required)) => {
                assert!(
                    !secret || required,
                    "{service_name}: {k} must be required (`${{{name}:?...}}`), without a default"
                );
                format!("test-{name}")
            }
            None => {
                assert!(
                    !secret,
                    "{service_name}: {k} is a secret written in compose.yml"
                );
                v.to_owned()
            }
        };
        env.insert(k.to_owned(), value);
    }
    env
}

/// The config file mounted into a hub service, checked to be the one its command passes.
fn hub_config_path(name: &str, service: &Value) -> PathBuf {
    let command = strings(&service["command"]);
    assert_eq!(
        command,
        ["-c", HUB_CONFIG_IN_CONTAINER],
        "{name}: command passes the mounted config"
    );
    bind_mounts(service)
        .into_iter()
        .find(|(_, c)| c == HUB_CONFIG_IN_CONTAINER)
        .unwrap_or_else(|| panic!("{name}: nothing mounted at {HUB_CONFIG_IN_CONTAINER}"))
        .0
}

#[test]
fn every_service_has_an_image_and_every_mounted_file_exists() {
    let compose = compose();
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let services = services(&compose);
    for name in ["redis", "mongo", "nginx", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "compose.yml lacks {name}");
    }
    for (name, s) in &services {
        assert!(
            s["image"].is_string() || s["build"].is_mapping(),
            "{name}: neither image nor build"
        );
        if let Some(build) = s["build"].as_mapping() {
            let context = docker_dir().join(build["context"].as_str().unwrap());
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
            assert!(
                dockerfile.is_file(),
                "{name}: {} missing",
                dockerfile.display()
            );
        }
        for (host, _) in bind_mounts(s) {
            assert!(
                host.exists(),
                "{name}: mounts {} which does not exist",
                host.display()
            );
        }
        for named in strings(&s["volumes"])
            .iter()
            .filter(|m| !m.starts_with('.') && !m.starts_with('/'))
        {
            let volume = named.split(':').next().unwrap();
            assert!(
                declared.contains(volume),
                "{name}: volume {volume} not declared"
            );
        }
        if let Some(deps) = s["depends_on"].as_mapping() {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep.as_str().unwrap()),
                    "{name}: {dep:?}"
                );
            }
        }
    }
    let redis = &services["redis"];
    let command = strings(&redis["command"]).join(" ");
    assert!(
        command.contains("--appendonly yes"),
        "Redis without AOF: {command}"
    );
    assert_eq!(hub_services(&compose).len(), 3, "three hub nodes");
}

#[test]
fn hub_nodes_config_loads_with_the_compose_environment() {
    let compose = compose();
    let service_names: BTreeSet<String> = services(&compose).into_keys().collect();
    for (name, s) in hub_services(&compose) {
        let path = hub_config_path(&name, &s);
        let env = service_env(&name, &s);
        let loaded = hub_server::config::load(Some(&path), &env)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", path.display()));
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        let c = loaded.config;
        c.validate().unwrap();
        assert_eq!(
            c.http_server.address, "0.0.0.0",
            "{name} must listen beyond loopback"
        );
        assert_eq!(c.http_server.port, 8000);
        assert_eq!(
            c.client.token.hmac_secret_key, "test-HUB_CLIENT_TOKEN_HMAC_SECRET_KEY",
            "{name}: the token secret comes from the environment"
        );
        assert_eq!(c.http_api.key, "test-HUB_HTTP_API_KEY");
        assert!(!c.grpc_api.enabled || c.grpc_api.key == "test-HUB_GRPC_API_KEY");
        assert_eq!(c.engine.kind, "redis");
        for address in c.engine.redis.address.list() {
            let host = address
                .trim_start_matches("redis://")
                .split([':', '/'])
                .next()
                .unwrap()
                .to_owned();
            assert!(service_names.contains(&host), "{name}: Redis at {address}");
        }
        assert!(
            Path::new(&c.dead_letter.path).starts_with("/var/lib/hub"),
            "the dead-letter file goes to the image's writable folder"
        );
        for port in strings(&s["ports"]) {
            assert!(
                port.ends_with(":8000") || port.ends_with(":10000"),
                "{port}"
            );
        }
    }
}

/// `docker/Dockerfile` as stages: (name, base, instructions as (KEYWORD, rest)).
type Stage = (String, String, Vec<(String, String)>);

fn dockerfile() -> Vec<Stage> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(t);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in joined {
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((&instruction, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => String::new(),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .2
                .push((keyword, rest));
        }
    }
    stages
}

/// The user a stage runs as: its last USER, else its parent stage's; `None` is root.
fn stage_user(stages: &[Stage], name: &str) -> Option<String> {
    let (_, base, instructions) = stages.iter().find(|s| s.0 == name)?;
    instructions
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, u)| u.clone())
        .or_else(|| stage_user(stages, base))
}

/// Package name → its binaries, for every workspace member.
fn workspace_binaries() -> BTreeMap<String, BTreeSet<String>> {
    let root: toml::Table = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    let mut out = BTreeMap::new();
    for member in root["workspace"]["members"].as_array().unwrap() {
        let dir = repo().join(member.as_str().unwrap());
        let manifest: toml::Table = toml::from_str(&read(&dir.join("Cargo.toml"))).unwrap();
        let package = manifest["package"]["name"].as_str().unwrap().to_owned();
        let mut bins = BTreeSet::new();
        if dir.join("src/main.rs").is_file() {
            bins.insert(package.clone());
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for e in entries.flatten() {
                let p = e.path();
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    bins.insert(stem.to_owned());
                }
            }
        }
        for bin in manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            bins.insert(bin["name"].as_str().unwrap().to_owned());
        }
        out.insert(package, bins);
    }
    out
}

#[test]
fn dockerfile_builds_workspace_binaries_and_runs_them_unprivileged() {
    let stages = dockerfile();
    let workspace = workspace_binaries();
    let builds: Vec<&String> = stages
        .iter()
        .flat_map(|s| &s.2)
        .filter(|(k, rest)| k == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest)
        .collect();
    assert!(!builds.is_empty(), "no `cargo build` in the Dockerfile");
    let mut built = BTreeSet::new();
    for run in builds {
        assert!(
            run.contains("--mount=type=cache"),
            "no cargo cache mount: {run}"
        );
        let args: Vec<&str> = run
            .split("cargo build")
            .nth(1)
            .unwrap()
            .split("&&")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert!(args.contains(&"--release"), "{run}");
        let value_of = |flags: &[&str]| -> Vec<String> {
            args.windows(2)
                .filter(|w| flags.contains(&w[0]))
                .map(|w| w[1].to_owned())
                .collect()
        };
        let packages = value_of(&["-p", "--package"]);
        for p in &packages {
            assert!(
                workspace.contains_key(p),
                "-p {p} is not a workspace package"
            );
        }
        for bin in value_of(&["--bin"]) {
            assert!(
                packages.iter().any(|p| workspace[p].contains(&bin)),
                "--bin {bin} is not a binary of {packages:?}"
            );
            built.insert(bin);
        }
    }
    assert!(
        built.contains("hub-server") && built.contains("loadtest"),
        "{built:?}"
    );

    // The stages compose builds, and the default (last) stage: non-root, a fixed uid.
    let compose = compose();
    let mut targets: BTreeSet<String> = services(&compose)
        .values()
        .filter_map(|s| s["build"]["target"].as_str().map(str::to_owned))
        .collect();
    targets.insert(stages.last().unwrap().0.clone());
    for target in &targets {
        let user = stage_user(&stages, target)
            .unwrap_or_else(|| panic!("stage {target} runs as root (no USER)"));
        let uid: u32 = user
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("stage {target}: USER {user} is not a fixed uid"));
        assert_ne!(uid, 0, "stage {target} runs as root");
    }

    let (_, _, server) = stages.iter().find(|s| s.0 == "hub-server").unwrap();
    let one = |k: &str| -> Vec<&String> {
        server
            .iter()
            .filter(|(kw, _)| kw == k)
            .map(|(_, r)| r)
            .collect()
    };
    assert_eq!(one("ENTRYPOINT"), [&r#"["hub-server"]"#.to_owned()]);
    let exposed: BTreeSet<&str> = one("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    assert!(
        exposed.contains("8000") && exposed.contains("10000"),
        "{exposed:?}"
    );
    let copied = one("COPY");
    assert_eq!(copied.len(), 1, "only the binary goes in: {copied:?}");
    assert!(healthcheck_command().join(" ").contains("/health"));
}

/// The HEALTHCHECK's `CMD [...]` of the hub-server stage.
fn healthcheck_command() -> Vec<String> {
    let stages = dockerfile();
    let (_, _, server) = stages.iter().find(|s| s.0 == "hub-server").unwrap();
    let check = server
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, r)| r)
        .expect("a HEALTHCHECK");
    let json = &check[check.find("CMD [").expect("HEALTHCHECK ... CMD [...]") + 4..];
    serde_json::from_str(json).expect("the CMD is a JSON array")
}

fn run_healthcheck(port: u16) -> bool {
    let cmd = healthcheck_command();
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("HUB_HTTP_SERVER_PORT", port.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A child process killed when the test ends, passed or not (an orphan would keep the test
/// runner's output pipe open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node started as compose starts it (`-c docker/hub.json` and its environment), but on
/// loopback ports and a local Redis: it must run and be ready, and the image's health check
/// must pass against it, and fail against a port where nothing listens.
#[tokio::test]
async fn a_node_runs_with_the_compose_config_and_passes_the_health_check() {
    let compose = compose();
    let (name, service) = hub_services(&compose).into_iter().next().unwrap();
    let redis = RedisServer::start();
    let (port, grpc_port) = (free_port(), free_port());
    let dir = TempDir::new("docker-node");
    let mut node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hub-server"))
            .args(strings(&service["command"]).iter().map(|a| {
                if a == HUB_CONFIG_IN_CONTAINER {
                    hub_config_path(&name, &service).display().to_string()
                } else {
                    a.clone()
                }
            }))
            .envs(service_env(&name, &service))
            .env("HUB_HTTP_SERVER_ADDRESS", "127.0.0.1")
            .env("HUB_HTTP_SERVER_PORT", port.to_string())
            .env("HUB_GRPC_API_PORT", grpc_port.to_string())
            .env("HUB_ENGINE_REDIS_ADDRESS", format!("[\"{}\"]", redis.url()))
            .env("HUB_DEAD_LETTER_PATH", dir.0.join("dead.jsonl"))
            .env("HUB_LOG_LEVEL", "warn")
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run_healthcheck(port) {
        if let Ok(Some(status)) = node.0.try_wait() {
            panic!("hub-server with docker/hub.json exited: {status}");
        }
        assert!(Instant::now() < deadline, "health check never passed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = support::http(addr, "GET", "/ready", &[], "").await;
    // The API key is the one compose passes in the environment.
    let publish = support::http(
        addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", "test-HUB_HTTP_API_KEY")],
        r#"{"channel":"news","data":{"text":"hi"}}"#,
    )
    .await;
    drop(node);
    assert_eq!(ready.0, 200, "/ready: {}", ready.1);
    assert_eq!(publish.0, 200, "publish: {}", publish.1);
    assert!(!publish.1.contains("error"), "publish: {}", publish.1);
    assert!(
        !run_healthcheck(free_port()),
        "health check passed with no server"
    );
}

/// `social-app`, built beside this test by `cargo test --workspace`.
fn social_app_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("social-app");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p social-app` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// The environment variables social-app reads: the `env = "..."` of its command line.
fn social_app_env_names() -> BTreeSet<String> {
    let config = read(&repo().join("social-app/src/config.rs"));
    let names: BTreeSet<String> = config
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert!(names.contains("SOCIAL_GRPC"), "{names:?}");
    names
}

/// The port of `host:port`.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// `docker/prometheus.yml`, the config compose mounts into Prometheus.
fn prometheus_config() -> Value {
    serde_norway::from_str(&read(&docker_dir().join("prometheus.yml"))).unwrap()
}

/// The targets a Prometheus config scrapes for one job.
fn prometheus_targets(config: &Value, job: &str) -> BTreeSet<String> {
    config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|j| j["job_name"].as_str() == Some(job))
        .flat_map(|j| j["static_configs"].as_sequence().unwrap().clone())
        .flat_map(|s| strings(&s["targets"]))
        .collect()
}

#[test]
fn social_app_runs_as_four_services_and_a_gateway_with_real_flags() {
    let compose = compose();
    let social = services_of_stage(&compose, "social-app");
    let known = social_app_env_names();
    let mut parts = BTreeSet::new();
    let mut metrics = BTreeSet::new();
    for (name, s) in &social {
        let env = service_env(name, s);
        for k in env.keys() {
            assert!(known.contains(k), "{name}: {k} is not a social-app setting");
        }
        let health = strings(&s["healthcheck"]["test"]).join(" ");
        let command = strings(&s["command"]);
        let served = match command.as_slice() {
            [service, part] if service == "service" => {
                // The other processes reach this one at SOCIAL_<PART>_ADDR: its compose name
                // and the port it listens on for gRPC.
                let key = format!("SOCIAL_{}_ADDR", part.to_uppercase());
                assert_eq!(
                    env.get(&key).map(String::as_str),
                    Some(format!("http://{name}:{}", port_of(&env["SOCIAL_GRPC"])).as_str()),
                    "{name}: {key}"
                );
                parts.insert(part.clone());
                port_of(&env["SOCIAL_METRICS"]).to_owned()
            }
            [gateway, http, addr] if gateway == "gateway" && http == "--http" => {
                let port = port_of(addr).to_owned();
                assert!(
                    strings(&s["ports"])
                        .iter()
                        .any(|p| p.ends_with(&format!(":{port}"))),
                    "{name}: port {port} not published"
                );
                parts.insert(gateway.clone());
                port
            }
            other => panic!("{name}: unexpected command {other:?}"),
        };
        // The health check asks the port that serves /healthz.
        assert!(
            health.contains(&format!("/dev/tcp/127.0.0.1/{served}")) && health.contains("/healthz"),
            "{name}: {health}"
        );
        metrics.insert(format!("{name}:{served}"));
        // The binary takes the command and the environment.
        let out = Command::new(social_app_bin())
            .args(&command)
            .arg("--help")
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: social-app {command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let want: BTreeSet<String> = ["chats", "counters", "gateway", "posts", "users"]
        .map(String::from)
        .into();
    assert_eq!(
        parts, want,
        "each part of the social app in its own service"
    );
    assert_eq!(
        prometheus_targets(&prometheus_config(), "social-app"),
        metrics,
        "Prometheus scrapes every social-app process where it serves /metrics"
    );
}

#[test]
fn prometheus_scrapes_the_compose_hub_nodes() {
    let compose = compose();
    let hubs: BTreeSet<String> = hub_services(&compose)
        .into_keys()
        .map(|h| format!("{h}:8000"))
        .collect();
    let prometheus = &services(&compose)["prometheus"];
    let mounts = bind_mounts(prometheus);
    let config_host = &mounts
        .iter()
        .find(|(_, c)| c == "/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted")
        .0;
    assert_eq!(
        config_host,
        &docker_dir().join("prometheus.yml"),
        "prometheus.yml mounted"
    );
    let config = prometheus_config();
    assert_eq!(
        prometheus_targets(&config, "hub"),
        hubs,
        "the hub job scrapes every compose hub node"
    );

    // Every rule file sits, in the container, next to the config.
    let tmp = TempDir::new("docker-prometheus");
    std::fs::copy(config_host, tmp.0.join("prometheus.yml")).unwrap();
    for rules in strings(&config["rule_files"]) {
        let in_container = format!("/etc/prometheus/{rules}");
        let (host, _) = mounts
            .iter()
            .find(|(_, c)| *c == in_container)
            .unwrap_or_else(|| panic!("{in_container} not mounted"));
        std::fs::copy(host, tmp.0.join(&rules)).unwrap();
    }
    match Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(tmp.0.join("prometheus.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check config:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("note: promtool not installed; `promtool check config` skipped"),
    }

    // Grafana: the data source is the compose Prometheus, the dashboard is mounted where the
    // provider reads.
    let grafana = &services(&compose)["grafana"];
    let provisioning = docker_dir().join("grafana/provisioning");
    let ds: Value =
        serde_norway::from_str(&read(&provisioning.join("datasources/prometheus.yml"))).unwrap();
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider: Value =
        serde_norway::from_str(&read(&provisioning.join("dashboards/hub.yml"))).unwrap();
    let dashboards = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        bind_mounts(grafana).iter().any(|(host, c)| {
            c.starts_with(dashboards) && host.ends_with("monitoring/grafana/dashboard.json")
        }),
        "monitoring/grafana/dashboard.json is not mounted under {dashboards}"
    );
}

/// The directives of an nginx config, one per line, comments and blank lines left out.
fn directives(conf: &str) -> Vec<String> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What docker/nginx.conf may change from nginx/hub.conf: listening, names, TLS, log targets.
fn may_differ(directive: &str) -> bool {
    let word = directive.split_whitespace().next().unwrap_or("");
    matches!(word, "listen" | "server_name" | "access_log" | "error_log")
        || word.starts_with("ssl_")
        || directive.starts_with("add_header Strict-Transport-Security")
        || directive.starts_with("return 301 https://")
}

#[test]
fn nginx_conf_is_hub_conf_with_the_compose_upstreams() {
    let compose = compose();
    let hubs: Vec<String> = hub_services(&compose)
        .into_keys()
        .map(|h| format!("{h}:8000"))
        .collect();
    let nginx = &services(&compose)["nginx"];
    let conf_host = bind_mounts(nginx)
        .into_iter()
        .find(|(_, c)| c.starts_with("/etc/nginx/conf.d/"))
        .expect("a conf.d mount")
        .0;
    let conf = read(&conf_host);
    let production = read(&repo().join("nginx/hub.conf"));

    // Same directives as nginx/hub.conf, once its node addresses are the compose services
    // and what may differ is left out (the redirect server then is an empty block).
    let normalize = |text: &str, addresses: &[&str]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in directives(text) {
            if may_differ(&d) {
                continue;
            }
            let mut d = d;
            for (i, a) in addresses.iter().enumerate() {
                d = d.replace(a, &hubs[i]);
            }
            if d == "}" && out.last().map(String::as_str) == Some("server {") {
                out.pop();
                continue;
            }
            out.push(d);
        }
        out
    };
    assert_eq!(
        normalize(&conf, &[]),
        normalize(
            &production,
            &["10.0.0.11:8000", "10.0.0.12:8000", "10.0.0.13:8000"]
        ),
        "docker/nginx.conf drifted from nginx/hub.conf"
    );
    for hub in &hubs {
        assert_eq!(
            conf.matches(&format!("server {hub} ")).count(),
            2,
            "{hub} in both upstreams"
        );
    }
    assert!(
        directives(&conf).contains(&"listen 80;".to_owned()),
        "compose publishes nginx's port 80"
    );

    // `nginx -t` with the service names as loopback ports and a temporary prefix.
    const NGINX: &str = "/usr/sbin/nginx";
    if !Path::new(NGINX).exists() {
        eprintln!("note: {NGINX} not installed; `nginx -t` of docker/nginx.conf skipped");
        return;
    }
    let dir = TempDir::new("docker-nginx");
    let mut runnable = conf.replace("listen 80;", &format!("listen 127.0.0.1:{};", free_port()));
    for hub in &hubs {
        runnable = runnable.replace(hub, &format!("127.0.0.1:{}", free_port()));
    }
    std::fs::write(dir.0.join("hub.conf"), runnable).unwrap();
    let d = dir.0.display();
    std::fs::write(
        dir.0.join("nginx.conf"),
        format!(
            "events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   include {d}/hub.conf;\n\
             }}\n"
        ),
    )
    .unwrap();
    let out = Command::new(NGINX)
        .arg("-t")
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(dir.0.join("nginx.conf"))
        .arg("-e")
        .arg(dir.0.join("error.log"))
        .arg("-g")
        .arg(format!("pid {d}/nginx.pid; error_log {d}/error.log;"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_compose_config_is_valid_where_compose_is_installed() {
    let compose_works = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !compose_works {
        eprintln!("note: `docker compose` is not available; `docker compose config -q` skipped");
        return;
    }
    let mut cmd = Command::new("docker");
    cmd.args(["compose", "-f"])
        .arg(docker_dir().join("compose.yml"))
        .args(["config", "-q"]);
    for (_, service) in hub_services(&compose()) {
        for (_, v) in service_env("", &service) {
            if let Some(name) = v.strip_prefix("test-") {
                cmd.env(name, &v);
            }
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "docker compose config -q:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
