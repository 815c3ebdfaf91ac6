//! wechat_v2 signer (being written).
