//! The merchants the simulator plays: one per provider, with the keys of the
//! [`crate::signer`]s, and the payhook configuration that trusts them.

use payhook_shared::config::{Secret, Settings};

/// One merchant of each provider, signed by the test signers, registered under the
/// name [`Providers::MERCHANT`] in the receiver's settings.
#[derive(Debug, Clone)]
pub struct Providers {
    pub alipay: crate::signer::alipay::AlipaySigner,
    pub wechat_v2: crate::signer::wechat_v2::V2Signer,
    pub wechat_v3: crate::signer::wechat_v3::V3Signer,
}

impl Default for Providers {
    fn default() -> Self {
        Self::new()
    }
}

impl Providers {
    pub const MERCHANT: &'static str = "m1";

    pub fn new() -> Self {
        Self {
            alipay: crate::signer::alipay::AlipaySigner::new(
                "2021000117600001",
                "2088102177000001",
            ),
            wechat_v2: crate::signer::wechat_v2::V2Signer::new("1900000109"),
            wechat_v3: crate::signer::wechat_v3::V3Signer::new("1900000110"),
        }
    }

    /// The same merchants with WeChat V3 in platform-certificate mode (a hex serial,
    /// so [`Providers::register`] configures the certificate, not a public-key id).
    pub fn with_v3_certificate() -> Self {
        Self {
            wechat_v3: crate::signer::wechat_v3::V3Signer::with_key(
                crate::keys::rsa_key(1),
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                "1900000110",
            ),
            ..Self::new()
        }
    }

    /// Adds the three merchants to `settings` the way an operator would configure them.
    /// The WeChat V3 merchant trusts the platform public key (`PUB_KEY_ID_…` serial)
    /// or, when the signer announces a hex serial, its platform certificate.
    pub fn register(&self, settings: &mut Settings) {
        use payhook_shared::config::{
            AlipaySettings, Material, WechatV2Settings, WechatV3Settings,
        };
        let public_key_mode = self
            .wechat_v3
            .serial
            .starts_with(payhook_shared::wechat_v3::PUBLIC_KEY_ID_PREFIX);
        settings.alipay.insert(
            Self::MERCHANT.into(),
            AlipaySettings {
                app_id: self.alipay.app_id.clone(),
                alipay_public_key: Some(Material::Inline(self.alipay.public_key_b64())),
                previous_alipay_public_key: None,
                alipay_cert: None,
                alipay_root_cert: None,
                app_cert: None,
                app_private_key: None,
                seller_id: Some(self.alipay.seller_id.clone()),
            },
        );
        settings.wechat_v2.insert(
            Self::MERCHANT.into(),
            WechatV2Settings {
                mch_id: self.wechat_v2.mch_id.clone(),
                appid: Some(self.wechat_v2.appid.clone()),
                api_key: Secret::inline(self.wechat_v2.api_key.clone()),
                previous_api_key: None,
            },
        );
        settings.wechat_v3.insert(
            Self::MERCHANT.into(),
            WechatV3Settings {
                mch_id: self.wechat_v3.mch_id.clone(),
                appid: Some(self.wechat_v3.appid.clone()),
                api_v3_key: Secret::inline(self.wechat_v3.api_v3_key.clone()),
                previous_api_v3_key: None,
                platform_certs: if public_key_mode {
                    vec![]
                } else {
                    vec![Material::Inline(self.wechat_v3.certificate_pem())]
                },
                public_key_id: public_key_mode.then(|| self.wechat_v3.serial.clone()),
                public_key: public_key_mode
                    .then(|| Material::Inline(self.wechat_v3.public_key_pem())),
                merchant_private_key: None,
                merchant_serial: None,
            },
        );
    }
}
