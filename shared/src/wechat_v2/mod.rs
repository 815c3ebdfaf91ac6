//! wechat_v2 protocol (being written).
