//! Host names as Istio compares them: short names resolved in a namespace, wildcards, and
//! `exportTo` visibility.

use std::collections::BTreeSet;

/// The cluster's DNS suffix.
pub(crate) const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// `reviews` seen from namespace `ns` is `reviews.ns.svc.cluster.local`; names with a dot and
/// wildcards stay as they are.
pub(crate) fn fqdn(host: &str, ns: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{ns}.{DOMAIN_SUFFIX}")
    }
}

/// Whether two host names (either may be a `*` or `*.suffix` wildcard) share a name.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    if a == b || a == "*" || b == "*" {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => false,
    }
}

/// Whether `host` (a name or a wildcard) is served by a registry entry for `service_host`.
pub(crate) fn served_by(host: &str, service_host: &str) -> bool {
    host == service_host
        || service_host
            .strip_prefix('*')
            .is_some_and(|suffix| !host.starts_with('*') && host.ends_with(suffix))
}

/// Which namespaces see an object (`exportTo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Visibility {
    All,
    Only(BTreeSet<String>),
}

impl Visibility {
    /// From `exportTo` entries of an object in `own` namespace: none or `*` is everyone, `.` is
    /// the own namespace, `~` is nobody.
    pub fn from_export_to<'a>(entries: impl IntoIterator<Item = &'a str>, own: &str) -> Visibility {
        let mut set = BTreeSet::new();
        let mut any = false;
        for e in entries {
            any = true;
            match e.trim() {
                "*" => return Visibility::All,
                "." => {
                    set.insert(own.to_string());
                }
                "~" | "" => {}
                ns => {
                    set.insert(ns.to_string());
                }
            }
        }
        if any {
            Visibility::Only(set)
        } else {
            Visibility::All
        }
    }

    pub fn sees(&self, ns: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Only(set) => set.contains(ns),
        }
    }

    /// Whether some namespace sees both.
    pub fn meets(&self, other: &Visibility) -> bool {
        match (self, other) {
            (Visibility::All, _) | (_, Visibility::All) => true,
            (Visibility::Only(a), Visibility::Only(b)) => a.intersection(b).next().is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards() {
        assert_eq!(fqdn("reviews", "prod"), "reviews.prod.svc.cluster.local");
        assert_eq!(fqdn("a.com", "prod"), "a.com");
        assert!(overlaps("*.eu.com", "a.eu.com"));
        assert!(overlaps("a.eu.com", "*.com"));
        assert!(!overlaps("a.eu.com", "b.eu.com"));
        assert!(overlaps("*", "x"));
        assert!(served_by("a.eu.com", "*.eu.com"));
        assert!(!served_by("*.com", "*.eu.com"));
        let dot = Visibility::from_export_to(["."], "a");
        assert!(dot.sees("a") && !dot.sees("b"));
        assert!(!dot.meets(&Visibility::from_export_to(["."], "b")));
        assert!(dot.meets(&Visibility::from_export_to([], "b")));
        assert!(!Visibility::from_export_to(["~"], "a").sees("a"));
    }
}
