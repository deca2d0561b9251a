//! Routing: what a request's route key is, and which service it names.
//!
//! Discovery (or the static services file) produces [`ServiceSpec`]s; [`RoutingSnapshot::build`]
//! turns them into one immutable snapshot (domains hashed, collisions resolved), and
//! [`RoutingTable`] publishes it atomically. The data plane only ever reads the current snapshot.

mod hash;
mod route_key;
mod service;
mod snapshot;
mod table;

pub use hash::{service_hash, service_hash_with_len, HASH_LEN};
pub use route_key::{
    alias_label, is_alias_part, is_valid_alias, operation_route_key, parse_alias_label, route_key,
    route_request, RouteKey, RouteKeyError, RouteKind, RoutingHeader, RoutingHeaders,
};
pub use service::{Endpoint, EndpointParseError, Protocol, RouteTimeouts, ServiceKey, ServiceSpec};
pub use snapshot::{Collision, Route, RoutingSnapshot};
pub use table::{Follower, RoutingTable};
