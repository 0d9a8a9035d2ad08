//! `hub-server`: parse the command line, set up logging, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hub_server::cli::{self, Cli, Command, DeadLetterAction};
use hub_server::server;

/// Raises the soft open-files limit to the hard limit; returns the new limit.
fn raise_nofile() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Genconfig) => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("config.json"));
            return finish(cli::genconfig(&path));
        }
        Some(Command::Checkconfig) => {
            if cli.config.is_none() {
                return finish(Err("checkconfig needs -c <config file>".into()));
            }
            return finish(cli::load(&cli).and_then(|l| {
                if l.unknown_keys.is_empty() {
                    Ok("config is valid".into())
                } else {
                    Err(format!("unknown keys: {}", l.unknown_keys.join(", ")))
                }
            }));
        }
        Some(Command::Gentoken { user, ttl, quiet }) => {
            let r = cli::load(&cli).and_then(|l| cli::gentoken(&l.config, user, *ttl));
            return finish(r.map(|t| {
                if *quiet {
                    t
                } else {
                    let exp = if *ttl == 0 {
                        "never expires".to_string()
                    } else {
                        format!("expires in {ttl} s")
                    };
                    format!("HS256 token for user {user:?} ({exp}):\n{t}")
                }
            }));
        }
        Some(Command::Deadletters { action }) => {
            if cli.config.is_none() {
                return finish(Err("deadletters needs -c <config file>".into()));
            }
            let config = match cli::load(&cli) {
                Ok(l) => l.config,
                Err(e) => return finish(Err(e)),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return finish(Err(format!("cannot start runtime: {e}"))),
            };
            return finish(runtime.block_on(async {
                match action {
                    DeadLetterAction::List => cli::deadletters_list(&config).await,
                    DeadLetterAction::Replay => cli::deadletters_replay(&config).await,
                }
            }));
        }
        None => {}
    }
    let loaded = match cli::load(&cli) {
        Ok(l) => l,
        Err(e) => return finish(Err(e)),
    };
    let config_file = cli::config_path(&cli);
    let mut config = loaded.config;
    let dev = if config_file.is_none() {
        Some(cli::dev_defaults(&mut config))
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return finish(Err(format!("cannot start runtime: {e}"))),
    };
    // Inside the runtime: the OTLP exporter dials through it.
    let node_name = config.node_config().name;
    let telemetry = match runtime.block_on(async {
        hub_server::telemetry::init(&config.log, &config.opentelemetry, &node_name)
    }) {
        Ok(t) => t,
        Err(e) => return finish(Err(e)),
    };
    run(
        runtime,
        config,
        config_file,
        loaded.unknown_keys,
        dev,
        telemetry,
    )
}

/// Serves until a shutdown signal; then exports the traces still buffered.
fn run(
    runtime: tokio::runtime::Runtime,
    config: hub_server::config::Config,
    config_file: Option<PathBuf>,
    unknown_keys: Vec<String>,
    dev: Option<cli::DevSettings>,
    telemetry: hub_server::telemetry::Telemetry,
) -> ExitCode {
    if let Some(p) = &config_file {
        tracing::info!(path = %p.display(), "config loaded");
    }
    for k in &unknown_keys {
        tracing::warn!(key = %k, "unknown config key ignored");
    }
    let code = runtime.block_on(async move {
        let nofile = raise_nofile();
        let addr: SocketAddr = match format!("{}:{}", config.http_server.address, config.http_server.port).parse() {
            Ok(a) => a,
            Err(e) => return finish(Err(format!("invalid http_server.address/port: {e}"))),
        };
        let grpc_addr: Option<SocketAddr> = if config.grpc_api.enabled {
            match format!("{}:{}", config.grpc_address(), config.grpc_api.port).parse() {
                Ok(a) => Some(a),
                Err(e) => return finish(Err(format!("invalid grpc_api.address/port: {e}"))),
            }
        } else {
            None
        };
        let app = match server::build(config.clone()).await {
            Ok(a) => a,
            Err(e) => return finish(Err(e)),
        };
        let listener = match server::bind(addr) {
            Ok(l) => l,
            Err(e) => return finish(Err(format!("cannot listen on {addr}: {e}"))),
        };
        let grpc_listener = match grpc_addr.map(server::bind).transpose() {
            Ok(l) => l,
            Err(e) => {
                let a = grpc_addr.map(|a| a.to_string()).unwrap_or_default();
                return finish(Err(format!("cannot listen on {a} (grpc_api): {e}")));
            }
        };
        let capacity = nofile.map(|n| n.saturating_sub(64)).unwrap_or(0);
        tracing::info!(%addr, open_files_limit = ?nofile, approx_max_connections = capacity, "hub-server listening");
        let (http, ws) = if config.http_server.tls.enabled { ("https", "wss") } else { ("http", "ws") };
        eprintln!("hub-server {} listening on {http}://{addr}", env!("CARGO_PKG_VERSION"));
        eprintln!("  WebSocket:  {ws}://{addr}/connection/websocket");
        eprintln!("  server API: POST {http}://{addr}{}/publish  (header X-API-Key)", config.http_api.handler_prefix);
        if let Some(g) = grpc_addr {
            tracing::info!(addr = %g, "gRPC server API listening");
            eprintln!("  gRPC API:   {g}  (centrifugal.centrifugo.api.CentrifugoApi, metadata authorization: apikey KEY)");
        }
        eprintln!("  health:     {http}://{addr}/health   metrics: {http}://{addr}/metrics");
        match &dev {
            Some(dev) => print_dev_help(&config, addr, dev),
            None => {
                if !config.client.token.has_keys() && !config.client.allow_anonymous_connect_without_token {
                    eprintln!("  note: no token key and no anonymous access configured, so clients cannot connect yet.");
                    eprintln!("        Set client.token.hmac_secret_key, then `hub-server gentoken -c CONFIG -u USER`.");
                }
                if config.http_api.key.is_empty() && !config.http_api.insecure {
                    eprintln!("  note: http_api.key is empty, so the server API refuses every call.");
                }
                if config.grpc_api.enabled && config.grpc_api.key.is_empty() && !config.grpc_api.insecure {
                    eprintln!("  note: grpc_api.key is empty, so the gRPC API refuses every call.");
                }
            }
        }
        match server::serve_all(app, listener, grpc_listener, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => finish(Err(format!("server failed: {e}"))),
        }
    });
    // The exporter's last batch goes out through the runtime, which still runs.
    let _ =
        runtime.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await });
    code
}

/// Tells a user who started without a config what to do next.
fn print_dev_help(config: &hub_server::config::Config, addr: SocketAddr, dev: &cli::DevSettings) {
    eprintln!();
    eprintln!("  No config file (-c, or ./config.json): running with development settings.");
    if let Some(k) = &dev.hmac_secret_key {
        eprintln!("  Token secret for this run (HS256): {k}");
    }
    if let Some(k) = &dev.api_key {
        eprintln!("  API key for this run:              {k}");
    }
    if let Ok(t) = cli::gentoken(config, "demo", 86400) {
        eprintln!("  A token for user \"demo\" (24 h):    {t}");
    }
    eprintln!();
    eprintln!(
        "  Next: subscribe with examples/node-subscriber (or examples/browser), then publish:"
    );
    let http = if config.http_server.tls.enabled {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "    curl -X POST -H 'X-API-Key: {}' -d '{{\"channel\":\"news\",\"data\":{{\"text\":\"hi\"}}}}' {http}://{addr}{}/publish",
        config.http_api.key, config.http_api.handler_prefix
    );
    eprintln!(
        "  For a lasting setup: `hub-server genconfig` writes config.json with fresh secrets."
    );
    eprintln!();
}

fn finish(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
