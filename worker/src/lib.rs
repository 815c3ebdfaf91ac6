//! payhook worker.
