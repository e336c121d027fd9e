//! `avb-companion cache invalidate`: the SRE's command for clearing one
//! tenant's cache, with a progress bar on a terminal and a JSON mode for
//! scripts.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::cache::cache_invalidated_event;
use crate::api::guard::Caller;
use crate::audit::{open_store, validate, AuditStore, StoreError};

use super::{
    invalidate, validate_tenant_id, CacheError, InvalidateOptions, InvalidateReport, Progress,
    RedisTarget, MAX_SCAN_COUNT,
};

/// Exit code for a bad tenant id or option (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code for a failure talking to Redis or recording the audit event.
const EXIT_FAILURE: u8 = 1;

/// Arguments of `cache invalidate`.
#[derive(Debug, Clone, clap::Args)]
pub struct InvalidateArgs {
    /// Tenant whose keys (`tenant:{ID}:*`) are deleted: letters, digits, `-`, `_`, `.`.
    #[arg(long, value_name = "ID")]
    pub tenant: String,

    /// Redis URL (`redis://[user:password@]host[:port][/db]`); a cluster is detected.
    #[arg(
        long,
        value_name = "URL",
        env = "AVB_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,

    /// Count the tenant's keys without deleting any.
    #[arg(long)]
    pub dry_run: bool,

    /// COUNT hint of each SCAN call.
    #[arg(
        long,
        value_name = "N",
        default_value_t = InvalidateOptions::default().scan_count,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SCAN_COUNT))
    )]
    pub scan_count: u32,

    /// Print one JSON object instead of the progress bar and summary line.
    #[arg(long)]
    pub json: bool,

    /// Audit store URL (`sqlite://PATH` or `postgres://…`) for the
    /// `cache.invalidated` record.
    #[arg(
        long,
        value_name = "URL",
        env = "AVB_DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
}

/// Runs the command; exit code 0 on success, 2 on a bad tenant id or option,
/// 1 on any Redis or audit failure.
///
/// The audit store is opened before Redis is touched, so a misconfigured
/// store stops the run while nothing is deleted yet; the `cache.invalidated`
/// record is then written for the finished or interrupted run.
pub async fn run(args: InvalidateArgs) -> ExitCode {
    let tenant = match validate_tenant_id(&args.tenant) {
        Ok(tenant) => tenant,
        Err(err) => return fail(&args, &err, None),
    };
    let store = match &args.database {
        Some(database_url) => match open_store(database_url).await {
            Ok(store) => Some(store),
            Err(err) => {
                return fail_with(
                    &args,
                    &format!("cannot open the audit store: {err}; nothing was deleted"),
                    Some(tenant.as_str()),
                    EXIT_FAILURE,
                )
            }
        },
        None => {
            eprintln!(
                "warning: no audit store configured (--database or AVB_DATABASE_URL); \
                 this invalidation will not be recorded"
            );
            None
        }
    };
    let target = match RedisTarget::connect(&args.redis).await {
        Ok(target) => target,
        Err(err) => return fail(&args, &err, Some(tenant.as_str())),
    };
    let options = InvalidateOptions {
        dry_run: args.dry_run,
        scan_count: args.scan_count,
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(ProgressBar::default);
    let on_progress = |progress: Progress| {
        if let Some(bar) = &bar {
            bar.draw(progress);
        }
    };
    let outcome = invalidate(&target, &tenant, &options, &on_progress).await;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let recorded = match &store {
        Some(store) => {
            record(
                store.as_ref(),
                tenant.as_str(),
                outcome.as_ref(),
                args.dry_run,
            )
            .await
        }
        None => Ok(()),
    };
    match (outcome, recorded) {
        (Ok(report), Ok(())) => {
            print_report(&args, &report);
            ExitCode::SUCCESS
        }
        (Ok(report), Err(err)) => {
            print_report(&args, &report);
            eprintln!(
                "error: the cache was cleared but its audit record could not be written: {err}"
            );
            ExitCode::from(EXIT_FAILURE)
        }
        (Err(err), recorded) => {
            if let Err(record_err) = recorded {
                eprintln!("error: the audit record could not be written either: {record_err}");
            }
            fail(&args, &err, Some(tenant.as_str()))
        }
    }
}

/// Writes the `cache.invalidated` record, in the same shape as the API's, with
/// the operating-system user as the subject.
async fn record(
    store: &dyn AuditStore,
    tenant: &str,
    outcome: Result<&InvalidateReport, &CacheError>,
    dry_run: bool,
) -> Result<(), StoreError> {
    let caller = Caller {
        subject: Some(operator_name()),
        ..Caller::default()
    };
    let mut event = cache_invalidated_event(tenant, outcome, dry_run, &caller);
    event.details.insert("via".to_owned(), json!("cli"));
    store.ingest(vec![validate(event)?]).await?;
    Ok(())
}

/// Who ran the command: `$USER`, else "cli".
fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn print_report(args: &InvalidateArgs, report: &InvalidateReport) {
    if args.json {
        println!("{}", json!(report));
    } else {
        println!("{}", summary_line(report));
    }
}

/// The one-line summary an operator reads.
fn summary_line(report: &InvalidateReport) -> String {
    if report.dry_run {
        format!(
            "dry run, tenant {}: {} keys would be deleted (about {} keys scanned) in {} ms; nothing was deleted",
            report.tenant, report.matched, report.scanned, report.duration_ms
        )
    } else {
        format!(
            "tenant {}: deleted {} keys ({} matched, about {} keys scanned) in {} ms",
            report.tenant, report.deleted, report.matched, report.scanned, report.duration_ms
        )
    }
}

/// Prints `err` and picks the exit code: 2 for usage errors, else 1.
fn fail(args: &InvalidateArgs, err: &CacheError, tenant: Option<&str>) -> ExitCode {
    let counts = match err {
        CacheError::Interrupted {
            scanned,
            matched,
            deleted,
            ..
        }
        | CacheError::TopologyChanged {
            scanned,
            matched,
            deleted,
            ..
        } => Some((*scanned, *matched, *deleted)),
        _ => None,
    };
    let code = if err.is_usage_error() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    };
    report_failure(args, &err.to_string(), tenant, counts, code)
}

fn fail_with(args: &InvalidateArgs, message: &str, tenant: Option<&str>, code: u8) -> ExitCode {
    report_failure(args, message, tenant, None, code)
}

/// The message on stderr; with `--json` also one JSON object on stdout that
/// carries the counts reached so far, if any.
fn report_failure(
    args: &InvalidateArgs,
    message: &str,
    tenant: Option<&str>,
    counts: Option<(u64, u64, u64)>,
    code: u8,
) -> ExitCode {
    eprintln!("error: {message}");
    if args.json {
        let mut object = json!({
            "error": message,
            "tenant": tenant,
            "dry_run": args.dry_run,
        });
        if let (Some((scanned, matched, deleted)), Some(fields)) = (counts, object.as_object_mut())
        {
            fields.insert("scanned".to_owned(), json!(scanned));
            fields.insert("matched".to_owned(), json!(matched));
            fields.insert("deleted".to_owned(), json!(deleted));
        }
        println!("{object}");
    }
    ExitCode::from(code)
}

/// A one-line progress bar on stderr: keys visited against the database size.
/// Redrawn at most ten times a second so a fast run is not slowed by the tty.
#[derive(Default)]
struct ProgressBar {
    last_draw: Mutex<Option<Instant>>,
}

impl ProgressBar {
    const WIDTH: usize = 30;
    const INTERVAL: Duration = Duration::from_millis(100);

    fn draw(&self, progress: Progress) {
        let Ok(mut last_draw) = self.last_draw.lock() else {
            return;
        };
        if last_draw.is_some_and(|at| at.elapsed() < Self::INTERVAL) {
            return;
        }
        *last_draw = Some(Instant::now());
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{}\x1b[K", progress_line(progress));
        let _ = stderr.flush();
    }

    fn finish(&self) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K");
        let _ = stderr.flush();
    }
}

fn progress_line(progress: Progress) -> String {
    let fraction = if progress.db_size == 0 {
        1.0
    } else {
        (progress.scanned as f64 / progress.db_size as f64).min(1.0)
    };
    // Truncation is intended: a bar position.
    let filled = (fraction * ProgressBar::WIDTH as f64) as usize;
    format!(
        "[{}{}] {:>3}% {}/{} keys scanned, {} matched, {} deleted",
        "#".repeat(filled),
        "-".repeat(ProgressBar::WIDTH - filled),
        (fraction * 100.0) as u32,
        progress.scanned,
        progress.db_size,
        progress.matched,
        progress.deleted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Harness {
        #[command(flatten)]
        args: InvalidateArgs,
    }

    #[test]
    fn defaults_scan_a_thousand_against_local_redis() {
        let harness = Harness::try_parse_from(["x", "--tenant", "acme"]).unwrap();
        assert_eq!(harness.args.scan_count, 1000);
        assert!(!harness.args.dry_run && !harness.args.json);
        if std::env::var_os("AVB_REDIS_URL").is_none() {
            assert_eq!(harness.args.redis, "redis://127.0.0.1:6379");
        }
    }

    #[test]
    fn scan_count_outside_its_range_is_a_usage_error() {
        for bad in ["0", "100001", "-1", "many"] {
            let err =
                Harness::try_parse_from(["x", "--tenant", "a", "--scan-count", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn missing_tenant_is_a_usage_error() {
        let err = Harness::try_parse_from(["x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn summary_line_says_what_happened() {
        let mut report = InvalidateReport {
            tenant: "acme".to_owned(),
            matched: 3,
            deleted: 3,
            scanned: 10,
            duration_ms: 7,
            dry_run: false,
        };
        assert_eq!(
            summary_line(&report),
            "tenant acme: deleted 3 keys (3 matched, about 10 keys scanned) in 7 ms"
        );
        report.dry_run = true;
        report.deleted = 0;
        assert!(summary_line(&report).contains("3 keys would be deleted"));
        assert!(summary_line(&report).contains("nothing was deleted"));
    }

    #[test]
    fn progress_line_shows_keys_visited_against_db_size() {
        let line = progress_line(Progress {
            scanned: 50,
            matched: 5,
            deleted: 4,
            db_size: 100,
        });
        assert!(line.starts_with(&format!("[{}{}]  50%", "#".repeat(15), "-".repeat(15))));
        assert!(line.contains("50/100 keys scanned, 5 matched, 4 deleted"));
        assert!(progress_line(Progress::default()).contains("100%"));
    }

    #[tokio::test]
    async fn invalid_tenant_exits_2_before_connecting() {
        // Port 1 on loopback has no Redis; reaching it would give exit code 1.
        let harness =
            Harness::try_parse_from(["x", "--tenant", "acme*", "--redis", "redis://127.0.0.1:1"])
                .unwrap();
        assert_eq!(run(harness.args).await, ExitCode::from(2));
    }

    #[tokio::test]
    async fn unreachable_redis_exits_1() {
        let harness =
            Harness::try_parse_from(["x", "--tenant", "acme", "--redis", "redis://127.0.0.1:1"])
                .unwrap();
        assert_eq!(run(harness.args).await, ExitCode::from(1));
    }
}
