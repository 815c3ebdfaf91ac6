//! wechat_v3 signer (being written).
