//! The one error type of the HTTP API, always sent in the OpenAI shape
//! `{"error": {"message", "type", "param", "code"}}`.

use hyper::StatusCode;
use serde_json::json;

use crate::engines::llm::GenerationError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type.
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// Machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for invalid input.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_string()),
            ..ApiError::invalid(message)
        }
    }

    /// 400 `context_length_exceeded`.
    pub fn context_length(prompt: usize, ctx: usize, param: &str) -> ApiError {
        ApiError {
            code: Some("context_length_exceeded"),
            param: Some(param.to_string()),
            ..ApiError::invalid(format!(
                "This model's maximum context length is {ctx} tokens, but the prompt has {prompt} tokens. \
                 Shorten the prompt (at least one token must remain for the answer)."
            ))
        }
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
            )
        }
    }

    /// 403 from the browser policy: `header` named an origin or host this server does not
    /// serve.
    pub fn refused_by_policy(
        header: &str,
        value: &str,
        flag: &str,
        code: &'static str,
    ) -> ApiError {
        ApiError {
            code: Some(code),
            param: None,
            ..ApiError::forbidden(format!(
                "{header} '{value}' is not allowed; start the server with {flag} to allow it"
            ))
        }
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("not_found"),
            ..ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message)
        }
    }

    /// 405.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError {
            code: Some("method_not_allowed"),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                format!("Method {method} is not allowed for {path}"),
            )
        }
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("conflict"),
            ..ApiError::new(StatusCode::CONFLICT, "conflict_error", message)
        }
    }

    /// 413.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            code: Some("request_too_large"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("request body too large (limit {limit} bytes)"),
            )
        }
    }

    /// 408: a request body stopped arriving, or arrived too slowly.
    pub fn body_timeout(received: usize, limits: &crate::http::limits::Limits) -> ApiError {
        ApiError {
            code: Some("request_timeout"),
            ..ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "the request body arrived too slowly ({received} bytes received; the server \
                     allows pauses of at most {} s and at least {} bytes/s on average)",
                    limits.body_timeout.as_secs_f64(),
                    limits.min_body_rate
                ),
            )
        }
    }

    /// 503: unfinished request bodies already hold the memory allowed for them.
    pub fn bodies_busy() -> ApiError {
        ApiError {
            code: Some("server_busy"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "The server is busy receiving other requests. Retry shortly.",
            )
        }
    }

    /// 503: the server has as many connections open as it allows.
    pub fn too_many_connections() -> ApiError {
        ApiError {
            code: Some("too_many_connections"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "The server has too many open connections. Retry shortly.",
            )
        }
    }

    /// 429 with `Retry-After`.
    pub fn queue_full(queue: usize) -> ApiError {
        ApiError {
            code: Some("queue_full"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("The server is busy: {queue} requests are already waiting. Retry shortly."),
            )
        }
    }

    /// 503 while no model is loaded.
    pub fn no_model() -> ApiError {
        ApiError {
            code: Some("model_not_loaded"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "No model loaded",
            )
        }
    }

    /// 503 while the first model loads.
    pub fn loading() -> ApiError {
        ApiError {
            code: Some("model_loading"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "The model is still loading. Retry shortly.",
            )
        }
    }

    /// 503 once the server has been told to stop: running requests finish, new ones go
    /// elsewhere.
    pub fn draining() -> ApiError {
        ApiError {
            code: Some("server_draining"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "The server is shutting down and takes no new requests. Retry on another replica.",
            )
        }
    }

    /// 503 during a model swap.
    pub fn swapping() -> ApiError {
        ApiError {
            code: Some("model_swap_in_progress"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "Model swap in progress",
            )
        }
    }

    /// The answer to a job the engine refused or could not finish; `param` is the request
    /// field that holds the prompt (`messages` or `prompt`).
    pub fn generation(e: &GenerationError, param: &str) -> ApiError {
        match e {
            GenerationError::PromptTooLong { prompt, ctx } => {
                ApiError::context_length(*prompt, *ctx, param)
            }
            GenerationError::EmptyPrompt => ApiError::invalid_param(param, e.to_string()),
            GenerationError::Model(_) | GenerationError::Internal(_) => {
                ApiError::internal(e.to_string())
            }
        }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_errors_map_to_their_statuses() {
        let e = ApiError::generation(
            &GenerationError::PromptTooLong { prompt: 9, ctx: 8 },
            "prompt",
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = ApiError::generation(&GenerationError::EmptyPrompt, "messages");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("messages"));
        let model = trillim_core::model::ModelError::ContextFull;
        for g in [
            GenerationError::Model(model),
            GenerationError::Internal("a step panicked"),
        ] {
            let e = ApiError::generation(&g, "prompt");
            assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(e.kind, "server_error");
            assert_eq!(e.message, g.to_string());
        }
    }
}
