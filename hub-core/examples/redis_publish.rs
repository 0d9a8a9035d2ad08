//! Publish throughput of the Redis engine at several concurrencies: concurrent publishes
//! share round trips on one pipelined connection, so throughput grows with concurrency
//! while every publish stays one Lua call (one `EVALSHA`).
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release -p hub-core --features redis --example redis_publish -- redis://127.0.0.1:6390
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hub_core::broker::{Broker, HistoryOptions, PublishOptions};
use hub_core::protocol::Publication;
use hub_core::redis::{RedisConfig, RedisEngine};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let mut config = RedisConfig::default();
    config.addresses = vec![url.clone()];
    config.prefix = format!("bench{}", std::process::id());
    let engine = RedisEngine::connect(config).await?;
    let options = PublishOptions {
        history: Some(HistoryOptions {
            size: 100,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(600),
        }),
        ..Default::default()
    };
    let data = Bytes::from(format!(r#"{{"text":"{}"}}"#, "x".repeat(90)));
    println!("{url}: 100-byte publications with history, 20,000 per run, channels ch-0..ch-99");
    println!(
        "{:>12} {:>14} {:>12}",
        "concurrency", "publishes/s", "µs each"
    );
    for concurrency in [1usize, 4, 16, 64, 256] {
        let total = 20_000usize;
        let per_task = total / concurrency;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let engine: Arc<RedisEngine> = engine.clone();
            let options = options.clone();
            let data = data.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let p = Publication {
                        data: data.clone(),
                        ..Default::default()
                    };
                    let ch = format!("ch-{}", (t * per_task + i) % 100);
                    engine.publish(&ch, p, &options).await.expect("publish");
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let n = (per_task * concurrency) as f64;
        println!(
            "{concurrency:>12} {:>14.0} {:>12.1}",
            n / secs,
            secs * 1e6 / n
        );
    }
    Ok(())
}
