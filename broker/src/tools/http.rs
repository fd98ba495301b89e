//! `http.fetch`: the SSRF-proof fetcher of [`crate::http`] as a tool.
//!
//! An external write: it reaches outside the node (whatever the method, a
//! request is an effect on someone else's server), so the kill switch stops
//! it and the default policy wants an approval. Its outcome is recorded by
//! idempotency key; a failure after the request may have been sent
//! ([`HttpError::may_have_been_sent`]) is in doubt, never retried silently.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use mxp_actors::gate::Grant;
use mxp_actors::{ArgSchema, EffectClass, Tool, ToolContext, ToolError};
use serde_json::{Value, json};

use crate::broker::{Act, ActError, ActFuture, Broker, ToolLimits};
use crate::http::{FetchRequest, FetchResponse, HttpError, HttpFetcher};

/// The tool's name.
pub const HTTP_FETCH: &str = "http.fetch";

/// `http.fetch` over one fetcher (its allowlist, address classes, methods
/// and limits).
pub struct HttpTool {
    fetcher: HttpFetcher,
    broker: Arc<Broker>,
    limits: ToolLimits,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTool")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl HttpTool {
    /// The tool. `limits.timeout` should exceed the fetcher's own
    /// `timeout`, which ends the exchange first and says whether the
    /// request may have been sent; past the broker's limit it is in doubt.
    pub fn new(fetcher: HttpFetcher, broker: Arc<Broker>, limits: ToolLimits) -> HttpTool {
        HttpTool {
            fetcher,
            broker,
            limits,
        }
    }
}

/// How a fetch error reaches the caller: a refusal of the rules is
/// `Refused`, bad arguments `Malformed`, a failure after the request may
/// have reached the server `InDoubt`, the rest `Failed`.
pub(crate) fn act_error(e: HttpError) -> ActError {
    let text = e.to_string();
    if e.may_have_been_sent() {
        return ActError::InDoubt(text);
    }
    match e {
        HttpError::InvalidRequest(_) | HttpError::InvalidUrl { .. } => ActError::Malformed(text),
        HttpError::SchemeNotAllowed(_)
        | HttpError::UserInfoNotAllowed
        | HttpError::HostNotAllowed { .. }
        | HttpError::HostRefused(_)
        | HttpError::AddressRefused { .. }
        | HttpError::MethodNotAllowed(_)
        | HttpError::HeaderNotAllowed { .. }
        | HttpError::TooManyHeaders { .. }
        | HttpError::RequestBodyTooLarge { .. } => ActError::Refused(text),
        // Resolution, connection, settings: nothing was sent.
        _ => ActError::Failed(text),
    }
}

fn output(r: FetchResponse) -> Value {
    let headers: Vec<Value> = r.headers.into_iter().map(|(n, v)| json!([n, v])).collect();
    let mut out = json!({
        "status": r.status,
        "headers": headers,
        "final_url": r.final_url,
    });
    let body = if r.body_base64 { "body_base64" } else { "body" };
    if let Some(o) = out.as_object_mut() {
        o.insert(body.into(), Value::String(r.body));
    }
    out
}

impl Act for HttpTool {
    fn act<'x>(&'x self, args: &'x Value) -> ActFuture<'x> {
        Box::pin(async move {
            let req = FetchRequest::from_json(args).map_err(act_error)?;
            let resp = self.fetcher.fetch(req).await.map_err(act_error)?;
            Ok(output(resp))
        })
    }
}

impl Tool for HttpTool {
    fn name(&self) -> &str {
        HTTP_FETCH
    }

    fn effect(&self) -> EffectClass {
        EffectClass::ExternalWrite
    }

    fn args(&self) -> ArgSchema {
        ArgSchema::Object
    }

    fn execute<'a>(
        &'a self,
        _ctx: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            self.broker
                .run(self.name(), self.effect(), &self.limits, &grant, self)
                .await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::addr::AddrClass;

    #[test]
    fn errors_map_to_what_may_have_happened() {
        let refused = [
            HttpError::HostNotAllowed {
                host: "x".into(),
                port: 80,
            },
            HttpError::AddressRefused {
                host: "x".into(),
                addr: "127.0.0.1".parse().unwrap(),
                class: AddrClass::Loopback,
            },
            HttpError::MethodNotAllowed("POST".into()),
            HttpError::UserInfoNotAllowed,
        ];
        for e in refused {
            assert!(matches!(act_error(e), ActError::Refused(_)));
        }
        assert!(matches!(
            act_error(HttpError::InvalidRequest("x".into())),
            ActError::Malformed(_)
        ));
        assert!(matches!(
            act_error(HttpError::Connect("refused".into())),
            ActError::Failed(_)
        ));
        assert!(matches!(
            act_error(HttpError::Timeout { sent: false }),
            ActError::Failed(_)
        ));
        for sent in [
            HttpError::Timeout { sent: true },
            HttpError::Transport {
                sent: true,
                reason: "reset".into(),
            },
            HttpError::BodyTooLarge { limit: 1 },
            HttpError::TooManyRedirects { max: 1 },
        ] {
            assert!(matches!(act_error(sent), ActError::InDoubt(_)));
        }
    }

    #[test]
    fn a_body_that_is_not_text_is_named_base64() {
        let r = FetchResponse {
            status: 200,
            headers: vec![("a".into(), "b".into())],
            body: "AAE=".into(),
            body_base64: true,
            final_url: "http://x/".into(),
        };
        let v = output(r);
        assert_eq!(v["body_base64"], "AAE=");
        assert!(v.get("body").is_none());
        assert_eq!(v["headers"][0], json!(["a", "b"]));
    }
}
