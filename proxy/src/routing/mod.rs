//! Route selection: virtual host by authority, route by path and headers, weighted cluster pick.
//! Pure functions over the applied route tables; no I/O.

pub mod envoy;
mod model;
mod policy;
mod select;

pub use model::{
    DirectResponse, Forwarding, HeaderMatch, HeaderMatchKind, PathMatch, Redirect, Route,
    RouteAction, RouteTable, VirtualHost,
};
pub use policy::{
    AttemptOutcome, Cors, Fault, HashPolicy, HeaderOps, HeaderPolicy, Mirror, OriginMatch,
    PerMillion, RetryOn, RetryPolicy,
};
pub use select::{Selected, select};
