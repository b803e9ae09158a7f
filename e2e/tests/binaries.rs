//! Every binary documents its flags, a bad flag is refused in one line, and a service whose port
//! is taken exits 1 with one line.
//! Needs the workspace binaries built: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, wait_timeout};

const BINARIES: &[&str] = &[
    "galley",
    "pilot",
    "citadel",
    "mixer",
    "mesh-proxy",
    "bookinfo",
    "meshctl",
];

#[test]
fn every_binary_has_help() {
    for name in BINARIES {
        let out = Command::new(bin(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{name} --help:\n{text}");
    }
}

/// The services (meshctl is a CLI with subcommands and keeps clap's usage text).
const SERVICES: &[&str] = &[
    "galley",
    "pilot",
    "citadel",
    "mixer",
    "mesh-proxy",
    "bookinfo",
];

#[test]
fn a_bad_flag_fails_with_one_line() {
    for name in SERVICES {
        let out = Command::new(bin(name))
            .arg("--no-such-flag")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim_end(),
            format!("{name}: unexpected argument '--no-such-flag' found (see --help)"),
            "{name}"
        );
    }
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[test]
fn a_taken_port_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "not-a-real-token").unwrap();
    let p = |rel: &str| tmp.path().join(rel).display().to_string();
    for name in [
        "galley",
        "pilot",
        "citadel",
        "mixer",
        "mesh-proxy",
        "bookinfo",
    ] {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap().to_string();
        let args: Vec<String> = match name {
            "galley" => vec![
                "--store".into(),
                p("galley.sled"),
                "--mcp-addr".into(),
                free_addr(),
                "--api-addr".into(),
                free_addr(),
                "--monitoring-addr".into(),
                taken_addr.clone(),
            ],
            "pilot" => vec![
                "--galley-addr".into(),
                format!("http://{}", free_addr()),
                "--xds-addr".into(),
                free_addr(),
                "--debug-addr".into(),
                free_addr(),
                "--monitoring-addr".into(),
                taken_addr.clone(),
            ],
            "citadel" => vec![
                "--state-dir".into(),
                p("citadel"),
                "--grpc-addr".into(),
                free_addr(),
                "--monitoring-addr".into(),
                taken_addr.clone(),
            ],
            "mixer" => vec![
                "--galley-addr".into(),
                format!("http://{}", free_addr()),
                "--grpc-addr".into(),
                free_addr(),
                "--monitoring-addr".into(),
                taken_addr.clone(),
            ],
            "mesh-proxy" => vec![
                "--type".into(),
                "sidecar".into(),
                "--pod".into(),
                "p".into(),
                "--service-account".into(),
                "sa".into(),
                "--labels".into(),
                "app=x".into(),
                "--token-file".into(),
                token.display().to_string(),
                "--xds-addr".into(),
                format!("http://{}", free_addr()),
                "--citadel-addr".into(),
                format!("http://{}", free_addr()),
                "--outbound-addr".into(),
                free_addr(),
                "--inbound-addr".into(),
                free_addr(),
                "--app-addr".into(),
                free_addr(),
                "--admin-addr".into(),
                taken_addr.clone(),
            ],
            _ => vec![
                "--service".into(),
                "details".into(),
                "--listen".into(),
                taken_addr.clone(),
            ],
        };
        let mut child = Command::new(bin(name))
            .args(&args)
            .env("MESH_LOG_LEVEL", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} kept running although {taken_addr} is taken");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{name} printed more than one line:\n{stderr}"
        );
        assert!(lines[0].starts_with(&format!("{name}: ")), "{}", lines[0]);
        assert!(lines[0].contains(&taken_addr), "{}", lines[0]);
        drop(taken);
    }
}
