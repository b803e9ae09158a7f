//! Finding a connected proxy by node id, pod name, `pod.namespace`, or a unique prefix.

use serde_json::Value;

use super::PilotError;

/// The node id of the proxy `name` names among the proxies of `/debug/syncz`: the exact node
/// id, else the exact `pod` or `pod.namespace`, else the one proxy whose `pod.namespace` or id
/// starts with `name`.
pub fn resolve_proxy(syncz: &Value, name: &str) -> Result<String, PilotError> {
    let mut proxies: Vec<(String, String)> = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["proxy_id"].as_str()?.to_string();
            Some((id, display_name(p)))
        })
        .collect();
    // A reconnecting proxy can be listed twice for a moment.
    proxies.sort();
    proxies.dedup();
    if proxies.iter().any(|(id, _)| id == name) {
        return Ok(name.to_string());
    }
    let pick = |matches: Vec<&(String, String)>| -> Option<Result<String, PilotError>> {
        match matches.as_slice() {
            [] => None,
            [(id, _)] => Some(Ok(id.clone())),
            many => Some(Err(PilotError::Ambiguous {
                name: name.to_string(),
                candidates: many.iter().map(|(_, n)| n.clone()).collect(),
            })),
        }
    };
    let exact = proxies
        .iter()
        .filter(|(_, n)| n == name || n.split('.').next() == Some(name))
        .collect();
    if let Some(r) = pick(exact) {
        return r;
    }
    let prefix = proxies
        .iter()
        .filter(|(id, n)| n.starts_with(name) || id.starts_with(name))
        .collect();
    pick(prefix).unwrap_or_else(|| {
        Err(PilotError::NoSuchProxy {
            name: name.to_string(),
            connected: proxies.into_iter().map(|(_, n)| n).collect(),
        })
    })
}

/// `pod.namespace` of a `/debug/syncz` entry (its node id when the proxy section is missing).
pub fn display_name(p: &Value) -> String {
    match (p["proxy"]["pod"].as_str(), p["proxy"]["namespace"].as_str()) {
        (Some(pod), Some(ns)) if !pod.is_empty() => format!("{pod}.{ns}"),
        _ => p["proxy_id"].as_str().unwrap_or("?").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(pod: &str, ns: &str) -> Value {
        let kind = if pod.starts_with("istio-ingress") {
            "router"
        } else {
            "sidecar"
        };
        json!({
            "proxy_id": format!("{kind}~127.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local"),
            "proxy": {"pod": pod, "namespace": ns},
            "types": {},
        })
    }

    #[test]
    fn by_id_pod_or_unique_prefix() {
        let syncz = json!([
            entry("productpage-v1", "default"),
            entry("reviews-v1", "default"),
            entry("reviews-v2", "default"),
            entry("istio-ingressgateway", "istio-system"),
            // The same proxy on two streams while it reconnects.
            entry("reviews-v2", "default"),
        ]);
        let id = "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local";
        assert_eq!(resolve_proxy(&syncz, id).unwrap(), id);
        assert_eq!(resolve_proxy(&syncz, "productpage").unwrap(), id);
        assert_eq!(resolve_proxy(&syncz, "productpage-v1.default").unwrap(), id);
        assert_eq!(
            resolve_proxy(&syncz, "reviews-v2").unwrap(),
            "sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local"
        );
        assert_eq!(
            resolve_proxy(&syncz, "router").unwrap(),
            "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
        let err = resolve_proxy(&syncz, "reviews").unwrap_err().to_string();
        assert!(
            err.contains("reviews-v1.default") && err.contains("reviews-v2.default"),
            "{err}"
        );
        let err = resolve_proxy(&syncz, "ratings").unwrap_err().to_string();
        assert!(
            err.contains("no proxy \"ratings\"") && err.contains("productpage-v1.default"),
            "{err}"
        );
        let err = resolve_proxy(&json!([]), "x").unwrap_err().to_string();
        assert!(err.ends_with("connected: none"), "{err}");
    }
}
