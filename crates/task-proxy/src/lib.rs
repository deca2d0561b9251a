//! Task proxy for YTsaurus: gives every web service running in YTsaurus jobs a stable domain,
//! checks that the caller may read the operation, and forwards requests to the jobs.
//!
//! Data flows one way: a source (discovery, or the static services file) builds an immutable
//! [`routing::RoutingSnapshot`] and publishes it in the [`routing::RoutingTable`]; the data plane
//! reads the current snapshot for each request, asks [`auth::Gate`] to admit it, and forwards it.
//! The admin server only reads. See docs/architecture.md for the module map and a request's
//! path through it.
//!
//! [`Server::start`] runs a whole proxy from a [`config::Config`] (the binary's `serve` is
//! flags, logging and signals around it).

#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod auth;
pub mod config;
pub mod discovery;
pub mod file_watch;
pub mod html;
pub mod logging;
pub mod portal;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod source;

pub use server::{RunningServer, Server};
