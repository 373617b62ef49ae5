//! A browser without a screen, for the sign-in pages: it keeps cookies
//! (by name, honouring `Max-Age=0` deletions), never follows redirects, and
//! sends forms as a browser would, with the page's own origin.

use std::collections::BTreeMap;

/// One answer.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn location(&self) -> &str {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location in a {} answer:\n{}", self.status, self.body))
    }

    /// The value of the hidden form field `name` (the first one).
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no hidden field {name:?} in:\n{}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').expect("a closing quote") + start;
        self.body[start..end].to_owned()
    }
}

/// Cookies and an HTTP client.
pub struct Browser {
    base_url: String,
    agent: ureq::Agent,
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(base_url: &str) -> Browser {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .new_agent();
        Browser {
            base_url: base_url.trim_end_matches('/').to_owned(),
            agent,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Send a request with the jar's cookies and `extra` headers, and keep
    /// the cookies it sets.
    pub fn send(
        &mut self,
        method: &str,
        path_or_url: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Page {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base_url)
        };
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(cookies) = self.cookie_header() {
            builder = builder.header("Cookie", cookies);
        }
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                builder = builder.header("Content-Type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = builder.body(bytes).expect("a well-formed request");
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|error| panic!("{method} {url} failed: {error}"));
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let page = Page {
            status: response.status().as_u16(),
            headers,
            body,
        };
        for set in page.set_cookies() {
            let first = set.split(';').next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else {
                continue;
            };
            let deleted = set
                .split(';')
                .any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            if deleted || value.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        page
    }

    /// Who `/account` says is signed in (`None`: it sends to sign-in).
    pub fn signed_in_as(&mut self) -> Option<String> {
        let page = self.get("/account");
        match page.status {
            200 => {
                let marker = "<strong id=\"user\">";
                let start = page.body.find(marker).expect("the user name") + marker.len();
                let end = page.body[start..].find('<').expect("end") + start;
                Some(page.body[start..end].to_owned())
            }
            303 => None,
            other => panic!("unexpected {other} from /account:\n{}", page.body),
        }
    }

    pub fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, &[], None)
    }

    /// Post a form the way a browser on this site does (with its Origin).
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.base_url.clone();
        self.post_form_with(path, fields, &[("Origin", &origin)])
    }

    pub fn post_form_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Page {
        let body = serde_urlencoded_pairs(fields);
        self.send(
            "POST",
            path,
            extra,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
    }
}

/// `application/x-www-form-urlencoded` encoding.
fn serde_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A new invitation's path (`/invite/<secret>`), made by the owner through
/// the API, optionally granting `access` on `repo`.
pub fn invite(server: &super::NimbusServer, grant: Option<(&str, &str)>) -> String {
    let body = match grant {
        Some((repo, access)) => serde_json::json!({ "repo": repo, "access": access }),
        None => serde_json::json!({}),
    };
    let owner = format!("Bearer {}", super::OWNER_TOKEN);
    let response = server.request("POST", "/api/v1/invitations", Some(&owner), Some(&body));
    assert_eq!(response.status, 201, "{}", response.body);
    let url = response.json()["url"].as_str().expect("url").to_owned();
    url[url.find("/invite/").expect("an invitation path")..].to_owned()
}

/// Accept `invitation` as `name` with `password` in `browser`.
pub fn accept(browser: &mut Browser, invitation: &str, name: &str, password: &str) -> Page {
    let form = browser.get(invitation);
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.hidden("csrf");
    browser.post_form(
        invitation,
        &[("csrf", &csrf), ("user", name), ("password", password)],
    )
}
