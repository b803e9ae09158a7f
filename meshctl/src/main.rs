//! `meshctl`: the operator CLI. `up` runs a whole mesh on this machine (optionally with the
//! Bookinfo demo); `apply`, `get` and `delete` talk to Galley's apply API.

mod analyze;
mod apply;
mod dashboard;
mod galley_api;
mod get;
mod history;
mod proxy_config;
mod state;
mod up;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The mesh's operator CLI.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Cli {
    /// Galley's apply API URL (e.g. `http://127.0.0.1:9902`); default: the `galley` address in
    /// `STATE/mesh.json` written by `meshctl up`.
    #[arg(long, global = true, env = "MESH_GALLEY")]
    galley: Option<String>,

    /// The local mesh's state directory (lock, mesh.json, logs, stores, keys); default `$HOME/.mesh`.
    #[arg(long, global = true, env = "MESH_STATE")]
    state: Option<PathBuf>,

    #[command(flatten)]
    log: mesh_runtime::LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start galley, pilot, citadel, mixer and an ingress gateway (and with `--demo` the Bookinfo
    /// demo with its sidecars) as local processes; stop them all on Ctrl-C/SIGTERM.
    Up(up::UpArgs),
    /// Send configuration files to Galley (each document is validated; nothing of an invalid
    /// file is stored).
    Apply(apply::ApplyArgs),
    /// List configuration objects of one kind.
    Get(get::GetArgs),
    /// Delete one configuration object.
    Delete(get::DeleteArgs),
    /// Check configuration files offline with Galley's validation (no mesh needed); exit 0 when
    /// all documents are valid, 1 when any is invalid, 2 when an input cannot be read.
    Validate(validate::ValidateArgs),
    /// Serve the live mesh dashboard (service graph, golden signals, config, proxy sync) of the
    /// mesh `meshctl up` is running; `up` already serves one and prints its address.
    Dashboard(dashboard::DashboardArgs),
    /// List Galley's stored changes (revision, time, operation, object), oldest first.
    History(history::HistoryArgs),
    /// Restore Galley's store to its content at a revision (as a new revision; validated, and
    /// nothing changes when rejected).
    Rollback(history::RollbackArgs),
    /// Cross-resource checks with Istio's analyzer codes (IST0101, IST0109, ...) over files, or
    /// without `-f` over everything Galley stores; exit 1 when a finding is an Error.
    Analyze(analyze::AnalyzeArgs),
    /// Every proxy connected to Pilot and whether its CDS, LDS, EDS, RDS and SDS are in sync
    /// (SYNCED, STALE, NACKED, NOT SENT), from Pilot's `/debug/syncz`.
    ProxyStatus(proxy_config::ProxyStatusArgs),
    /// One proxy's clusters, listeners, routes or endpoints as Pilot sends them, from Pilot's
    /// `/debug/config_dump`.
    ProxyConfig(proxy_config::ProxyConfigArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    mesh_runtime::init_logging(&cli.log);
    if let Command::Validate(args) = &cli.command {
        let code = validate::run(args, &mut std::io::stdout(), &mut std::io::stderr());
        std::process::exit(code);
    }
    let state_dir = cli.state.unwrap_or_else(state::default_state_dir);
    if let Command::Analyze(args) = &cli.command {
        let galley =
            || state::galley_url(cli.galley.clone(), &state_dir).map_err(|e| e.to_string());
        let code = analyze::run(args, galley, &mut std::io::stdout(), &mut std::io::stderr()).await;
        std::process::exit(code);
    }
    let res: anyhow::Result<()> = match cli.command {
        Command::Up(args) => up::run(args, state_dir).await.map_err(Into::into),
        Command::Apply(args) => {
            let galley = state::galley_url(cli.galley, &state_dir);
            match galley {
                Ok(url) => apply::run(&args, &url).await.map_err(Into::into),
                Err(e) => Err(e.into()),
            }
        }
        Command::Get(args) => match state::galley_url(cli.galley, &state_dir) {
            Ok(url) => get::run_get(&args, &url).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::Delete(args) => match state::galley_url(cli.galley, &state_dir) {
            Ok(url) => get::run_delete(&args, &url).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::Dashboard(args) => dashboard::run(&args, state_dir).await.map_err(Into::into),
        Command::History(args) => match state::galley_url(cli.galley, &state_dir) {
            Ok(url) => history::run_history(&args, &url).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::Rollback(args) => match state::galley_url(cli.galley, &state_dir) {
            Ok(url) => history::run_rollback(&args, &url).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::ProxyStatus(args) => proxy_config::run_status(&args, &state_dir)
            .await
            .map_err(Into::into),
        Command::ProxyConfig(args) => proxy_config::run_config(&args, &state_dir)
            .await
            .map_err(Into::into),
        Command::Validate(_) | Command::Analyze(_) => Ok(()),
    };
    mesh_runtime::exit_on_error("meshctl", res);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["meshctl", "up", "--demo", "--state", "/tmp/s"]).unwrap();
        assert!(matches!(c.command, Command::Up(ref u) if u.demo));
        assert_eq!(c.state, Some(PathBuf::from("/tmp/s")));
        let c = Cli::try_parse_from(["meshctl", "apply", "-f", "a.yaml", "-f", "dir"]).unwrap();
        assert!(matches!(c.command, Command::Apply(ref a) if a.files.len() == 2));
        let c = Cli::try_parse_from(["meshctl", "get", "vs", "-n", "x", "-o", "json"]).unwrap();
        assert!(matches!(c.command, Command::Get(ref g) if g.namespace.as_deref() == Some("x")));
        let c = Cli::try_parse_from(["meshctl", "validate", "-f", "a.yaml", "--output", "json"])
            .unwrap();
        assert!(
            matches!(c.command, Command::Validate(ref v) if v.output == validate::Output::Json)
        );
        let c = Cli::try_parse_from(["meshctl", "history", "--kind", "vs", "-n", "prod"]).unwrap();
        assert!(
            matches!(c.command, Command::History(ref h) if h.namespace.as_deref() == Some("prod"))
        );
        let c = Cli::try_parse_from(["meshctl", "analyze", "-f", "a.yaml", "-o", "json"]).unwrap();
        assert!(matches!(c.command, Command::Analyze(ref a) if a.files.len() == 1));
        let c = Cli::try_parse_from([
            "meshctl",
            "proxy-config",
            "routes",
            "productpage",
            "-o",
            "json",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::ProxyConfig(ref p)
            if p.kind == proxy_config::ConfigKind::Routes && p.proxy == "productpage"
                && p.output == proxy_config::Output::Json));
        let c = Cli::try_parse_from(["meshctl", "proxy-status", "--pilot", "http://p:1"]).unwrap();
        assert!(
            matches!(c.command, Command::ProxyStatus(ref p) if p.pilot.as_deref() == Some("http://p:1"))
        );
        let c = Cli::try_parse_from(["meshctl", "rollback", "7"]).unwrap();
        assert!(matches!(c.command, Command::Rollback(ref r) if r.rev == 7));
    }
}
