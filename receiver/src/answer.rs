//! Answers in each provider's own format. The success answer is the only thing that
//! stops a provider's resends, so it is produced in exactly one place, after the
//! publisher confirm.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use payhook_shared::event::Provider;
use payhook_shared::{alipay, wechat_v2, wechat_v3};

/// The provider's "received" answer.
pub fn success(provider: Provider) -> HttpResponse {
    match provider {
        // Exactly these 7 bytes; anything else makes Alipay resend.
        Provider::Alipay => HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body(alipay::SUCCESS_ANSWER),
        Provider::WechatV2 => HttpResponse::Ok()
            .content_type(ContentType::xml())
            .body(wechat_v2::SUCCESS_ANSWER),
        // APIv3: the status decides; 204 carries no body.
        Provider::WechatV3 => HttpResponse::NoContent().finish(),
    }
}

/// The provider's failure answer: it makes the provider resend later. `message` is a
/// short, secret-free reason.
pub fn failure(provider: Provider, status: StatusCode, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    match provider {
        Provider::Alipay => response
            .content_type(ContentType::plaintext())
            .body(alipay::FAIL_ANSWER),
        Provider::WechatV2 => response
            .content_type(ContentType::xml())
            .body(wechat_v2::fail_answer(message)),
        Provider::WechatV3 => response
            .content_type(ContentType::json())
            .body(wechat_v3::fail_body(message)),
    }
}
