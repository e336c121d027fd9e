//! Every Envoy configuration shipped under `envoy/` passes
//! `envoy --mode validate` (which loads the real `dist/avb_edge.wasm` and
//! runs its `on_configure`), and the policy embedded in `envoy/envoy.yaml`
//! is the YAML policy file, parsed.

use std::path::{Path, PathBuf};

use avb_tests::procs::envoy::{dev_env, policy_yaml_as_json, Envoy};
use avb_tests::procs::{wasm_path, workspace_root};
use serde_json::Value;

/// YAML files under `envoy/` that are Envoy bootstrap configs (policies and
/// Kubernetes manifests such as Istio resources are other kinds of file).
fn envoy_bootstrap_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "policies") {
                    walk(&path, found);
                }
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                let text = std::fs::read_to_string(&path).expect("readable config");
                let Ok(value) = serde_yaml::from_str::<Value>(&text) else {
                    panic!("{} is not valid YAML", path.display());
                };
                let is_bootstrap = ["static_resources", "dynamic_resources", "admin"]
                    .iter()
                    .any(|key| value.get(key).is_some());
                if is_bootstrap {
                    found.push(path);
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&workspace_root().join("envoy"), &mut found);
    found
}

fn wasm_filter_config(envoy_yaml: &Value) -> &Value {
    let listeners = envoy_yaml["static_resources"]["listeners"]
        .as_array()
        .expect("static listeners");
    listeners
        .iter()
        .flat_map(|listener| listener["filter_chains"].as_array().into_iter().flatten())
        .flat_map(|chain| chain["filters"].as_array().into_iter().flatten())
        .flat_map(|filter| {
            filter["typed_config"]["http_filters"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .find(|filter| filter["name"] == "envoy.filters.http.wasm")
        .map(|filter| &filter["typed_config"]["config"])
        .expect("envoy/envoy.yaml has the Wasm filter")
}

fn shipped_envoy_yaml() -> Value {
    let path = workspace_root().join("envoy/envoy.yaml");
    let text = std::fs::read_to_string(&path).expect("envoy/envoy.yaml exists");
    serde_yaml::from_str(&text).expect("envoy/envoy.yaml is YAML")
}

#[test]
fn every_shipped_envoy_config_passes_envoy_validate() {
    // validate loads the module named in the config (dist/avb_edge.wasm).
    wasm_path().expect("the filter must be built first");
    let configs = envoy_bootstrap_configs();
    assert!(
        configs
            .iter()
            .any(|path| path.ends_with("envoy/envoy.yaml")),
        "envoy/envoy.yaml not found among {configs:?}"
    );
    let failures: Vec<String> = configs
        .iter()
        .filter_map(|path| Envoy::validate(path).err().map(|err| format!("{err:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn policy_embedded_in_envoy_yaml_equals_the_yaml_policy_file() {
    let config = shipped_envoy_yaml();
    let embedded = wasm_filter_config(&config)["configuration"]["value"]
        .as_str()
        .expect("configuration is a StringValue");
    let embedded: Value = serde_json::from_str(embedded).expect("embedded policy is JSON");
    let file = policy_yaml_as_json(&workspace_root().join("envoy/policies/agentvoicebox.yaml"))
        .expect("policy file parses");
    assert!(
        embedded == file,
        "envoy/envoy.yaml embeds a different policy than envoy/policies/agentvoicebox.yaml; \
         replace the configuration value with:\n{}",
        serde_json::to_string_pretty(&file).expect("serialisable")
    );
}

#[test]
fn shipped_wasm_filter_fails_closed_and_holds_bodies() {
    let config = shipped_envoy_yaml();
    let wasm = wasm_filter_config(&config);
    assert_eq!(wasm["failure_policy"], "FAIL_CLOSED");
    assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        wasm["vm_config"]["code"]["local"]["filename"],
        "dist/avb_edge.wasm"
    );
}

#[test]
fn vm_environment_of_envoy_yaml_matches_dev_env() {
    let config = shipped_envoy_yaml();
    let key_values =
        &wasm_filter_config(&config)["vm_config"]["environment_variables"]["key_values"];
    let dev = dev_env().expect("envoy/dev.env");
    assert!(!dev.is_empty());
    let embedded: std::collections::BTreeMap<String, String> =
        serde_json::from_value(key_values.clone()).expect("string map");
    assert_eq!(embedded, dev);
}

#[test]
fn shipped_listener_applies_envoy_path_hygiene() {
    let config = shipped_envoy_yaml();
    let manager = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    assert_eq!(manager["normalize_path"], true);
    assert_eq!(manager["merge_slashes"], true);
    assert_eq!(
        manager["path_with_escaped_slashes_action"],
        "REJECT_REQUEST"
    );
    assert_eq!(
        manager["common_http_protocol_options"]["headers_with_underscores_action"],
        "REJECT_REQUEST"
    );
    assert_eq!(manager["codec_type"], "AUTO");
    let routes = manager["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .expect("routes");
    // The companion's ingest endpoint is only for the filter.
    assert!(
        !routes
            .iter()
            .any(|route| route["match"].to_string().contains("/v1/audit/events")),
        "the listener must not route /v1/audit/events"
    );
}

/// `validate` is only worth running because it loads the module and runs
/// `on_configure`: a broken embedded policy must fail it.
#[test]
fn validate_refuses_envoy_yaml_with_a_broken_embedded_policy() {
    wasm_path().expect("the filter must be built first");
    let mut config = shipped_envoy_yaml();
    let listeners = config["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners");
    let wasm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .expect("http filters")
        .iter_mut()
        .find(|filter| filter["name"] == "envoy.filters.http.wasm")
        .expect("wasm filter");
    let value = &mut wasm["typed_config"]["config"]["configuration"]["value"];
    let mut policy: Value = serde_json::from_str(value.as_str().expect("string")).expect("json");
    policy["rules"][0]["methods"] = serde_json::json!(["get"]);
    *value = Value::String(policy.to_string());

    let dir = avb_tests::procs::temp_dir("broken-embedded").expect("temp dir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
    let err = Envoy::validate(&path).expect_err("a lower-case method must be refused");
    assert!(format!("{err:#}").contains("policy refused"), "{err:#}");
}
