//! Task proxy for YTsaurus. (Being built.)
pub mod routing;
