//! Debug HTTP endpoints (JSON) on `--debug-addr`, read by `meshctl proxy-status` and
//! `meshctl proxy-config`:
//! - `/debug/syncz`: every connected proxy, per type sent/ACKed version and last NACK;
//! - `/debug/config_dump?proxyID=ID`: a connected proxy's LDS/RDS/CDS/EDS (404 otherwise);
//! - `/debug/registryz`: services (hosts, ports, endpoint counts, origin) and traffic config.

mod render;
mod routes;
#[cfg(test)]
mod tests;

pub use render::config as render_config;
pub use routes::{DebugState, router};
