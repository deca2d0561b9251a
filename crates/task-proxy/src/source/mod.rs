//! Sources of services: they build routing snapshots and publish them in the routing table.
//! The static services file lives here; discovery (another module) is the other source.

pub mod services_file;
