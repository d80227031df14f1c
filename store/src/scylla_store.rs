//! The ScyllaDB backend (being written).
