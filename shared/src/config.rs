//! configuration (being written).
