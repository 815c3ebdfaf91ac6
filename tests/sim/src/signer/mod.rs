//! The provider side of every test: notifications signed and encrypted exactly as the
//! providers do (docs/protocols.md), with knobs to break them in the ways that matter.

pub mod alipay;
pub mod wechat_v2;
pub mod wechat_v3;
