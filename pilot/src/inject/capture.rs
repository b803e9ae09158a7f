//! Traffic capture for an injected pod: which ports and address ranges go through the sidecar
//! (from the pod's `traffic.sidecar.istio.io/*` annotations), and the iptables commands the
//! `istio-init` container runs for it (Istio's `istio-iptables` in REDIRECT mode).
//!
//! Every value put in the script was parsed first (ports as `u16`, ranges as CIDRs), so an
//! annotation cannot smuggle shell text into the init container.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

/// The user id the proxy runs as; its own traffic is never captured.
pub const PROXY_UID: u32 = 1337;
/// Where outbound TCP is redirected (the proxy's `virtualOutbound`).
pub const OUTBOUND_PORT: u16 = 15001;
/// Where inbound TCP is redirected (the proxy's `virtualInbound`).
pub const INBOUND_PORT: u16 = 15006;
/// Ports the proxy serves itself (admin, agent, health, Prometheus): never redirected inbound.
pub const PROXY_PORTS: [u16; 4] = [15000, 15020, 15021, 15090];

/// Annotation: inbound ports to capture (`*` = all, the default; empty = none).
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// Annotation: inbound ports not to capture.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Annotation: outbound destination ports not to capture.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Annotation: outbound destination ranges to capture (`*` = all, the default; empty = none).
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// Annotation: outbound destination ranges not to capture.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";

/// A set of ports or ranges: everything, or a list (possibly empty: nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

/// What the init container captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub include_inbound_ports: Selection<u16>,
    /// Always holds [`PROXY_PORTS`], then the annotation's.
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub include_outbound_ranges: Selection<IpNet>,
    pub exclude_outbound_ranges: Vec<IpNet>,
}

/// An annotation that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {value:?} is not {expected}")]
pub struct CaptureError {
    pub annotation: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Capture {
    /// The capture the pod's `annotations` ask for.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Capture, CaptureError> {
        let get = |key: &str| annotations.get(key).map(String::as_str);
        let include_inbound_ports = match get(INCLUDE_INBOUND_PORTS) {
            None => Selection::All,
            Some(v) => selection(INCLUDE_INBOUND_PORTS, v, PORT)?,
        };
        let mut exclude_inbound_ports = PROXY_PORTS.to_vec();
        for p in list(EXCLUDE_INBOUND_PORTS, get(EXCLUDE_INBOUND_PORTS), PORT)? {
            if !exclude_inbound_ports.contains(&p) {
                exclude_inbound_ports.push(p);
            }
        }
        let exclude_outbound_ports =
            list(EXCLUDE_OUTBOUND_PORTS, get(EXCLUDE_OUTBOUND_PORTS), PORT)?;
        let include_outbound_ranges = match get(INCLUDE_OUTBOUND_IP_RANGES) {
            None => Selection::All,
            Some(v) => selection(INCLUDE_OUTBOUND_IP_RANGES, v, RANGE)?,
        };
        let exclude_outbound_ranges = list(
            EXCLUDE_OUTBOUND_IP_RANGES,
            get(EXCLUDE_OUTBOUND_IP_RANGES),
            RANGE,
        )?;
        Ok(Capture {
            include_inbound_ports,
            exclude_inbound_ports,
            exclude_outbound_ports,
            include_outbound_ranges,
            exclude_outbound_ranges,
        })
    }

    /// The iptables commands (nat table, IPv4) installing this capture, one per line, run by
    /// `sh -c` in the init container (`set -e`: a failing command fails the pod's start).
    pub fn script(&self) -> String {
        let mut s = String::from("set -ex\n");
        let mut rule = |args: &str| {
            let _ = writeln!(s, "iptables -t nat {args}");
        };
        for chain in [
            "ISTIO_INBOUND",
            "ISTIO_IN_REDIRECT",
            "ISTIO_OUTPUT",
            "ISTIO_REDIRECT",
        ] {
            rule(&format!("-N {chain}"));
        }
        rule(&format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
        ));
        rule(&format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
        ));

        // Inbound: connections arriving at the pod.
        match &self.include_inbound_ports {
            Selection::Only(ports) if ports.is_empty() => {}
            include => {
                rule("-A PREROUTING -p tcp -j ISTIO_INBOUND");
                match include {
                    Selection::All => {
                        for p in &self.exclude_inbound_ports {
                            rule(&format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
                        }
                        rule("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
                    }
                    Selection::Only(ports) => {
                        for p in ports
                            .iter()
                            .filter(|p| !self.exclude_inbound_ports.contains(p))
                        {
                            rule(&format!(
                                "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                            ));
                        }
                    }
                }
            }
        }

        // Outbound: connections the pod's containers open.
        rule("-A OUTPUT -p tcp -j ISTIO_OUTPUT");
        // The proxy calling its own pod's address over loopback: an inbound hop.
        rule(&format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner {PROXY_UID} -j ISTIO_IN_REDIRECT"
        ));
        // The application talking to itself over loopback stays direct.
        rule(&format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {PROXY_UID} -j RETURN"
        ));
        // The proxy's own traffic is never captured (or it would loop).
        rule(&format!(
            "-A ISTIO_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN"
        ));
        rule(&format!(
            "-A ISTIO_OUTPUT -m owner --gid-owner {PROXY_UID} -j RETURN"
        ));
        rule("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");
        for p in &self.exclude_outbound_ports {
            rule(&format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        for r in self
            .exclude_outbound_ranges
            .iter()
            .filter(|r| r.addr().is_ipv4())
        {
            rule(&format!("-A ISTIO_OUTPUT -d {r} -j RETURN"));
        }
        match &self.include_outbound_ranges {
            Selection::All => rule("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
            Selection::Only(ranges) => {
                for r in ranges.iter().filter(|r| r.addr().is_ipv4()) {
                    rule(&format!("-A ISTIO_OUTPUT -d {r} -j ISTIO_REDIRECT"));
                }
            }
        }
        s
    }
}

/// A way to read one item of a list, and what it expects (for the error).
struct Item<T> {
    parse: fn(&str) -> Option<T>,
    expected: &'static str,
}

const PORT: Item<u16> = Item {
    parse: parse_port,
    expected: "a comma-separated list of ports (1-65535)",
};
const RANGE: Item<IpNet> = Item {
    parse: parse_range,
    expected: "a comma-separated list of CIDR ranges",
};

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_range(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// A comma-separated list; absent or blank = empty.
fn list<T>(
    annotation: &'static str,
    value: Option<&str>,
    item: Item<T>,
) -> Result<Vec<T>, CaptureError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            (item.parse)(entry).ok_or_else(|| CaptureError {
                annotation,
                value: value.to_string(),
                expected: item.expected,
            })
        })
        .collect()
}

/// `*` or a list.
fn selection<T>(
    annotation: &'static str,
    value: &str,
    item: Item<T>,
) -> Result<Selection<T>, CaptureError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    list(annotation, Some(value), item).map(Selection::Only)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_capture_redirects_everything_but_the_proxy() {
        let c = Capture::from_annotations(&BTreeMap::new()).unwrap();
        let s = c.script();
        assert!(s.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"));
        assert!(s.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"));
        for p in PROXY_PORTS {
            assert!(s.contains(&format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN\n")));
        }
        assert!(s.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"));
        // The exclusions come before the catch-all.
        let ret = s.find("--dport 15021 -j RETURN").unwrap();
        let all = s
            .find("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
            .unwrap();
        assert!(ret < all);
    }

    #[test]
    fn annotations_exclude_ports_and_ranges() {
        let c = Capture::from_annotations(&annotations(&[
            (EXCLUDE_OUTBOUND_PORTS, "3306, 6379"),
            (EXCLUDE_INBOUND_PORTS, "8081"),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.96.0.0/12,10.0.0.1"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.96.0.10/32"),
        ]))
        .unwrap();
        let s = c.script();
        assert!(s.contains("-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -p tcp --dport 6379 -j RETURN\n"));
        assert!(s.contains("-A ISTIO_INBOUND -p tcp --dport 8081 -j RETURN\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -d 10.96.0.10/32 -j RETURN\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT\n"));
        assert!(s.contains("-A ISTIO_OUTPUT -d 10.0.0.1/32 -j ISTIO_REDIRECT\n"));
        assert!(!s.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"));
    }

    #[test]
    fn only_listed_inbound_ports_and_none() {
        let c = Capture::from_annotations(&annotations(&[(INCLUDE_INBOUND_PORTS, "9080,15021")]))
            .unwrap();
        let s = c.script();
        assert!(s.contains("-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT\n"));
        // The proxy's own port stays excluded even when listed.
        assert!(!s.contains("--dport 15021 -j ISTIO_IN_REDIRECT"));
        assert!(!s.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));

        let none = Capture::from_annotations(&annotations(&[(INCLUDE_INBOUND_PORTS, "")])).unwrap();
        assert!(!none.script().contains("PREROUTING"));
        let no_out =
            Capture::from_annotations(&annotations(&[(INCLUDE_OUTBOUND_IP_RANGES, "")])).unwrap();
        assert!(!no_out.script().contains("-j ISTIO_REDIRECT\n"));
    }

    #[test]
    fn bad_values_are_refused_not_embedded() {
        let err =
            Capture::from_annotations(&annotations(&[(EXCLUDE_OUTBOUND_PORTS, "80; rm -rf /")]))
                .unwrap_err();
        assert_eq!(err.annotation, EXCLUDE_OUTBOUND_PORTS);
        assert!(
            Capture::from_annotations(&annotations(&[(EXCLUDE_INBOUND_PORTS, "70000")])).is_err()
        );
        assert!(
            Capture::from_annotations(&annotations(&[(
                INCLUDE_OUTBOUND_IP_RANGES,
                "10.0.0.0/8 $(id)"
            )]))
            .is_err()
        );
    }
}
