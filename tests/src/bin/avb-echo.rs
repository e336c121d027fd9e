//! `avb-echo`: the echo upstream of the local stack (`make run`).
//!
//! Answers every request with JSON describing what it received (method, path,
//! headers, body hash and length, trailers), so a request made through Envoy
//! shows exactly which headers the filter passed on. Prints one line per
//! request (version, method, path; never headers or bodies).

use std::net::SocketAddr;

use anyhow::Context;
use avb_tests::echo::{serve, Recorder};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "avb-echo",
    about = "HTTP/1.1 and h2c echo upstream for the AgentVoiceBox edge local stack"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("avb-echo listening on {}", listener.local_addr()?);
        serve(listener, Recorder::logging(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}
