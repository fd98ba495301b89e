//! The client: one reqwest client, no proxy, checked redirects, bounded
//! response.

use super::HttpError;
use super::policy::{self, HttpSettings};
use super::resolve::{Filtering, ResolveRefused, Resolver};
use base64::Engine as _;
use std::error::Error as StdError;
use std::sync::Arc;

/// One request, as a tool's arguments give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The URL (`http` or `https`).
    pub url: String,
    /// The method (default `GET`).
    pub method: reqwest::Method,
    /// Request headers, in order.
    pub headers: Vec<(String, String)>,
    /// The request body, if any.
    pub body: Option<String>,
}

/// The response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The status code.
    pub status: u16,
    /// Response headers, in order (values that are not UTF-8 are lossily decoded).
    pub headers: Vec<(String, String)>,
    /// The body: UTF-8 text, or standard base64 if `body_base64`.
    pub body: String,
    /// Whether `body` is base64 (the body was not UTF-8).
    pub body_base64: bool,
    /// The URL answered last (after redirects, if they were followed).
    pub final_url: String,
}

impl FetchRequest {
    /// Reads `{"url": str, "method"?: str, "headers"?: {name: str}, "body"?: str}`.
    /// Only shape is checked here; [`HttpFetcher::fetch`] applies the limits.
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidRequest`] naming the field that is missing or mistyped.
    pub fn from_json(args: &serde_json::Value) -> Result<FetchRequest, HttpError> {
        let bad = |m: &str| HttpError::InvalidRequest(m.to_owned());
        let obj = args
            .as_object()
            .ok_or_else(|| bad("the arguments are not an object"))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["url", "method", "headers", "body"].contains(&k.as_str()))
        {
            return Err(HttpError::InvalidRequest(format!(
                "unknown field {:?}",
                k.chars().take(64).collect::<String>()
            )));
        }
        let url = obj
            .get("url")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("\"url\" is required and is a string"))?;
        if url.len() > policy::MAX_URL_LEN {
            return Err(bad("\"url\" is longer than 8 KiB"));
        }
        let method = match obj.get("method") {
            None => reqwest::Method::GET,
            Some(v) => {
                let m = v.as_str().ok_or_else(|| bad("\"method\" is a string"))?;
                reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| bad("\"method\" is not an HTTP method"))?
            }
        };
        let headers = match obj.get("headers") {
            None => Vec::new(),
            Some(v) => v
                .as_object()
                .ok_or_else(|| bad("\"headers\" is an object of strings"))?
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| bad("\"headers\" values are strings"))
                })
                .collect::<Result<_, _>>()?,
        };
        let body = match obj.get("body") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| bad("\"body\" is a string"))?
                    .to_owned(),
            ),
        };
        Ok(FetchRequest {
            url: url.to_owned(),
            method,
            headers,
            body,
        })
    }
}

/// A redirect hop the policy refused, carried through reqwest's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectStop(HttpError);

/// The `http.fetch` core: settings plus one reused client.
pub struct HttpFetcher {
    client: reqwest::Client,
    settings: Arc<HttpSettings>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn tls_config() -> Result<rustls::ClientConfig, HttpError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Settings(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl HttpFetcher {
    /// Builds the client: no proxy (environment ignored), the filtering
    /// resolver over `resolver`, rustls on ring with the Mozilla roots,
    /// HTTP/1.1, the settings' timeouts and redirect policy.
    ///
    /// # Errors
    ///
    /// [`HttpError::Settings`] if the client cannot be built.
    pub fn new(settings: HttpSettings, resolver: impl Resolver) -> Result<HttpFetcher, HttpError> {
        let settings = Arc::new(settings);
        let redirect = match settings.redirects {
            None => reqwest::redirect::Policy::none(),
            Some(max) => {
                let s = Arc::clone(&settings);
                reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() > usize::from(max) {
                        return attempt.error(RedirectStop(HttpError::TooManyRedirects { max }));
                    }
                    match policy::check_parsed(attempt.url(), None, &s) {
                        Ok(()) => attempt.follow(),
                        Err(reason) => {
                            let to = attempt.url().as_str().chars().take(256).collect();
                            attempt.error(RedirectStop(HttpError::RedirectRefused {
                                to,
                                reason: Box::new(reason),
                            }))
                        }
                    }
                })
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect)
            .dns_resolver(Filtering {
                inner: Arc::new(resolver),
                allowed: settings.allowed_classes.clone().into(),
            })
            .tls_backend_preconfigured(tls_config()?)
            .http1_only()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| HttpError::Settings(e.to_string()))?;
        Ok(HttpFetcher { client, settings })
    }

    /// The settings this fetcher enforces.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Checks `req` against the settings, then fetches it.
    ///
    /// # Errors
    ///
    /// The [`HttpError`] naming the rule broken or the failure;
    /// [`HttpError::may_have_been_sent`] says whether the server may have
    /// acted on the request.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the connection; the request may already
    /// have reached the server.
    pub async fn fetch(&self, req: FetchRequest) -> Result<FetchResponse, HttpError> {
        let s = &*self.settings;
        let url = policy::check_url(&req.url, s)?;
        policy::check_method(&req.method, s)?;
        policy::check_request_headers(&req.headers, s)?;
        policy::check_body(req.body.as_ref().map_or(0, String::len), s)?;
        let mut builder = self.client.request(req.method, url);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let request = builder
            .build()
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let mut resp = self.client.execute(request).await.map_err(map_error)?;
        policy::check_response_headers(resp.headers(), s)?;
        let limit = s.max_response_body;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(HttpError::BodyTooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_error)? {
            if body.len() + chunk.len() > limit {
                return Err(HttpError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (body, body_base64) = match String::from_utf8(body) {
            Ok(text) => (text, false),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                true,
            ),
        };
        Ok(FetchResponse {
            status: resp.status().as_u16(),
            headers,
            body,
            body_base64,
            final_url: resp.url().to_string(),
        })
    }
}

/// Finds our own refusal in reqwest's error chain, else names the failure
/// and whether the request may have been sent.
fn map_error(e: reqwest::Error) -> HttpError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<ResolveRefused>() {
            return HttpError::from_refusal(&r.host, r.refusal.clone());
        }
        if let Some(RedirectStop(inner)) = err.downcast_ref::<RedirectStop>() {
            return inner.clone();
        }
        source = err.source();
    }
    let sent = !e.is_connect();
    if e.is_timeout() {
        HttpError::Timeout { sent }
    } else if !sent {
        HttpError::Connect(chain(&e))
    } else {
        HttpError::Transport {
            sent,
            reason: chain(&e),
        }
    }
}

fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
