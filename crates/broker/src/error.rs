use brook_protocol::ResponseCode;

/// Why a request failed, in the domain's terms. Each maps to one protocol response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error("stream {0:?} does not exist")]
    StreamDoesNotExist(String),
    #[error("stream {0:?} already exists")]
    StreamAlreadyExists(String),
    #[error("stream {0:?} is not available: {1}")]
    StreamNotAvailable(String, String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("subscription id {0} already exists on this connection")]
    SubscriptionIdAlreadyExists(u8),
    #[error("subscription id {0} does not exist on this connection")]
    SubscriptionIdDoesNotExist(u8),
    #[error("publisher id {0} does not exist on this connection")]
    PublisherDoesNotExist(u8),
    #[error("no offset stored for reference {0:?}")]
    NoOffset(String),
    #[error("access to {0:?} refused")]
    AccessRefused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> ResponseCode {
        match self {
            Error::StreamDoesNotExist(_) => ResponseCode::STREAM_DOES_NOT_EXIST,
            Error::StreamAlreadyExists(_) => ResponseCode::STREAM_ALREADY_EXISTS,
            Error::StreamNotAvailable(..) => ResponseCode::STREAM_NOT_AVAILABLE,
            Error::PreconditionFailed(_) => ResponseCode::PRECONDITION_FAILED,
            Error::SubscriptionIdAlreadyExists(_) => ResponseCode::SUBSCRIPTION_ID_ALREADY_EXISTS,
            Error::SubscriptionIdDoesNotExist(_) => ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST,
            Error::PublisherDoesNotExist(_) => ResponseCode::PUBLISHER_DOES_NOT_EXIST,
            Error::NoOffset(_) => ResponseCode::NO_OFFSET,
            Error::AccessRefused(_) => ResponseCode::ACCESS_REFUSED,
            Error::Internal(_) => ResponseCode::INTERNAL_ERROR,
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another broker")]
    Locked(std::path::PathBuf),
}
