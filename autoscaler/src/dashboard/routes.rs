//! The dashboard's HTTP routes: the page (`/`), its embedded assets (`/assets/*`), the JSON
//! snapshot (`/api/pipelines`) and the event stream (`/api/events`). Nothing is fetched from
//! elsewhere: the page is plain HTML, CSS and JavaScript compiled into the binary.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
    routing::get,
};

use super::{sse::client_stream, state::Dashboard};

/// An embedded file: name under `/assets/`, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const PAGE: &str = include_str!("assets/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/favicon.svg"),
    },
];

/// The dashboard's routes, to serve alone or merge into another router.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/{*path}", get(asset))
        .route("/api/pipelines", get(pipelines))
        .route("/api/events", get(events))
        .with_state(dashboard)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

async fn pipelines(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let body = serde_json::to_vec(&dashboard.snapshot());
    match body {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to render the dashboard snapshot: {e}"),
        )
            .into_response(),
    }
}

/// Where a client resumes: the `Last-Event-ID` header a reconnecting `EventSource` sends, else
/// the `since` query parameter (a page passes its snapshot's `last_event_id`).
fn resume_point(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        return Some(id.to_owned());
    }
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .map(str::to_owned)
}

async fn events(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap, uri: Uri) -> Response {
    let subscription = dashboard.subscribe(resume_point(&headers, &uri).as_deref());
    let keep_alive = KeepAlive::new().interval(dashboard.settings().keep_alive);
    let mut response = Sse::new(client_stream(dashboard, subscription))
        .keep_alive(keep_alive)
        .into_response();
    // Reverse proxies (nginx) would otherwise buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_query_and_either_may_be_absent() {
        let mut headers = HeaderMap::new();
        let uri: Uri = "/api/events?x=1&since=e-4".parse().unwrap();
        assert_eq!(resume_point(&headers, &uri).as_deref(), Some("e-4"));
        headers.insert("last-event-id", HeaderValue::from_static("e-9"));
        assert_eq!(resume_point(&headers, &uri).as_deref(), Some("e-9"));
        let bare: Uri = "/api/events".parse().unwrap();
        assert_eq!(resume_point(&HeaderMap::new(), &bare), None);
    }
}
