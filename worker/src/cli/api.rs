//! `payhook-admin`'s client of the worker's admin API: the bearer token, the URLs, and
//! answers turned into the same values the direct commands produce (so both print
//! alike) or into errors a person can act on.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long one request may take (a parked-queue walk included).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The token: the file named by `--token-file` or `PAYHOOK_ADMIN_TOKEN_FILE`, else
/// `PAYHOOK_ADMIN_TOKEN`. Surrounding whitespace (a file's newline) is not part of it.
pub fn token(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let file = file.map(Path::to_owned).or_else(|| {
        std::env::var_os("PAYHOOK_ADMIN_TOKEN_FILE")
            .filter(|f| !f.is_empty())
            .map(Into::into)
    });
    let text = match file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the admin token from {}", path.display()))?,
        None => std::env::var("PAYHOOK_ADMIN_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "the admin API needs a token: set PAYHOOK_ADMIN_TOKEN, or name a file with \
                 --token-file / PAYHOOK_ADMIN_TOKEN_FILE"
            )
        })?,
    };
    let token = text.trim();
    if token.is_empty() {
        bail!("the admin token is empty");
    }
    Ok(SecretString::from(token.to_owned()))
}

/// The admin API at one base URL, with one token.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
}

impl Api {
    pub fn new(base: &str, token: SecretString) -> anyhow::Result<Self> {
        let base = Url::parse(base).with_context(|| format!("--api {base:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--api {base}: an http:// or https:// URL is needed");
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("payhook-admin/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base, token })
    }

    /// The URL of `segments` (each percent-encoded) under the base.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let url = self.url(segments, query);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let answer = request
            .send()
            .await
            .with_context(|| format!("{method} {}: the admin API did not answer", url.path()))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let error = json["error"].as_str().unwrap_or("").to_owned();
        match status {
            StatusCode::UNAUTHORIZED => bail!(
                "the admin API refused the token (401): it is not one of the worker's \
                 worker.admin_tokens"
            ),
            StatusCode::FORBIDDEN => bail!("the token may not do this (403): {error}"),
            s if s.is_server_error() => {
                bail!("{method} {}: the worker answered {s}: {error}", url.path())
            }
            _ => Ok((status, json)),
        }
    }

    /// `GET`, expecting 200 and a `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let (status, json) = self.call(Method::GET, segments, query, None).await?;
        expect_ok(status, json)
    }

    /// `GET`, expecting 200 and a `T`, or 404 (`None`).
    pub async fn get_found<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> anyhow::Result<Option<T>> {
        let (status, json) = self.call(Method::GET, segments, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_ok(status, json).map(Some)
    }

    /// `POST` without a body, expecting 200 and a `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let (status, json) = self.call(Method::POST, segments, query, None).await?;
        expect_ok(status, json)
    }

    /// `POST` without a body, expecting 200 and a `T`, or 404 (`None`).
    pub async fn post_found<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> anyhow::Result<Option<T>> {
        let (status, json) = self.call(Method::POST, segments, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_ok(status, json).map(Some)
    }

    /// `POST` without a body; the status.
    pub async fn post_status(&self, segments: &[&str]) -> anyhow::Result<u16> {
        let (status, _) = self.call(Method::POST, segments, &[], None).await?;
        Ok(status.as_u16())
    }

    /// `POST` of a JSON body; the status and the answer.
    pub async fn send_json<B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = serde_json::to_vec(body)?;
        let (status, json) = self.call(Method::POST, segments, &[], Some(body)).await?;
        Ok((status.as_u16(), json))
    }
}

fn expect_ok<T: DeserializeOwned>(
    status: StatusCode,
    json: serde_json::Value,
) -> anyhow::Result<T> {
    if status != StatusCode::OK {
        let error = json["error"].as_str().unwrap_or("").to_owned();
        bail!("the admin API answered {status}: {error}");
    }
    serde_json::from_value(json).context("the admin API's answer is not what payhook-admin expects")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_under_the_base() {
        let api = Api::new(
            "http://worker:8081/admin/",
            SecretString::from("t".to_owned()),
        )
        .expect("api");
        let url = api.url(
            &["payments", "alipay", "m 1", "O/1?x"],
            &[("limit", "5".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://worker:8081/admin/payments/alipay/m%201/O%2F1%3Fx?limit=5"
        );
        assert!(Api::new("ftp://x", SecretString::from("t".to_owned())).is_err());
        assert!(Api::new("not a url", SecretString::from("t".to_owned())).is_err());
    }
}
