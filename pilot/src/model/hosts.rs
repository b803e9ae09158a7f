//! Host names: Kubernetes short names resolved to FQDNs in the namespace that wrote them.

/// `name.ns.svc.<suffix>`.
pub fn service_fqdn(name: &str, namespace: &str, domain_suffix: &str) -> String {
    format!("{name}.{namespace}.svc.{domain_suffix}")
}

/// Resolves `host` as written in config of `namespace`:
/// `reviews` → `reviews.<ns>.svc.<suffix>`, `reviews.prod` → `reviews.prod.svc.<suffix>`,
/// `reviews.prod.svc` → `reviews.prod.svc.<suffix>`; FQDNs, wildcards and external names stay.
pub fn resolve_host(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host == "*" || host.starts_with("*.") {
        return host.to_string();
    }
    let suffix = format!(".svc.{domain_suffix}");
    if host.ends_with(&suffix) {
        return host.to_string();
    }
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => service_fqdn(name, namespace, domain_suffix),
        [name, ns] => service_fqdn(name, ns, domain_suffix),
        [name, ns, "svc"] => service_fqdn(name, ns, domain_suffix),
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_short_names_per_namespace() {
        let s = "cluster.local";
        assert_eq!(
            resolve_host("reviews", "default", s),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews", "prod", s),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod", "default", s),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod.svc", "default", s),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod.svc.cluster.local", "default", s),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(resolve_host("*", "default", s), "*");
        assert_eq!(
            resolve_host("www.example.com", "default", s),
            "www.example.com"
        );
    }
}
