//! The runtime every mesh service binary shares.
//!
//! - [`admission`]: the `AdmissionReview` envelope the admission webhooks read and answer.
//! - [`args`]: logging flags common to every service, parsed with clap; [`args_error`]: bad
//!   flags reported in one line.
//! - [`https`]: a rustls server config and an accept loop serving a router over HTTPS (the
//!   services' admission webhooks).
//! - [`monitoring`]: the monitoring HTTP server: `/healthz`, `/readyz`, Prometheus `/metrics`.
//! - [`readiness`]: a set of named conditions; the service is ready when all hold.
//! - [`shutdown`]: a future that resolves on SIGTERM or Ctrl-C.
//! - [`startup`]: binding listeners with a one-line reason on failure, and the exit path for
//!   errors that stop a service from starting.

pub mod admission;
pub mod args;
pub mod args_error;
pub mod https;
pub mod monitoring;
pub mod readiness;
pub mod shutdown;
pub mod startup;

pub use args::{LogArgs, LogFormat};
pub use args_error::parse_args;
pub use monitoring::{Metrics, monitoring_router, serve_monitoring};
pub use readiness::Readiness;
pub use shutdown::{
    DEFAULT_GRACE, EXIT_WITH_PARENT_ENV, ShutdownFuture, run_until, run_until_signal,
    shutdown_signal,
};
pub use startup::{StartError, bind_tcp, exit_on_error, init_logging};
