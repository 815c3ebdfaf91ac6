//! payhook receiver.
