//! Sidecar `ingress[]` (Istio's `IstioIngressListener`): the ports a sidecar accepts traffic
//! on and where each goes, read and checked when the Sidecar is read. A Sidecar with a bad
//! ingress entry is left out whole (listed in the registry's problems), like any other
//! unreadable Sidecar.
//!
//! - `port.number` (1..=65535, unique in the Sidecar), `port.protocol` (HTTP-like or TCP-like,
//!   as service ports), `port.name`;
//! - `bind`: an IP to bind an explicit listener on (implies no iptables capture);
//! - `captureMode`: `DEFAULT`, `IPTABLES` or `NONE` (`NONE`: an explicit listener on
//!   `bind:port`, `0.0.0.0` without `bind`);
//! - `defaultEndpoint`: `127.0.0.1:PORT` / `[::1]:PORT` (loopback), `0.0.0.0:PORT` /
//!   `[::]:PORT` (the instance IP), or `unix:///path` (a Unix domain socket); unset: the
//!   instance IP on the same port.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use serde_json::Value;

/// Where an ingress port's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IngressEndpoint {
    /// A loopback address (`127.0.0.1:PORT`, `[::1]:PORT`) or an unspecified one
    /// (`0.0.0.0:PORT`, `[::]:PORT`: the instance IP, which the proxy fills in).
    Socket(SocketAddr),
    /// `unix:///path`: the socket's path.
    Unix(String),
}

/// Whether a port is served as HTTP or as opaque TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IngressProtocol {
    Http,
    Tcp,
}

/// One checked `ingress[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressPort {
    pub port: u16,
    pub protocol: IngressProtocol,
    pub name: String,
    /// The address of an explicit listener (`bind`, or `0.0.0.0` for `captureMode: NONE`);
    /// `None`: the port is reached through the inbound capture (`virtualInbound`).
    pub bind: Option<IpAddr>,
    pub endpoint: IngressEndpoint,
}

/// Reads `spec.ingress`: every entry checked, or the first problem with its field path.
pub fn parse_ingress(entries: &[Value]) -> Result<Vec<IngressPort>, String> {
    let mut out: Vec<IngressPort> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = |f: &str| format!("spec.ingress[{i}].{f}");
        let port = e.get("port").filter(|p| p.is_object());
        let number = port
            .and_then(|p| p.get("number"))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{}: required", at("port.number")))?;
        let number = u16::try_from(number)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("{}: {number} is not a port (1-65535)", at("port.number")))?;
        if out.iter().any(|p| p.port == number) {
            return Err(format!(
                "{}: port {number} is already used by another ingress listener",
                at("port.number")
            ));
        }
        let str_field = |v: Option<&Value>, f: &str| -> Result<String, String> {
            match v {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("{}: not a string", at(f))),
            }
        };
        let protocol = str_field(port.and_then(|p| p.get("protocol")), "port.protocol")?;
        let name = str_field(port.and_then(|p| p.get("name")), "port.name")?;
        let protocol = ingress_protocol(&protocol);
        let capture = str_field(e.get("captureMode"), "captureMode")?;
        let capture_none = match capture.as_str() {
            "" | "DEFAULT" | "IPTABLES" => false,
            "NONE" => true,
            other => {
                return Err(format!(
                    "{}: {other:?} is not DEFAULT, IPTABLES or NONE",
                    at("captureMode")
                ));
            }
        };
        let bind = str_field(e.get("bind"), "bind")?;
        let bind = if bind.is_empty() {
            capture_none.then_some(IpAddr::from([0, 0, 0, 0]))
        } else {
            Some(
                bind.parse::<IpAddr>()
                    .map_err(|_| format!("{}: {bind:?} is not an IP address", at("bind")))?,
            )
        };
        let endpoint = str_field(e.get("defaultEndpoint"), "defaultEndpoint")?;
        let endpoint = parse_endpoint(&endpoint, number)
            .map_err(|r| format!("{}: {r}", at("defaultEndpoint")))?;
        out.push(IngressPort {
            port: number,
            protocol,
            name,
            bind,
            endpoint,
        });
    }
    Ok(out)
}

/// HTTP-like protocols are served as HTTP, the rest as TCP; an unset protocol is HTTP (the
/// mesh routes undeclared service ports as HTTP too).
fn ingress_protocol(p: &str) -> IngressProtocol {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => IngressProtocol::Tcp,
        _ => IngressProtocol::Http,
    }
}

/// `defaultEndpoint`: loopback or unspecified `IP:PORT`, or `unix:///path`; empty: the
/// instance IP on `port`.
pub fn parse_endpoint(s: &str, port: u16) -> Result<IngressEndpoint, String> {
    if s.is_empty() {
        return Ok(IngressEndpoint::Socket(SocketAddr::new(
            IpAddr::from([0, 0, 0, 0]),
            port,
        )));
    }
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') && !path.starts_with('@') {
            return Err(format!("{s:?}: a unix socket needs an absolute path"));
        }
        return Ok(IngressEndpoint::Unix(path.to_string()));
    }
    // `:PORT` (an empty host, which Istio's validation allows) is the loopback address, as
    // istiod builds it.
    let parsed = match s.strip_prefix(':') {
        Some(port) if !port.contains(':') => format!("127.0.0.1:{port}").parse(),
        _ => s.parse::<SocketAddr>(),
    };
    let addr = parsed.map_err(|_| {
        format!("{s:?} is not 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path")
    })?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0"));
    }
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        return Err(format!(
            "{s:?}: only a loopback or unspecified (instance) IP may be used"
        ));
    }
    Ok(IngressEndpoint::Socket(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<IngressPort, String> {
        parse_ingress(&[v]).map(|mut p| p.remove(0))
    }

    #[test]
    fn an_empty_host_is_loopback() {
        assert_eq!(
            parse_endpoint(":8080", 9080),
            Ok(IngressEndpoint::Socket(SocketAddr::from((
                [127, 0, 0, 1],
                8080
            ))))
        );
        assert!(parse_endpoint(":0", 9080).is_err());
        assert!(parse_endpoint(":x", 9080).is_err());
    }

    #[test]
    fn endpoints_binds_and_protocols() {
        let p = one(
            json!({"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                           "defaultEndpoint": "127.0.0.1:8080"}),
        )
        .unwrap();
        assert_eq!(p.port, 9080);
        assert_eq!(p.protocol, IngressProtocol::Http);
        assert_eq!(p.bind, None);
        assert_eq!(
            p.endpoint,
            IngressEndpoint::Socket("127.0.0.1:8080".parse().unwrap())
        );
        let p = one(json!({"port": {"number": 3306, "protocol": "TCP"},
                           "captureMode": "NONE", "defaultEndpoint": "0.0.0.0:3307"}))
        .unwrap();
        assert_eq!(p.protocol, IngressProtocol::Tcp);
        assert_eq!(p.bind, Some("0.0.0.0".parse().unwrap()));
        let p = one(json!({"port": {"number": 80}, "bind": "10.0.0.5",
                           "defaultEndpoint": "unix:///var/run/app.sock"}))
        .unwrap();
        assert_eq!(p.bind, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(
            p.endpoint,
            IngressEndpoint::Unix("/var/run/app.sock".into())
        );
        let p = one(json!({"port": {"number": 81}})).unwrap();
        assert_eq!(
            p.endpoint,
            IngressEndpoint::Socket("0.0.0.0:81".parse().unwrap())
        );
    }

    #[test]
    fn bad_entries_name_the_field() {
        let err = |v: Value| one(v).unwrap_err();
        assert!(err(json!({"port": {"number": 0}})).contains("spec.ingress[0].port.number"));
        assert!(err(json!({"defaultEndpoint": "127.0.0.1:1"})).contains("port.number: required"));
        assert!(
            err(json!({"port": {"number": 80}, "defaultEndpoint": "localhost:8080"}))
                .contains("defaultEndpoint")
        );
        assert!(
            err(json!({"port": {"number": 80}, "defaultEndpoint": "10.1.2.3:8080"}))
                .contains("loopback")
        );
        assert!(
            err(json!({"port": {"number": 80}, "defaultEndpoint": "unix://relative"}))
                .contains("absolute")
        );
        assert!(
            err(json!({"port": {"number": 80}, "captureMode": "SOMETIMES"}))
                .contains("captureMode")
        );
        assert!(err(json!({"port": {"number": 80}, "bind": "eth0"})).contains("bind"));
        let dup = parse_ingress(&[
            json!({"port": {"number": 80}, "defaultEndpoint": "127.0.0.1:1"}),
            json!({"port": {"number": 80}, "defaultEndpoint": "127.0.0.1:2"}),
        ])
        .unwrap_err();
        assert!(dup.contains("spec.ingress[1].port.number"), "{dup}");
    }
}
