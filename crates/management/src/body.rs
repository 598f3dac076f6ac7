//! Request bodies as RabbitMQ reads them: JSON whatever the Content-Type says (clients send
//! none), an empty body or `null` meaning `{}`.

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub(crate) fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let trimmed = body.trim_ascii();
    let value: serde_json::Value = if trimmed.is_empty() || trimmed == b"null" {
        serde_json::json!({})
    } else {
        serde_json::from_slice(trimmed).map_err(|_| ApiError::BadRequest("not_json".into()))?
    };
    let value = match value {
        serde_json::Value::Bool(_) | serde_json::Value::Null => serde_json::json!({}),
        serde_json::Value::String(_) => {
            return Err(ApiError::BadRequest(
                "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?".into(),
            ));
        }
        serde_json::Value::Object(_) => value,
        _ => return Err(ApiError::BadRequest("not_json".into())),
    };
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(e.to_string()))
}
