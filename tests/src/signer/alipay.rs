//! alipay signer (being written).
