//! The dev cluster. (Being built.)
