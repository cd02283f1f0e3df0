//! The one error type of the HTTP edge, mapped once to the contract's
//! `{"error": CODE, "error_description": text}` with `Content-Type: application/json`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use statuslist_store::StoreError;

/// Every non-2xx answer of the worker. Variants carry the client-facing text; internal
/// details are logged where they happen, never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// `/revoke-batch`: entry N is absent or another client's, so nothing was revoked.
    #[error(
        "Unable to revoke every entry of the batch: entries[{0}] is absent or another client's; nothing was revoked"
    )]
    ForbiddenEntry(usize),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    NotAcceptable(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Internal(&'static str),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("Service is temporarily unavailable")]
    Unavailable,
}

// The contract's strings, in one place.
pub const CONTENT_TYPE: &str = "Content-Type header must be application/jwt";
pub const BODY_TOO_LARGE: &str = "Request body must not exceed 16384 bytes";
pub const DECODE: &str = "Error decoding JWT or converting to JSON";
pub const NO_KID: &str = "No Key ID in Header";
pub const INVALID_KID: &str = "Invalid Key ID in Header";
pub const NO_TYP: &str = "No Type in Header";
pub const INVALID_TYP: &str = "Invalid Type in Header";
pub const NO_ALG: &str = "No Algorithm in Header";
pub const INVALID_ALG: &str = "Invalid Algorithm in Header";
pub const NO_ISS: &str = "No Issuer in Payload";
pub const UNKNOWN_CLIENT: &str = "JWT has non-matching Client ID";
pub const BAD_SIGNATURE: &str = "JWT has non-verified signature";
pub const NO_IAT: &str = "No iat in Payload";
pub const INVALID_IAT: &str = "Invalid iat in Payload";
pub const NO_JTI: &str = "No jti in Payload";
pub const INVALID_JTI: &str = "Invalid jti in Payload";
pub const NO_STATUS_EXPIRY: &str = "No Status Expiry in Payload";
pub const INVALID_STATUS_EXPIRY: &str = "Status Expiry in Payload must be a non negative number and represent a future expiry date no more than 1 year from now";
pub const IDEMPOTENCY_CHANGED: &str = "Detected invalid changes between idempotent requests, unable to proceed. Please generate a new request.";
pub const CONCURRENT: &str =
    "Multiple concurrent idempotent requests in progress. Please retry after a short delay.";
pub const NO_IDX: &str = "No Index in Payload";
pub const INVALID_IDX: &str = "Index must be a valid non-negative integer";
pub const NO_URI: &str = "No valid URI in Payload";
pub const INVALID_URI: &str = "Invalid URI format in payload";
pub const CANNOT_REVOKE: &str = "Unable to revoke the specified status list entry";
pub const CANNOT_SUSPEND: &str = "Unable to suspend the specified status list entry";
pub const CANNOT_REINSTATE: &str = "Unable to reinstate the specified status list entry";
pub const SUSPENSION_DISABLED: &str =
    "Suspension is not enabled for the status lists of this client";
pub const REVOCATION_FINAL: &str =
    "Credential is revoked: revocation is final and cannot be suspended or reinstated";
pub const NO_ENTRIES: &str = "No entries in Payload";
pub const INVALID_ENTRIES: &str =
    "entries must be an array of 1 to 1000 objects, each with exactly uri and idx";
pub const BATCH_BODY_TOO_LARGE: &str = "Request body must not exceed 262144 bytes";

pub const ISSUE_FAILED: &str = "Unable to successfully issue a status";
pub const REVOKE_FAILED: &str = "Unable to revoke the status list entry";
pub const SUSPEND_FAILED: &str = "Unable to suspend the status list entry";
pub const REINSTATE_FAILED: &str = "Unable to reinstate the status list entry";
pub const LIST_NOT_FOUND: &str = "Status List not found for endpoint uri";
pub const LIST_FAILED: &str = "Unable to retrieve the status list";
pub const NOT_ACCEPTABLE_TOKEN: &str =
    "Acceptable media types: application/statuslist+jwt, application/statuslist+cwt";
pub const NOT_ACCEPTABLE_VC: &str = "Acceptable media type: application/vc+jwt";
pub const ROUTE_NOT_FOUND: &str = "Not found";
pub const NO_HISTORY: &str =
    "Historical status lists are not supported: omit the time parameter for the current list";
pub const AGGREGATION_NOT_FOUND: &str = "Status list aggregation not found";

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenEntry(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) | ApiError::ForbiddenEntry(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::NotAcceptable(_) => "NOT_ACCEPTABLE",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Internal(_) => "INTERNAL_SERVER_ERROR",
            ApiError::NotImplemented(_) => "NOT_IMPLEMENTED",
            ApiError::Unavailable => "TEMPORARILY_UNAVAILABLE",
        }
    }
}

/// What a request was doing when the store failed: names the log line and picks the
/// contract's 500 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Issue,
    Revoke,
    Suspend,
    Reinstate,
    ReadList,
}

impl Operation {
    fn failed(self) -> &'static str {
        match self {
            Operation::Issue => ISSUE_FAILED,
            Operation::Revoke => REVOKE_FAILED,
            Operation::Suspend => SUSPEND_FAILED,
            Operation::Reinstate => REINSTATE_FAILED,
            Operation::ReadList => LIST_FAILED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Issue => "issuance",
            Operation::Revoke => "revocation",
            Operation::Suspend => "suspension",
            Operation::Reinstate => "reinstatement",
            Operation::ReadList => "reading a published list",
        }
    }
}

impl ApiError {
    /// The one conversion from a store error to the contract's answer, and the one place
    /// such an error is logged: an unreachable database or a missing schema is 503 (logged
    /// once per change by the store's health, so only at debug here), a reused idempotency
    /// key with another `statusExpiry` is the client's 400, and anything else is an ERROR
    /// line and the operation's 500, which never carries the details.
    pub fn from_store(err: StoreError, op: Operation) -> Self {
        match err {
            err if err.is_unavailable() => {
                tracing::debug!(error = %err, operation = op.name(), "database unavailable");
                ApiError::Unavailable
            }
            StoreError::IdempotencyConflict => ApiError::BadRequest(IDEMPOTENCY_CHANGED),
            other => {
                tracing::error!(error = %other, "{} failed", op.name());
                ApiError::Internal(op.failed())
            }
        }
    }
}

impl From<crate::leases::IssueError> for ApiError {
    fn from(err: crate::leases::IssueError) -> Self {
        match err {
            crate::leases::IssueError::NoCapacity => ApiError::Unavailable,
            crate::leases::IssueError::Store(err) => ApiError::from_store(err, Operation::Issue),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let description = self.to_string();
        let body = Body {
            error: self.code(),
            error_description: &description,
        };
        (self.status(), Json(body)).into_response()
    }
}
