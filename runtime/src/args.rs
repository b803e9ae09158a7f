//! Flags shared by every service. Each binary declares its own addresses (their defaults differ)
//! and flattens these.

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging flags every service takes (flattened into its own `Args`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `galley=debug`).
    #[arg(long, env = "MESH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
