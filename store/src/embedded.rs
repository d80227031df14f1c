//! The embedded fjall backend (being written).
