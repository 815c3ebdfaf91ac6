//! wechat_v3 protocol (being written).
