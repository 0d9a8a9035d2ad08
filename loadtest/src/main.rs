//! `loadtest`: a benchmark client for the hub that speaks only the wire protocol (Centrifugo
//! client protocol v2, JSON or, with `--protobuf`, Protobuf) and the server API (HTTP, or gRPC through `hub-client`).
//!
//! ```sh
//! loadtest idle   --connections 5000 --secret S --hold 10s --pid $(pidof hub-server)
//! loadtest fanout --subscribers 1000 --rate 10 --size 100 --duration 10s \
//!                 --secret S --api-key K --pid $(pidof hub-server)
//! loadtest churn  --stable 1000 --churn 50 --lifetime 2s --rate 10 --duration 10s \
//!                 --secret S --api-key K
//! loadtest channels --connections 2000 --group-rate 100 --personal-rate 100 \
//!                 --secret S --api-key K --report out/
//! # Publications through the gRPC server API, or a client connection's `publish` commands
//! # (the channel's namespace needs allow_publish_for_client):
//! loadtest fanout --subscribers 1000 --rate 10 --secret S --api-key K --publish-via grpc
//! loadtest fanout --subscribers 1000 --rate 10 --secret S --publish-via client
//! # A cluster: three hub nodes (sharing a broker), their CPU and RSS summed.
//! loadtest channels --connections 30000 --group-rate 100 --personal-rate 100 \
//!                 --url ws://127.0.0.1:8001/connection/websocket,ws://127.0.0.1:8002/connection/websocket,ws://127.0.0.1:8003/connection/websocket \
//!                 --api-url http://127.0.0.1:8001 \
//!                 --pid $(pgrep -d, -f 'hub-server') --secret S --api-key K --report out/
//! ```
//!
//! Past one process's open files, connections spread over worker processes (`--workers`)
//! and local source addresses (`--source-addrs`); `--url a,b,...` spreads them over cluster
//! nodes, and `--pid a,b,...` names the nodes' processes: the server CPU (total, user,
//! kernel, cores busy, per delivery) and RSS (before, after, per connection) are then sums
//! over them, and the CPU of all of them is left out of the "other processes" figure.
//! Without `--pid`, `idle` reads the servers' memory from each node's `/metrics`
//! (`process_resident_memory_bytes`).
//!
//! Every run is bounded in count and time, and targets loopback only unless
//! `--allow-remote`. Exit status: 0 when everything asked for happened (all connected, every
//! delivery arrived), 2 when the run finished with failures (the report says which), 1 when
//! it could not run.

mod channels;
mod churn;
mod cli;
mod conn;
mod fanout;
mod idle;
mod procfs;
mod proto;
mod publish;
mod publisher;
mod report;
mod scenario;
mod server_metrics;
mod stats;
mod swarm;
mod target;
mod token;
mod workers;
mod ws;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

/// A scenario's report, and whether everything asked for happened.
pub(crate) struct Outcome<R> {
    /// The report.
    pub(crate) report: R,
    /// All connected, nothing lost.
    pub(crate) complete: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let progress = !cli.json && std::io::stderr().is_terminal();
    let printed = runtime.block_on(async {
        match cli.command {
            Command::Idle(args) => idle::run(args, cli.allow_remote, progress)
                .await
                .and_then(|o| print(o, cli.json, idle::IdleReport::human)),
            Command::Fanout(args) => fanout::run(args, cli.allow_remote, progress)
                .await
                .and_then(|o| print(o, cli.json, fanout::FanoutReport::human)),
            Command::Worker { spec } => workers::worker(&spec).await.map(|()| true),
            Command::Churn(args) => churn::run(args, cli.allow_remote, progress)
                .await
                .and_then(|o| print(o, cli.json, churn::ChurnReport::human)),
            Command::Channels(args) => channels::run(args, cli.allow_remote, progress)
                .await
                .and_then(|o| print(o, cli.json, channels::ChannelsReport::human)),
        }
    });
    // Connections still closing must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match printed {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => fail(&e),
    }
}

/// Prints the report as JSON or text; returns whether the run was complete.
fn print<R: serde::Serialize>(
    o: Outcome<R>,
    json: bool,
    human: fn(&R) -> String,
) -> Result<bool, String> {
    if json {
        let text = serde_json::to_string_pretty(&o.report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", human(&o.report));
    }
    Ok(o.complete)
}

fn fail(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
