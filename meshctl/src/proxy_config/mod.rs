//! `meshctl proxy-status` and `meshctl proxy-config clusters|listeners|routes|endpoints PROXY`:
//! what Pilot sent each connected proxy and whether the proxy accepted it, read from Pilot's
//! debug endpoints (`/debug/syncz`, `/debug/config_dump?proxyID=`), as tables like istioctl's
//! or the raw JSON (`-o json`).
//!
//! - `pilot`: the debug API client and where Pilot is (`--pilot` or `STATE/mesh.json`).
//! - `resolve`: a proxy named by node id, pod name or a unique prefix.
//! - `table`: column-aligned text tables.
//! - `status`: the `proxy-status` table.
//! - `config`: the four `proxy-config` tables.

mod config;
mod pilot;
mod resolve;
mod status;
mod table;

use std::path::Path;

pub use config::{ConfigKind, render as render_config};
pub use pilot::{PilotDebug, PilotError, pilot_url};
pub use resolve::resolve_proxy;
pub use status::render as render_status;

/// Output format of `proxy-status` and `proxy-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table like istioctl's.
    Table,
    /// Pilot's JSON (pretty-printed).
    Json,
}

/// Flags of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// Pilot's debug URL (e.g. `http://127.0.0.1:8080`); default: the `pilot.debug` address in
    /// `STATE/mesh.json` written by `meshctl up`.
    #[arg(long, env = "MESH_PILOT")]
    pub pilot: Option<String>,

    /// Output format: `table`, or `json` (Pilot's `/debug/syncz`).
    #[arg(
        short = 'o',
        long,
        env = "MESH_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,
}

/// Flags of `meshctl proxy-config`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// What to show: `clusters`, `listeners`, `routes` or `endpoints`.
    #[arg(value_enum)]
    pub kind: ConfigKind,

    /// The proxy: its node id, pod name (`productpage-v1`, `productpage-v1.default`) or a
    /// unique prefix of it (`productpage`).
    pub proxy: String,

    /// Pilot's debug URL (e.g. `http://127.0.0.1:8080`); default: the `pilot.debug` address in
    /// `STATE/mesh.json` written by `meshctl up`.
    #[arg(long, env = "MESH_PILOT")]
    pub pilot: Option<String>,

    /// Output format: `table`, or `json` (that part of Pilot's `/debug/config_dump`).
    #[arg(
        short = 'o',
        long,
        env = "MESH_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()) + "\n"
}

/// Prints the sync status of every proxy connected to Pilot.
pub async fn run_status(args: &ProxyStatusArgs, state_dir: &Path) -> Result<(), PilotError> {
    let pilot = PilotDebug::new(&pilot_url(args.pilot.clone(), state_dir)?);
    let syncz = pilot.syncz().await?;
    match args.output {
        Output::Json => print!("{}", pretty(&syncz)),
        Output::Table => print!("{}", render_status(&syncz, pilot.name())),
    }
    Ok(())
}

/// Prints one part of one proxy's config.
pub async fn run_config(args: &ProxyConfigArgs, state_dir: &Path) -> Result<(), PilotError> {
    let pilot = PilotDebug::new(&pilot_url(args.pilot.clone(), state_dir)?);
    let syncz = pilot.syncz().await?;
    let id = resolve_proxy(&syncz, &args.proxy)?;
    let dump = pilot.config_dump(&id).await?;
    match args.output {
        Output::Json => print!("{}", pretty(&dump[args.kind.section()])),
        Output::Table => print!("{}", render_config(args.kind, &dump)),
    }
    Ok(())
}
