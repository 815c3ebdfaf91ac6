//! alipay protocol (being written).
