//! The durable reading journal (being written).
