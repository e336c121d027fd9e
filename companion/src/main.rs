//! `avb-companion`: serve the audit store and API, verify the chain, clear a
//! tenant's cache. Thin: parse arguments, start logging, hand over to the lib.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use avb_companion::api::policy::{load_policy, PolicyAuthorizer};
use avb_companion::api::{AppState, IngestToken};
use avb_companion::audit::{open_store, verify_chain};
use avb_companion::cache::cli::InvalidateArgs;
use clap::{Args, Parser, Subcommand};

/// The AgentVoiceBox edge companion: tamper-evident audit trail, Audit API and
/// tenant cache invalidation.
#[derive(Debug, Parser)]
#[command(name = "avb-companion", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve audit ingest (POST /v1/audit/events), the Audit API (/api/v1/audit/...),
    /// tenant cache invalidation, /healthz, /readyz and /metrics.
    ///
    /// The ingest token is read from AVB_INGEST_TOKEN only (never a flag: it
    /// would show in the process list) and is required. The policy is
    /// required too: without --policy, pass --no-policy to run the API
    /// unprotected on purpose (fail closed).
    Serve(ServeArgs),
    /// Audit trail maintenance.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Tenant cache maintenance (Redis).
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AVB_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArg,
    /// Redis for tenant cache invalidation (redis://...); without it the
    /// invalidation endpoint answers 503.
    #[arg(
        long,
        env = "AVB_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// The edge policy (YAML, or JSON if the name ends in .json), enforced on
    /// every /api/ request with the filter's own engine.
    #[arg(
        long,
        env = "AVB_POLICY",
        value_name = "FILE",
        conflicts_with = "no_policy"
    )]
    policy: Option<PathBuf>,
    /// Serve /api/ without enforcing any policy (only behind an Envoy that
    /// enforces it, e.g. for local experiments).
    #[arg(long)]
    no_policy: bool,
}

#[derive(Debug, Args)]
struct DatabaseArg {
    /// Audit store: sqlite://PATH (relative, or sqlite:///absolute) or postgres://...
    #[arg(
        long,
        env = "AVB_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://avb-audit.db",
        value_name = "URL"
    )]
    database: String,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Walk the hash chain from its anchor to its head.
    ///
    /// Prints the head seq and hash (keep them somewhere else to detect a
    /// rewrite of the whole chain later). Exit 0: intact; 1: broken (the first
    /// bad record is named); 2: the store could not be read.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    database: DatabaseArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Delete every key of one tenant (tenant:{ID}:*) with SCAN + UNLINK.
    Invalidate(InvalidateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => match serve(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {}", describe(&error));
                    ExitCode::FAILURE
                }
            },
            Command::Audit {
                cmd: AuditCmd::Verify(args),
            } => verify(args).await,
            Command::Cache {
                cmd: CacheCmd::Invalidate(args),
            } => avb_companion::cache::cli::run(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token = std::env::var("AVB_INGEST_TOKEN").unwrap_or_default();
    let Some(token) = IngestToken::new(&token) else {
        bail!("AVB_INGEST_TOKEN is not set: the filter authenticates its audit batches with it");
    };
    let authorizer = match (&args.policy, args.no_policy) {
        (Some(path), _) => {
            let authorizer = PolicyAuthorizer::new(load_policy(path)?);
            tracing::info!(revision = authorizer.revision(), "policy loaded");
            Some(authorizer)
        }
        (None, true) => {
            tracing::warn!("--no-policy: /api/ is served without any authorization check");
            None
        }
        (None, false) => bail!(
            "no policy: pass --policy FILE (or AVB_POLICY), or --no-policy to serve /api/ unprotected on purpose"
        ),
    };
    let store = open_store(&args.database.database)
        .await
        .context("opening the audit store")?;
    let mut state = AppState::new(store).with_ingest_token(token);
    if let Some(url) = &args.redis {
        state = state.with_redis_url(url);
    }
    if let Some(authorizer) = authorizer {
        state = state.with_authorizer(Arc::new(authorizer));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "avb-companion serving");
    avb_companion::serve(listener, state, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("avb-companion stopped");
    Ok(())
}

/// The error and its causes on one line, skipping a cause whose text the
/// message before it already includes (thiserror messages often do).
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn verify(args: VerifyArgs) -> ExitCode {
    // Verifying must not create an empty database where the real one was
    // expected (and then report it intact).
    if let Some(path) = args.database.database.strip_prefix("sqlite://") {
        if !std::path::Path::new(path).is_file() {
            eprintln!("error: cannot verify the audit chain: no database file at {path}");
            return ExitCode::from(2);
        }
    }
    let report = match open_store(&args.database.database).await {
        Ok(store) => verify_chain(store.as_ref()).await,
        Err(error) => Err(error),
    };
    match report {
        Err(error) => {
            if args.json {
                println!("{}", serde_json::json!({"error": error.to_string()}));
            }
            eprintln!("error: cannot verify the audit chain: {error}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::json!(report));
            }
            match &report.broken {
                None => {
                    if !args.json {
                        println!(
                            "ok: {} records verified (seq {} to {}); head seq {} hash {}",
                            report.records,
                            report.first_seq,
                            report.head_seq,
                            report.head_seq,
                            report.head_hash
                        );
                    }
                    ExitCode::SUCCESS
                }
                Some(broken) => {
                    if !args.json {
                        println!(
                            "broken: first bad record is seq {}: {}; head seq {} hash {}",
                            broken.seq, broken.problem, report.head_seq, report.head_hash
                        );
                    }
                    ExitCode::from(1)
                }
            }
        }
    }
}
