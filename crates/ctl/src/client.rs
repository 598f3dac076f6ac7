//! The management API over HTTP: one method per verb, JSON in and out, RabbitMQ's error
//! bodies turned into [`CtlError`]s.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::CtlError;

/// Everything but unreserved characters is encoded in a path segment (`/` → `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Debug)]
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

impl Client {
    pub(crate) fn new(url: &str, user: &str, password: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Client {
            agent: config.into(),
            base: url.trim_end_matches('/').to_owned(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        }
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value, CtlError> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.authorization)
            .call();
        self.answer(path, response)
    }

    pub(crate) fn put(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        let response = self
            .agent
            .put(&self.url(path))
            .header("Authorization", &self.authorization)
            .content_type("application/json")
            .send(body.to_string());
        self.answer(path, response)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        let response = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.authorization)
            .content_type("application/json")
            .send(body.to_string());
        self.answer(path, response)
    }

    pub(crate) fn delete(&self, path: &str, reason: Option<&str>) -> Result<Value, CtlError> {
        let mut request = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &self.authorization);
        if let Some(reason) = reason {
            request = request.header("X-Reason", reason);
        }
        self.answer(path, request.call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CtlError> {
        let mut response =
            response.map_err(|e| CtlError::Unreachable(self.base.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| CtlError::Unreachable(self.base.clone(), e.to_string()))?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let reason = match &body["reason"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Err(CtlError::Api {
            status,
            path: path.to_owned(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_encoded() {
        assert_eq!(super::seg("/"), "%2F");
        assert_eq!(
            super::seg("a b->c:1"),
            "a%20b%2D%3Ec%3A1".replace("%2D", "-")
        );
    }
}
