//! The few static files pages load, compiled into the binary: the small
//! script that enhances pages, and the bundled code editor (see
//! `web/editor/`). Served at `/-/assets/{name}`; pages link them with a
//! `?v=` of their content hash so they can be cached for good.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "nimbus.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/nimbus.js"),
    },
    // CodeMirror 6, built by `scripts/build-editor` from `web/editor/`.
    Asset {
        name: "editor.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/editor.js"),
    },
    Asset {
        name: "editor.js.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/editor.js.LICENSE.txt"),
    },
];

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// Each asset's content hash (hex), computed once.
fn version(asset: &Asset) -> &'static str {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let mut hasher = DefaultHasher::new();
                asset.bytes.hash(&mut hasher);
                format!("{:016x}", hasher.finish())
            })
            .collect()
    });
    let index = ASSETS
        .iter()
        .position(|known| known.name == asset.name)
        .unwrap_or(0);
    versions.get(index).map(String::as_str).unwrap_or("0")
}

/// The URL of asset `name`, versioned by its content; `None` for an
/// unknown name.
pub fn url(name: &str) -> Option<String> {
    find(name).map(|asset| format!("/-/assets/{}?v={}", asset.name, version(asset)))
}

/// `GET /-/assets/{name}`: the file, cacheable for a year (the URL changes
/// with the content), or 304 for a matching `If-None-Match`.
pub fn serve(name: &str, if_none_match: Option<&HeaderValue>) -> Response {
    let Some(asset) = find(name) else {
        return warp::reply::with_status("no such asset\n", StatusCode::NOT_FOUND).into_response();
    };
    let etag = format!("\"{}\"", version(asset));
    let fresh = if_none_match
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        warp::reply::with_status(warp::reply(), StatusCode::NOT_MODIFIED).into_response()
    } else {
        let mut response = Response::new(asset.bytes.into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_versioned_and_revalidate() {
        let url = url("nimbus.js").expect("known");
        assert!(url.starts_with("/-/assets/nimbus.js?v="), "{url}");
        assert!(super::url("nope.js").is_none());
        let response = serve("nimbus.js", None);
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()[header::ETAG].clone();
        assert_eq!(
            serve("nimbus.js", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(serve("../Cargo.toml", None).status(), StatusCode::NOT_FOUND);
    }
}
