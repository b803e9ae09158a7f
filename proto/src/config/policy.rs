//! config.istio.io/v1alpha2 specs: the classic Mixer configuration.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// rule spec: when `match` holds, run `actions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    #[serde(default, rename = "match")]
    pub match_: Option<String>,
    #[serde(default)]
    pub actions: Vec<RuleAction>,
    #[serde(default)]
    pub request_header_operations: Vec<Value>,
    #[serde(default)]
    pub response_header_operations: Vec<Value>,
    #[serde(default)]
    pub sampling: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleAction {
    pub handler: String,
    #[serde(default)]
    pub instances: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// handler spec: an adapter and its parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerSpec {
    #[serde(default)]
    pub compiled_adapter: Option<String>,
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
}

/// instance spec: a template and the attribute expressions that fill it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    #[serde(default)]
    pub compiled_template: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
}
