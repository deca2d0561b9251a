//! Routing. (Being built.)
