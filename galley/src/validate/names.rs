//! Kubernetes name rules (DNS-1123).

/// Why `name` is not a DNS-1123 subdomain (lower-case alphanumerics, `-` and `.`, starting and
/// ending with an alphanumeric, at most 253 characters), or `None` when it is one.
pub fn dns1123_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "must be at most 253 characters (has {})",
            name.len()
        ));
    }
    for label in name.split('.') {
        if let Some(p) = label_problem(label, 63) {
            return Some(format!("{name:?} is not a valid DNS-1123 subdomain: {p}"));
        }
    }
    None
}

/// Why `name` is not a DNS-1123 label (at most 63 characters, no dots), or `None`.
pub fn dns1123_label_problem(name: &str) -> Option<String> {
    label_problem(name, 63).map(|p| format!("{name:?} is not a valid DNS-1123 label: {p}"))
}

/// Why `name` cannot name an object in a URL path (empty, `.`, `..`, or holding `/`, `%` or
/// whitespace/control characters, or longer than 253 characters), or `None`.
pub fn path_segment_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "must be at most 253 characters (has {})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a valid name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '%') || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "{name:?} is not a valid name: character {c:?} is not allowed"
        ));
    }
    None
}

fn label_problem(label: &str, max: usize) -> Option<String> {
    if label.is_empty() {
        return Some("empty label".into());
    }
    if label.len() > max {
        return Some(format!("label longer than {max} characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "character {c:?} is not allowed (lower-case letters, digits and '-' only)"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("must start and end with a letter or digit".into());
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(dns1123_subdomain_problem("reviews").is_none());
        assert!(dns1123_subdomain_problem("reviews-v2.default").is_none());
        assert!(dns1123_subdomain_problem("Reviews").is_some());
        assert!(dns1123_subdomain_problem("-a").is_some());
        assert!(dns1123_subdomain_problem("a..b").is_some());
        assert!(dns1123_subdomain_problem("a_b").is_some());
        assert!(dns1123_subdomain_problem("").is_some());
        assert!(dns1123_subdomain_problem(&"a".repeat(254)).is_some());
    }

    #[test]
    fn path_segments() {
        assert!(path_segment_problem("BACKEND").is_none());
        assert!(path_segment_problem("a.b-C_d").is_none());
        assert!(path_segment_problem("a/b").is_some());
        assert!(path_segment_problem("..").is_some());
        assert!(path_segment_problem("a b").is_some());
        assert!(path_segment_problem("").is_some());
    }

    #[test]
    fn labels() {
        assert!(dns1123_label_problem("istio-system").is_none());
        assert!(dns1123_label_problem("a.b").is_some());
        assert!(dns1123_label_problem(&"a".repeat(64)).is_some());
    }
}
