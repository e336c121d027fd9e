//! The `avb-policy` command line: check, explain, test, diff, render, token
//! and schema, all built on the filter's own engine ([`crate::policy`]).
//!
//! Nothing here decides a request by itself: `explain`, `test` and `diff`
//! compile the policy with [`crate::policy::Policy`] and call `decide`, so the
//! CLI and the filter can never disagree about what a policy means.
//!
//! Exit codes follow the conventions of `opa` and `kubectl diff`: 0 when all
//! is well, 1 when a policy is invalid, a test fails or a diff finds changes,
//! 2 for usage and I/O errors.

mod cases;
mod check;
mod diff;
mod env_file;
mod explain;
mod probe;
mod render;
mod schema;
mod secrets;
mod source;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use schema::{policy_schema, validate_against_schema, SchemaViolation};
pub use source::{load_policy, PolicyDocument, SourceError};

/// Why a command stopped. The variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input was read but is not valid (policy, cases file): exit 1.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written, or the arguments make no sense: exit 2.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 1,
            CliError::Usage(_) => 2,
        }
    }
}

impl From<SourceError> for CliError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Read { .. } => CliError::Usage(error.to_string()),
            _ => CliError::Invalid(error.to_string()),
        }
    }
}

/// What a successful command reports: 0, or 1 for "ran fine, found failures".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failures,
}

#[derive(Debug, Parser)]
#[command(
    name = "avb-policy",
    version,
    about = "Check, explain, test, diff and render avb-edge policies with the filter's own engine",
    long_about = "Check, explain, test, diff and render avb-edge policies with the filter's own engine.\n\n\
        Policy files are YAML or JSON in the filter's format (see `avb-policy schema`).\n\
        Exit codes: 0 ok, 1 invalid policy / failed test / changes found, 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policies; print rules, roles, webhooks and the revision the filter reports.
    Check(CheckArgs),
    /// Show what the filter would do with one request.
    Explain(ExplainArgs),
    /// Run table-driven policy tests (a YAML or JSON file with a `cases` list).
    Test(TestArgs),
    /// Show which (method, path, role) decisions change between two policies.
    Diff(DiffArgs),
    /// Render a ready Envoy filter block or Istio manifests embedding the policy.
    Render(RenderArgs),
    /// Mint a development token with one of the policy's `oct` keys.
    Token(TokenArgs),
    /// Print the JSON Schema (draft 2020-12) of the policy format.
    Schema,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Policy files (YAML or JSON).
    #[arg(required = true, value_name = "POLICY")]
    policies: Vec<PathBuf>,
    /// KEY=VALUE file resolving `*_env` secrets (missing ones are checked with placeholders).
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

/// Who sends the request being explained or tested.
#[derive(Debug, Args)]
#[group(required = true, multiple = true, id = "caller")]
struct CallerArgs {
    /// Roles carried by the caller's token, comma-separated (`--roles ''` for none).
    #[arg(long, value_delimiter = ',', group = "caller", value_name = "A,B")]
    roles: Option<Vec<String>>,
    /// Send the request without any token.
    #[arg(long, group = "caller", conflicts_with_all = ["roles", "tenant", "subject"])]
    anonymous: bool,
    /// Tenant claim of the caller's token.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Subject claim of the caller's token.
    #[arg(long, value_name = "S")]
    subject: Option<String>,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// Request method as sent, e.g. GET.
    #[arg(long, value_name = "M")]
    method: String,
    /// Request path as sent (may carry a query string).
    #[arg(long, value_name = "P")]
    path: String,
    #[command(flatten)]
    caller: CallerArgs,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// Cases files (YAML or JSON, top-level `cases` list).
    #[arg(required = true, value_name = "CASES")]
    cases: Vec<PathBuf>,
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DiffArgs {
    #[arg(value_name = "OLD")]
    old: PathBuf,
    #[arg(value_name = "NEW")]
    new: PathBuf,
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

/// What `render` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RenderTarget {
    /// An Envoy `envoy.filters.http.wasm` HTTP filter block (YAML).
    Envoy,
    /// Istio manifests: a WasmPlugin, or an EnvoyFilter when webhooks need body buffering.
    Istio,
    /// The policy itself as JSON (the filter's configuration string).
    #[value(hide = true)]
    Json,
}

#[derive(Debug, Args)]
struct RenderArgs {
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    #[arg(long = "for", value_enum, value_name = "TARGET")]
    target: RenderTarget,
    /// Where the .wasm comes from (Envoy: a local file; Istio: oci://, https:// or file://).
    #[arg(long, value_name = "URL")]
    wasm_url: Option<String>,
    /// Inline these values for the policy's `*_env` variables (local stacks only) instead of
    /// taking them from the proxy's environment.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    #[arg(long, value_name = "POLICY")]
    policy: PathBuf,
    /// Key id of an `oct` key in the policy's JWKS.
    #[arg(long, value_name = "KID")]
    kid: String,
    /// Subject claim.
    #[arg(long, value_name = "S")]
    sub: String,
    /// Roles, comma-separated (`--roles ''` for none).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    roles: Vec<String>,
    /// Tenant claim (needs `identity.tenant_claim`).
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    ttl: String,
    /// KEY=VALUE file holding the key's `k_env` variable (e.g. envoy/dev.env).
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

/// Parses the process arguments, runs the command and maps the result to an exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help/version to stdout with success, usage errors to stderr.
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli.command) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failures) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn dispatch(command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Check(args) => check::run(&args.policies, args.env_file.as_deref()),
        Command::Explain(args) => explain::run(&args),
        Command::Test(args) => cases::run(&args.policy, &args.cases, args.env_file.as_deref()),
        Command::Diff(args) => diff::run(&args.old, &args.new, args.env_file.as_deref()),
        Command::Render(args) => render::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Schema => {
            print!("{}", policy_schema());
            Ok(Outcome::Success)
        }
    }
}
