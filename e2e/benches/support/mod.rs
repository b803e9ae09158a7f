//! Support for the `proxy_overhead` bench: child processes, nginx, a one-proxy mesh, load
//! generators and the report.

pub mod load;
pub mod mesh;
pub mod nginx;
pub mod procs;
pub mod report;
