//! Redis dedup (being written).
