//! Demo and test upstreams. (Being built.)
