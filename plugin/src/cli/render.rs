//! `avb-policy render`: ready-to-use configuration embedding a checked policy.
//!
//! - `--for envoy`: an `envoy.filters.http.wasm` HTTP filter block with the
//!   policy as the plugin configuration, fail-closed, and
//!   `allow_on_headers_stop_iteration` (webhook rules hold the headers until
//!   the body is verified, which hangs without it).
//! - `--for istio`: a `WasmPlugin` (phase AUTHZ, FAIL_CLOSE). `WasmPlugin`
//!   cannot set `allow_on_headers_stop_iteration`, so a policy with webhooks
//!   is rendered instead as an `EnvoyFilter` delivering the same plugin
//!   through extension config discovery with that flag set; rendering both
//!   would run the filter twice and the `WasmPlugin` copy would hang webhook
//!   requests.
//! - `--for json` (hidden): the policy as the JSON document the filter loads.

use serde_yaml::{Mapping, Value};

use super::env_file::Environment;
use super::secrets::secret_references;
use super::source::{load_policy, PolicyDocument};
use super::{CliError, Outcome, RenderArgs, RenderTarget};

/// Plugin name, root id and VM id used everywhere.
pub const PLUGIN_NAME: &str = "avb_edge";
/// Where `make plugin` writes the module.
pub const DEFAULT_WASM_PATH: &str = "dist/avb_edge.wasm";
/// Istio needs a URL; this placeholder says where to put the real one.
pub const DEFAULT_ISTIO_WASM_URL: &str = "oci://registry.example.com/agentvoicebox/avb-edge:0.1.0";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

pub fn run(args: &RenderArgs) -> Result<Outcome, CliError> {
    let environment = Environment::load(args.env_file.as_deref())?;
    let document = load_policy(&args.policy)?;
    // Check with placeholders: rendering must not need the secrets, but it
    // must never render a policy the filter would refuse.
    let revision = document
        .compile(&Environment::default())?
        .policy
        .revision()
        .to_owned();
    let inline_env = args.env_file.is_some().then_some(&environment);
    let rendered = match args.target {
        RenderTarget::Json => format!("{}\n", policy_json(&document)?),
        RenderTarget::Envoy => {
            render_envoy(&document, &revision, args.wasm_url.as_deref(), inline_env)?
        }
        RenderTarget::Istio => {
            render_istio(&document, &revision, args.wasm_url.as_deref(), inline_env)?
        }
    };
    print!("{rendered}");
    Ok(Outcome::Success)
}

/// The policy as the filter's configuration string: pretty JSON, keys in the
/// order they were written.
pub fn policy_json(document: &PolicyDocument) -> Result<String, CliError> {
    // Re-serialising a serde_json::Value would sort the keys; going through
    // serde_yaml's ordered mapping keeps the author's order.
    let ordered: Value = serde_yaml::from_str(&document.filter_json)
        .map_err(|error| CliError::Invalid(format!("{}: {error}", document.path.display())))?;
    serde_json::to_string_pretty(&ordered)
        .map_err(|error| CliError::Invalid(format!("{}: {error}", document.path.display())))
}

fn mapping<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Mapping::new();
    for (key, value) in entries {
        map.insert(Value::from(key), value);
    }
    Value::Mapping(map)
}

fn string(text: &str) -> Value {
    Value::from(text)
}

/// `(name, inline value)` for every `*_env` variable; values only when an env
/// file was given.
fn env_entries(
    document: &PolicyDocument,
    inline: Option<&Environment>,
) -> Result<Vec<(String, Option<String>)>, CliError> {
    secret_references(&document.raw)
        .into_keys()
        .map(|name| match inline {
            None => Ok((name, None)),
            Some(environment) => match environment.file_value(&name) {
                Some(value) => Ok((name, Some(value.to_owned()))),
                None => Err(CliError::Usage(format!(
                    "the env file does not define `{name}`, which the policy references"
                ))),
            },
        })
        .collect()
}

fn plugin_config(
    document: &PolicyDocument,
    code: Value,
    env: &[(String, Option<String>)],
) -> Result<Value, CliError> {
    let mut vm_config = Mapping::new();
    vm_config.insert(string("vm_id"), string(PLUGIN_NAME));
    vm_config.insert(string("runtime"), string("envoy.wasm.runtime.v8"));
    vm_config.insert(string("code"), code);
    if !env.is_empty() {
        let inline = env.iter().all(|(_, value)| value.is_some());
        let variables = if inline {
            let mut values = Mapping::new();
            for (name, value) in env {
                values.insert(string(name), Value::from(value.clone().unwrap_or_default()));
            }
            mapping([("key_values", Value::Mapping(values))])
        } else {
            let names = env.iter().map(|(name, _)| string(name)).collect();
            mapping([("host_env_keys", Value::Sequence(names))])
        };
        vm_config.insert(string("environment_variables"), variables);
    }
    Ok(mapping([
        ("name", string(PLUGIN_NAME)),
        ("root_id", string(PLUGIN_NAME)),
        ("vm_config", Value::Mapping(vm_config)),
        (
            "configuration",
            mapping([
                (
                    "@type",
                    string("type.googleapis.com/google.protobuf.StringValue"),
                ),
                ("value", Value::from(policy_json(document)?)),
            ]),
        ),
        ("failure_policy", string("FAIL_CLOSED")),
        ("allow_on_headers_stop_iteration", Value::from(true)),
    ]))
}

fn to_yaml(value: &Value) -> Result<String, CliError> {
    serde_yaml::to_string(value)
        .map_err(|error| CliError::Invalid(format!("cannot render yaml: {error}")))
}

/// The Envoy HTTP filter block (one list item's content).
pub fn render_envoy(
    document: &PolicyDocument,
    revision: &str,
    wasm_url: Option<&str>,
    inline_env: Option<&Environment>,
) -> Result<String, CliError> {
    let location = wasm_url.unwrap_or(DEFAULT_WASM_PATH);
    let filename = match location.split_once("://") {
        None => location,
        Some(("file", path)) => path,
        Some(_) => {
            return Err(CliError::Usage(format!(
                "--wasm-url `{location}`: Envoy loads the module from a local file (a path or file://); \
                 fetch it first, or use --for istio for oci:// and https:// modules"
            )))
        }
    };
    let env = env_entries(document, inline_env)?;
    let code = mapping([("local", mapping([("filename", string(filename))]))]);
    let filter = mapping([
        ("name", string("envoy.filters.http.wasm")),
        (
            "typed_config",
            mapping([
                ("@type", string(WASM_TYPE)),
                ("config", plugin_config(document, code, &env)?),
            ]),
        ),
    ]);
    let mut text = format!(
        "# Generated by `avb-policy render --for envoy` from {} (policy revision {revision}).\n\
         # Edit the policy and render again; place this block before envoy.filters.http.router.\n",
        document.path.display()
    );
    if env.iter().any(|(_, value)| value.is_some()) {
        text.push_str(
            "# LOCAL ONLY: secrets are inlined from an env file. Never ship this block.\n",
        );
    }
    text.push_str(&to_yaml(&filter)?);
    Ok(text)
}

/// Istio manifests for the policy.
pub fn render_istio(
    document: &PolicyDocument,
    revision: &str,
    wasm_url: Option<&str>,
    inline_env: Option<&Environment>,
) -> Result<String, CliError> {
    let url = wasm_url.unwrap_or(DEFAULT_ISTIO_WASM_URL);
    let env = env_entries(document, inline_env)?;
    let metadata = mapping([
        ("name", string("avb-edge")),
        ("namespace", string("istio-system")),
        (
            "labels",
            mapping([(
                "avb.agentvoicebox.example/policy-revision",
                string(revision),
            )]),
        ),
    ]);
    let selector = mapping([(
        "matchLabels",
        mapping([("istio", string("ingressgateway"))]),
    )]);
    let mut text = format!(
        "# Generated by `avb-policy render --for istio` from {} (policy revision {revision}).\n\
         # Edit the policy and render again. Applies to the ingress gateway (spec selector).\n",
        document.path.display()
    );
    if !env.is_empty() && env.iter().all(|(_, value)| value.is_none()) {
        let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        text.push_str(&format!(
            "# The gateway pod must define {} in its environment (e.g. from a Kubernetes Secret);\n\
             # the plugin refuses to start without them.\n",
            names.join(", ")
        ));
    }
    if document.raw.webhooks.is_empty() {
        let env_list: Vec<Value> = env
            .iter()
            .map(|(name, value)| match value {
                Some(value) => mapping([
                    ("name", string(name)),
                    ("valueFrom", string("INLINE")),
                    ("value", string(value)),
                ]),
                None => mapping([("name", string(name)), ("valueFrom", string("HOST"))]),
            })
            .collect();
        let plugin_config: Value = serde_yaml::from_str(&document.filter_json)
            .map_err(|error| CliError::Invalid(format!("{}: {error}", document.path.display())))?;
        let mut spec = Mapping::new();
        spec.insert(string("selector"), selector);
        spec.insert(string("url"), string(url));
        spec.insert(string("imagePullPolicy"), string("IfNotPresent"));
        spec.insert(string("phase"), string("AUTHZ"));
        spec.insert(string("failStrategy"), string("FAIL_CLOSE"));
        spec.insert(string("pluginName"), string(PLUGIN_NAME));
        spec.insert(string("pluginConfig"), plugin_config);
        if !env_list.is_empty() {
            spec.insert(
                string("vmConfig"),
                mapping([("env", Value::Sequence(env_list))]),
            );
        }
        let plugin = mapping([
            ("apiVersion", string("extensions.istio.io/v1alpha1")),
            ("kind", string("WasmPlugin")),
            ("metadata", metadata),
            ("spec", Value::Mapping(spec)),
        ]);
        text.push_str(&to_yaml(&plugin)?);
        return Ok(text);
    }
    text.push_str(
        "# The policy has webhooks: the plugin holds request headers until the body is verified,\n\
         # which needs allow_on_headers_stop_iteration. WasmPlugin cannot set it, so the plugin is\n\
         # delivered by this EnvoyFilter (extension config discovery) instead of a WasmPlugin.\n",
    );
    let code = mapping([(
        "remote",
        mapping([(
            "http_uri",
            mapping([("uri", string(url)), ("timeout", string("30s"))]),
        )]),
    )]);
    let extension_name = "istio-system.avb-edge";
    let add_extension = mapping([
        ("applyTo", string("EXTENSION_CONFIG")),
        ("match", mapping([("context", string("GATEWAY"))])),
        (
            "patch",
            mapping([
                ("operation", string("ADD")),
                (
                    "value",
                    mapping([
                        ("name", string(extension_name)),
                        (
                            "typed_config",
                            mapping([
                                ("@type", string(WASM_TYPE)),
                                ("config", plugin_config(document, code, &env)?),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    let insert_filter = mapping([
        ("applyTo", string("HTTP_FILTER")),
        (
            "match",
            mapping([
                ("context", string("GATEWAY")),
                (
                    "listener",
                    mapping([(
                        "filterChain",
                        mapping([(
                            "filter",
                            mapping([
                                (
                                    "name",
                                    string("envoy.filters.network.http_connection_manager"),
                                ),
                                (
                                    "subFilter",
                                    mapping([("name", string("envoy.filters.http.router"))]),
                                ),
                            ]),
                        )]),
                    )]),
                ),
            ]),
        ),
        (
            "patch",
            mapping([
                ("operation", string("INSERT_BEFORE")),
                (
                    "value",
                    mapping([
                        ("name", string(extension_name)),
                        (
                            "config_discovery",
                            mapping([
                                (
                                    "config_source",
                                    mapping([("ads", Value::Mapping(Mapping::new()))]),
                                ),
                                ("type_urls", Value::Sequence(vec![string(WASM_TYPE)])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    let filter = mapping([
        ("apiVersion", string("networking.istio.io/v1alpha3")),
        ("kind", string("EnvoyFilter")),
        ("metadata", metadata),
        (
            "spec",
            mapping([
                (
                    "workloadSelector",
                    mapping([("labels", mapping([("istio", string("ingressgateway"))]))]),
                ),
                (
                    "configPatches",
                    Value::Sequence(vec![add_extension, insert_filter]),
                ),
            ]),
        ),
    ]);
    text.push_str(&to_yaml(&filter)?);
    Ok(text)
}
