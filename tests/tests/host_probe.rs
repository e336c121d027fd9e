//! Self-tests of the wasmtime proxy-wasm host, driving the probe filter
//! (`tests/probe-filter`, built by `make probe`). The probe picks its
//! behaviour from the `x-probe` request header and reports through headers
//! it adds (`x-result`), local replies, logs and metrics.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::panic)]

use avb_tests::host::{probe_wasm_path, Action, Host, HostBuilder, HttpRequest, LogLevel};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn probe() -> PathBuf {
    let path = probe_wasm_path();
    assert!(
        path.exists(),
        "the probe filter is missing at {}: run `make probe` (or scripts/build-wasm.sh \
         tests/probe-filter/Cargo.toml avb-probe-filter target/probe/avb_probe_filter.wasm), \
         or point AVB_PROBE_WASM at it",
        path.display()
    );
    path
}

fn builder() -> HostBuilder {
    HostBuilder::new(probe())
        .cluster("companion")
        .env("PROBE_GREETING", "hello")
        .vm_configuration("vm-config-1")
}

fn host() -> Host {
    builder().workers(2).build().unwrap()
}

const GET: [(&str, &str); 3] = [
    (":method", "GET"),
    (":path", "/v1/items?q=1"),
    (":authority", "api"),
];

fn with_probe<'a>(mode: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = GET.to_vec();
    headers.push(("x-probe", mode));
    headers.extend_from_slice(extra);
    headers
}

fn run(host: &Host, worker: usize, mode: &str, extra: &[(&str, &str)]) -> (HttpRequest, Action) {
    let request = host.request(worker);
    let action = request.headers(&with_probe(mode, extra), true).unwrap();
    (request, action)
}

fn result(request: &HttpRequest) -> String {
    let headers = request.upstream_headers();
    let found = headers.iter().find(|(name, _)| name == "x-result");
    found
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("no x-result in {headers:?}"))
}

fn logged(host: &Host, needle: &str) -> bool {
    host.logs().iter().any(|(_, line)| line.contains(needle))
}

#[test]
fn startup_hands_vm_configuration_plugin_configuration_and_env_to_the_filter() {
    let host = builder().configuration("mode=test").build().unwrap();
    assert!(
        logged(&host, "vm_start vm_config=vm-config-1"),
        "{:?}",
        host.logs()
    );
    assert!(
        logged(&host, "configured config=mode=test queue=1 greeting=hello"),
        "{:?}",
        host.logs()
    );
    let (request, _) = run(&host, 0, "env", &[]);
    assert_eq!(result(&request), "hello");
}

#[test]
fn missing_env_var_is_unset_in_the_guest() {
    let host = HostBuilder::new(probe()).build().unwrap();
    let (request, _) = run(&host, 0, "env", &[]);
    assert_eq!(result(&request), "<unset>");
}

#[test]
fn rejected_configuration_fails_build_with_the_filters_log_line() {
    let error = builder()
        .configuration("please reject")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("proxy_on_configure rejected"), "{error}");
    assert!(
        error.contains("configuration rejected: please reject"),
        "{error}"
    );
}

#[test]
fn vm_start_returning_false_fails_build() {
    let error = builder()
        .vm_configuration("fail-vm-start")
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("proxy_on_vm_start returned false"),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_there_fails_build() {
    let error = HostBuilder::new("/nonexistent/x.wasm")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("/nonexistent/x.wasm"), "{error}");
}

#[test]
fn zero_workers_is_refused() {
    assert!(builder().workers(0).build().is_err());
}

#[test]
fn local_reply_answers_the_client_and_nothing_goes_upstream() {
    let host = host();
    let (request, action) = run(&host, 0, "local", &[]);
    assert_eq!(action, Action::Pause);
    let reply = request.local_reply().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied by probe");
    assert!(reply
        .headers
        .contains(&("x-denied-by".to_owned(), "probe".to_owned())));
    assert!(!request.forwarded());
    assert!(request.upstream_headers().is_empty());
    request.done().unwrap();
}

#[test]
fn on_log_sees_the_local_reply_as_the_response() {
    let host = host();
    let (request, _) = run(&host, 0, "local", &[]);
    request.done().unwrap();
    let expected = format!(
        "on_log context={} status=Ok(Some(\"403\")) response_pairs=Ok(2)",
        request.context_id()
    );
    assert!(logged(&host, &expected), "{:?}", host.logs());
}

#[test]
fn on_log_without_a_response_finds_no_response_headers_instead_of_failing() {
    let host = host();
    let (request, _) = run(&host, 0, "plain", &[]);
    request.done().unwrap();
    let expected = format!(
        "on_log context={} status=Ok(None) response_pairs=Ok(0)",
        request.context_id()
    );
    assert!(logged(&host, &expected), "{:?}", host.logs());
    assert_eq!(host.vm_failure(0), None);
}

#[test]
fn body_after_a_local_reply_is_not_fed_to_the_filter() {
    let host = host();
    let request = host.request(0);
    request.headers(&with_probe("local", &[]), false).unwrap();
    assert_eq!(request.body(b"ignored", true).unwrap(), Action::Pause);
    assert!(request.upstream_body().is_empty());
}

#[test]
fn header_reads_see_only_the_first_duplicate_and_replace_removes_all() {
    let host = host();
    let extra = [
        ("X-Dupe", "1"),
        ("x-dupe", "2"),
        ("x-replace", "a"),
        ("x-replace", "b"),
        ("x-remove", "gone"),
    ];
    let (request, action) = run(&host, 0, "headers", &extra);
    assert_eq!(action, Action::Continue);
    let upstream = request.upstream_headers();
    let all: Vec<(&str, &str)> = upstream
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(
        result(&request).starts_with("dupes=2 first=1 count=9 "),
        "{}",
        result(&request)
    );
    assert_eq!(all.iter().filter(|(k, _)| *k == "x-replace").count(), 1);
    assert!(all.contains(&("x-replace", "replaced")));
    assert!(!all.iter().any(|(k, _)| *k == "x-remove"));
    assert_eq!(all[0].0, ":method", "pseudo-headers stay first: {all:?}");
}

#[test]
fn header_pairs_carry_every_name_and_value_byte() {
    let host = host();
    let (request, _) = run(&host, 0, "headers", &[]);
    let expected: usize = with_probe("headers", &[])
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(
        result(&request).ends_with(&format!("size={expected}")),
        "{}",
        result(&request)
    );
}

#[test]
fn set_header_map_pairs_replaces_the_whole_map() {
    let host = host();
    let (request, _) = run(&host, 0, "set-map", &[("x-old", "1")]);
    let upstream = request.upstream_headers();
    assert_eq!(
        upstream,
        vec![
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), "/rewritten".to_owned()),
            ("x-only".to_owned(), "1".to_owned()),
        ]
    );
}

#[test]
fn properties_come_from_the_request_then_the_host_then_the_headers() {
    let host = builder()
        .property(&["node", "id"], "node-7")
        .build()
        .unwrap();
    let request = host.request(0);
    request.set_property(&["source", "address"], "10.0.0.1:5000");
    request
        .headers(
            &with_probe("property", &[("x-property", "source.address")]),
            true,
        )
        .unwrap();
    assert_eq!(result(&request), format!("found:{}", hex(b"10.0.0.1:5000")));

    let (node, _) = run(&host, 0, "property", &[("x-property", "node.id")]);
    assert_eq!(result(&node), format!("found:{}", hex(b"node-7")));
    let (url_path, _) = run(&host, 0, "property", &[("x-property", "request.url_path")]);
    assert_eq!(result(&url_path), format!("found:{}", hex(b"/v1/items")));
    let (missing, _) = run(&host, 0, "property", &[("x-property", "source.address")]);
    assert_eq!(
        result(&missing),
        "missing",
        "a property set on one request leaks into another"
    );
}

#[test]
fn a_property_the_filter_sets_reads_back_in_the_same_request() {
    let host = host();
    let (request, _) = run(&host, 0, "set-property", &[]);
    assert_eq!(result(&request), "marked");
}

#[test]
fn shared_data_is_shared_across_workers_with_compare_and_swap() {
    let host = host();
    let (set, _) = run(&host, 0, "shared-set", &[("x-key", "k"), ("x-value", "v1")]);
    assert_eq!(result(&set), "ok");
    let (value, cas) = host.shared_data("k").unwrap();
    assert_eq!(value, b"v1");
    assert_ne!(cas, 0);

    let (get, _) = run(&host, 1, "shared-get", &[("x-key", "k")]);
    assert_eq!(result(&get), format!("v1@{cas}"));

    let stale = (cas + 1000).to_string();
    let (mismatch, _) = run(
        &host,
        1,
        "shared-set",
        &[("x-key", "k"), ("x-value", "v2"), ("x-cas", &stale)],
    );
    assert_eq!(result(&mismatch), "CasMismatch");
    assert_eq!(host.shared_data("k").unwrap().0, b"v1");

    let current = cas.to_string();
    let (swap, _) = run(
        &host,
        1,
        "shared-set",
        &[("x-key", "k"), ("x-value", "v2"), ("x-cas", &current)],
    );
    assert_eq!(result(&swap), "ok");
    let (value, new_cas) = host.shared_data("k").unwrap();
    assert_eq!(value, b"v2");
    assert_ne!(new_cas, cas);

    let (missing, _) = run(&host, 0, "shared-get", &[("x-key", "nope")]);
    assert_eq!(result(&missing), "missing");
}

#[test]
fn enqueue_wakes_the_root_context_that_registered_the_queue_last() {
    let host = host();
    assert_eq!(host.queue_len("probe_queue"), Some(0));
    let (request, _) = run(&host, 0, "enqueue", &[("x-value", "audit-1")]);
    assert_eq!(result(&request), "enqueued");
    // Both workers registered the queue; the last registration (worker 1) wins.
    let lines = host.log_lines();
    let woken = lines
        .iter()
        .find(|line| line.message == "dequeued audit-1")
        .unwrap();
    assert_eq!(woken.worker, 1);
    assert_eq!(host.queue_len("probe_queue"), Some(0));
    assert_eq!(host.metric("probe_dequeued"), Some(1));
    assert_eq!(host.queue_len("no_such_queue"), None);
}

#[test]
fn dequeue_of_an_unknown_queue_is_not_found() {
    let host = host();
    let (request, _) = run(&host, 0, "dequeue-unknown", &[]);
    assert_eq!(result(&request), "NotFound");
}

#[test]
fn http_call_pauses_until_answered_then_the_filter_resumes_the_request() {
    let host = host();
    let (request, action) = run(&host, 1, "call", &[("x-upstream", "companion")]);
    assert_eq!(action, Action::Pause);
    assert!(!request.forwarded());
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.worker, call.context), (1, request.context_id()));
    assert_eq!(call.upstream, "companion");
    assert_eq!(call.body, b"ping");
    assert_eq!(call.timeout_ms, 1500);
    assert!(call
        .headers
        .contains(&(":path".to_owned(), "/check".to_owned())));

    host.respond_http_call(call.token, 200, &[("x-a", "b")], b"allowed")
        .unwrap();
    assert!(request.continued());
    assert!(request.forwarded());
    assert_eq!(
        result(&request),
        format!(
            "call status=200 body=allowed context={}",
            request.context_id()
        )
    );
    assert!(host.http_calls().is_empty());
    assert!(
        host.respond_http_call(call.token, 200, &[], b"").is_err(),
        "answered twice"
    );
}

#[test]
fn http_call_to_an_unknown_cluster_or_without_authority_is_a_bad_argument() {
    let host = host();
    let (unknown, action) = run(&host, 0, "call", &[("x-upstream", "elsewhere")]);
    assert_eq!(action, Action::Continue);
    assert_eq!(result(&unknown), "dispatch-BadArgument");
    let (no_authority, _) = run(
        &host,
        0,
        "call",
        &[("x-upstream", "companion"), ("x-no-authority", "1")],
    );
    assert_eq!(result(&no_authority), "dispatch-BadArgument");
    assert!(host.http_calls().is_empty());
}

#[test]
fn a_failed_http_call_arrives_with_no_headers() {
    let host = host();
    let (request, _) = run(&host, 0, "call", &[("x-upstream", "companion")]);
    let token = host.http_calls()[0].token;
    host.fail_http_call(token).unwrap();
    assert_eq!(request.local_reply().unwrap().status, 503);
    assert!(!request.forwarded());
    assert!(logged(&host, &format!("call {token} failed")));
}

#[test]
fn done_cancels_the_requests_pending_http_calls() {
    let host = host();
    let (request, _) = run(&host, 0, "call", &[("x-upstream", "companion")]);
    let token = host.http_calls()[0].token;
    request.done().unwrap();
    assert!(host.http_calls().is_empty());
    let error = host
        .respond_http_call(token, 200, &[], b"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("cancelled"), "{error}");
}

#[test]
fn on_done_returning_false_does_not_keep_an_http_context_alive() {
    let host = host();
    let (request, _) = run(&host, 0, "done-later", &[]);
    request.done().unwrap();
    assert_eq!(request.on_done_result(), Some(false));
    assert!(logged(&host, "done deferred"));
    assert!(
        host.http_calls().is_empty(),
        "the flush call died with the context, as in Envoy"
    );
    assert!(request.headers(&GET, true).is_err());
    assert!(request.done().is_err(), "done twice");
}

#[test]
fn metrics_follow_envoys_rules_and_are_shared_by_workers() {
    let host = host();
    let (request, _) = run(&host, 0, "metric", &[]);
    assert_eq!(
        result(&request),
        "requests=1 zero=Err(BadArgument) histogram_read=Err(BadArgument) unknown=Err(NotFound)"
    );
    request.done().unwrap();
    run(&host, 1, "metric", &[]).0.done().unwrap();
    assert_eq!(host.metric("probe_requests"), Some(2));
    assert_eq!(host.metric("probe_inflight"), Some(6));
    assert_eq!(host.metric("probe_logged"), Some(2));
    assert_eq!(host.histogram("probe_sizes"), Some(vec![42, 42]));
    assert_eq!(
        host.metric("probe_sizes"),
        None,
        "histograms are not in metrics()"
    );
    assert_eq!(host.metric("no_such_metric"), None);
    run(&host, 0, "gauge-set", &[]);
    assert_eq!(host.metrics().get("probe_inflight"), Some(&77));
}

#[test]
fn ticks_run_on_the_period_the_filter_set_and_see_the_host_clock() {
    let host = builder().configuration("tick_ms=250").build().unwrap();
    assert_eq!(host.tick_period(0), Some(Duration::from_millis(250)));
    host.set_time(UNIX_EPOCH + Duration::from_secs(1_000));
    host.advance(Duration::from_millis(250));
    host.tick(0).unwrap();
    assert!(logged(&host, "tick at 1000250000000"), "{:?}", host.logs());
    assert_eq!(host.metric("probe_ticks"), Some(1));
}

#[test]
fn tick_without_a_period_is_an_error() {
    let host = host();
    assert_eq!(host.tick_period(0), None);
    assert!(host.tick(0).is_err());
    assert!(host.tick(9).is_err());
}

#[test]
fn guest_clocks_read_the_host_clock() {
    let host = builder()
        .start_time(UNIX_EPOCH + Duration::from_secs(1234))
        .build()
        .unwrap();
    let (request, _) = run(&host, 0, "time", &[]);
    assert_eq!(result(&request), "1234000000000 1234000000000");
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2000);
    host.set_time(later);
    assert_eq!(host.now(), later);
}

#[test]
fn logs_capture_levels_and_stdio_and_respect_the_log_level() {
    let host = builder().log_level(LogLevel::Warn).build().unwrap();
    let (request, _) = run(&host, 0, "log", &[]);
    assert_eq!(result(&request), "Ok(Warn)");
    let logs = host.logs();
    assert!(logs.contains(&(LogLevel::Warn, "level Warn".to_owned())));
    assert!(logs.contains(&(LogLevel::Critical, "level Critical".to_owned())));
    assert!(
        !logs.iter().any(|(_, line)| line == "level Info"),
        "{logs:?}"
    );
    assert!(logs.contains(&(LogLevel::Info, "stdout: probe stdout line".to_owned())));
    assert!(logs.contains(&(LogLevel::Error, "stderr: probe stderr line".to_owned())));
}

#[test]
fn std_randomness_works_through_random_get() {
    let host = host();
    let (request, _) = run(&host, 0, "random", &[]);
    assert_eq!(result(&request), "ok 1");
}

#[test]
fn foreign_functions_are_not_found_and_unknown_contexts_are_bad_arguments() {
    let host = host();
    let (foreign, _) = run(&host, 0, "foreign", &[]);
    assert_eq!(result(&foreign), "Err(NotFound)");
    let (effective, _) = run(&host, 0, "effective", &[]);
    assert_eq!(result(&effective), "Err(BadArgument)");
}

#[test]
fn a_guest_panic_fails_with_its_message_and_kills_only_that_workers_vm() {
    let host = host();
    let request = host.request(0);
    let error = request
        .headers(&with_probe("panic", &[]), true)
        .unwrap_err()
        .to_string();
    assert!(error.contains("wasm trap on worker 0"), "{error}");
    assert!(error.contains("probe panic requested"), "{error}");
    assert!(host.vm_failure(0).is_some());
    let next = host
        .request(0)
        .headers(&with_probe("env", &[]), true)
        .unwrap_err()
        .to_string();
    assert!(next.contains("dead"), "{next}");
    assert!(host.vm_failure(1).is_none());
    let (alive, _) = run(&host, 1, "env", &[]);
    assert_eq!(result(&alive), "hello");
}

#[test]
fn paused_body_accumulates_and_the_filter_edits_the_whole_buffer() {
    let host = host();
    let request = host.request(0);
    assert_eq!(
        request.headers(&with_probe("body", &[]), false).unwrap(),
        Action::Continue
    );
    assert_eq!(request.body(b"hello ", false).unwrap(), Action::Pause);
    assert!(request.upstream_body().is_empty());
    assert_eq!(request.body(b"world", true).unwrap(), Action::Continue);
    assert_eq!(request.upstream_body(), b"HELLO WORLD");
    assert_eq!(host.histogram("probe_sizes"), Some(vec![11]));
    assert!(
        request.body(b"more", true).is_err(),
        "body after end of stream"
    );
}

#[test]
fn a_denied_body_gets_a_local_reply_and_never_reaches_upstream() {
    let host = host();
    let request = host.request(0);
    request.headers(&with_probe("body", &[]), false).unwrap();
    request.body(b"please de", false).unwrap();
    assert_eq!(request.body(b"ny this", true).unwrap(), Action::Pause);
    assert_eq!(request.local_reply().unwrap().status, 413);
    assert!(request.upstream_body().is_empty());
}

#[test]
fn headers_held_by_the_filter_go_upstream_only_with_the_body() {
    let host = host();
    let request = host.request(0);
    assert_eq!(
        request.headers(&with_probe("hold", &[]), false).unwrap(),
        Action::Pause
    );
    assert_eq!(request.body(b"abc", false).unwrap(), Action::Pause);
    assert!(
        !request.forwarded(),
        "headers leaked before the body was checked"
    );
    assert_eq!(request.request_headers()[0].0, ":method");
    assert_eq!(request.body(b"def", true).unwrap(), Action::Continue);
    assert!(request.forwarded());
    assert_eq!(request.upstream_body(), b"ABCDEF");
}

#[test]
fn set_buffer_at_the_end_appends() {
    let host = host();
    let request = host.request(0);
    request
        .headers(&with_probe("append-body", &[]), false)
        .unwrap();
    request.body(b"abc", true).unwrap();
    assert_eq!(request.upstream_body(), b"abc+tail");
}

#[test]
fn trailers_pass_through_the_filter() {
    let host = host();
    let request = host.request(0);
    request.headers(&with_probe("", &[]), false).unwrap();
    request.body(b"x", false).unwrap();
    assert_eq!(
        request.trailers(&[("grpc-status", "0")]).unwrap(),
        Action::Continue
    );
    let trailers = request.upstream_trailers().unwrap();
    assert!(
        trailers.contains(&("x-probe-trailers".to_owned(), "1".to_owned())),
        "{trailers:?}"
    );
}

#[test]
fn response_headers_go_through_the_filter_to_the_client() {
    let host = host();
    let (request, _) = run(&host, 0, "plain", &[]);
    assert_eq!(
        request
            .response_headers(&[(":status", "200")], false)
            .unwrap(),
        Action::Continue
    );
    request.response_body(b"payload", true).unwrap();
    assert!(request
        .downstream_headers()
        .contains(&("x-probe-response".to_owned(), "plain".to_owned())));
    assert_eq!(request.downstream_body(), b"payload");
}

#[test]
fn a_reset_stream_is_recorded_and_no_longer_fed() {
    let host = host();
    let request = host.request(0);
    request.headers(&with_probe("reset", &[]), false).unwrap();
    assert!(request.was_reset());
    assert_eq!(request.body(b"x", true).unwrap(), Action::Pause);
    assert!(!request.forwarded());
}

#[test]
fn body_or_response_before_request_headers_is_an_error() {
    let host = host();
    let request = host.request(0);
    assert!(request.body(b"x", true).is_err());
    assert!(request
        .response_headers(&[(":status", "200")], true)
        .is_err());
    assert!(
        host.request(7).headers(&GET, true).is_err(),
        "no such worker"
    );
}

#[test]
fn reconfigure_starts_a_new_root_and_a_rejected_config_keeps_the_old_one() {
    let host = builder().configuration("tick_ms=500").build().unwrap();
    let error = host.reconfigure("reject me").unwrap_err().to_string();
    assert!(
        error.contains("configuration rejected: reject me"),
        "{error}"
    );
    assert_eq!(host.tick_period(0), Some(Duration::from_millis(500)));

    host.reconfigure("tick_ms=100").unwrap();
    assert_eq!(host.tick_period(0), Some(Duration::from_millis(100)));
    assert!(logged(&host, "configured config=tick_ms=100"));
    let (request, _) = run(&host, 0, "env", &[]);
    assert_eq!(result(&request), "hello");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hosts_and_requests_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Host>();
    assert_send_sync::<HttpRequest>();
    let host = host();
    let worker = std::thread::spawn(move || run(&host, 1, "env", &[]).0);
    assert_eq!(result(&worker.join().unwrap()), "hello");
}
