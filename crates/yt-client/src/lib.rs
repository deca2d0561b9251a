//! Async client of the YTsaurus HTTP API. (Being built.)
