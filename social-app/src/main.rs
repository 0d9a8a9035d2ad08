//! `social-app`: the reference social network over the hub.
//!
//! ```text
//! social-app serve --dev                 # everything in one process: http://127.0.0.1:8080
//! social-app service users --grpc ...    # one service as its own process
//! social-app gateway --http ...          # the gateway alone
//! social-app seed --users 100000         # demo data
//! ```

use clap::{Parser, Subcommand};
use social_app::app::{self, Part};
use social_app::config::Settings;
use social_app::seed::{self, SeedArgs};

#[derive(Parser)]
#[command(
    name = "social-app",
    version,
    about = "The reference social network over the hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway and all four services in this process.
    Serve {
        /// Where the gateway listens.
        #[arg(long, env = "SOCIAL_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
    },
    /// Runs the gateway alone; the services run elsewhere (`--users-addr` ...).
    Gateway {
        /// Where the gateway listens.
        #[arg(long, env = "SOCIAL_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
    },
    /// Runs one service (on `--grpc`).
    Service {
        /// Which.
        #[arg(value_enum)]
        name: Part,
    },
    /// Writes demo data into the configured stores (the app must not be running on the same
    /// embedded files).
    Seed(SeedArgs),
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Seed(args) => seed::run(&cli.settings, &args)
            .await
            .map(|s| println!("{s}")),
        Command::Serve { http } => run(Part::All, &cli.settings, &http).await,
        Command::Gateway { http } => run(Part::Gateway, &cli.settings, &http).await,
        Command::Service { name } => {
            if matches!(name, Part::All | Part::Gateway) {
                Err("service: one of users, posts, chats, counters".into())
            } else {
                run(name, &cli.settings, "").await
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("social-app: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(part: Part, settings: &Settings, http: &str) -> Result<(), String> {
    let running = app::start(part, settings, http).await?;
    if let Some(a) = running.http {
        println!("social-app: http://{a}");
    }
    if let Some(a) = running.grpc {
        println!("social-app: services on {a} (gRPC)");
    }
    if let Some(a) = running.metrics {
        println!("social-app: metrics on http://{a}/metrics");
    }
    running.run_until(shutdown_signal()).await;
    Ok(())
}
