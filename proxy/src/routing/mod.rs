//! Route selection: virtual host by authority, route by path and headers, weighted cluster pick.
//! Pure functions over the applied route tables; no I/O.

mod model;
mod select;

pub use model::{
    Forwarding, HeaderMatch, HeaderMatchKind, PathMatch, Redirect, Route, RouteAction, RouteTable,
    VirtualHost,
};
pub use select::{Selected, select};
