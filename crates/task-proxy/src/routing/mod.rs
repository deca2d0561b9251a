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
pub use route_key::{route_key, RouteKey, RouteKeyError};
pub use service::{Endpoint, EndpointParseError, Protocol, ServiceKey, ServiceSpec};
pub use snapshot::{Collision, Route, RoutingSnapshot};
pub use table::RoutingTable;
