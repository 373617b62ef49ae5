//! The GitHub sign-in preset (issue 4) against a stand-in for GitHub: a
//! small local server speaking GitHub's OAuth web flow (authorize, then
//! `POST /login/oauth/access_token` with the PKCE verifier) and `GET /user`.
//! GitHub itself cannot run here; the stand-in checks what GitHub checks
//! (client credentials, the code, the S256 PKCE verifier) so a wrong
//! request fails as it would there. OpenID Connect is tested against a real
//! provider in oidc_login.rs.

mod support;

use base64::Engine as _;
use sha2::Digest as _;
use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use support::browser::Browser;
use support::http_backend::{read_request, write_response};
use support::oidc::{percent_decode, query_parameter};
use support::{NimbusServer, OWNER_TOKEN, ServerOptions, free_port};

const CLIENT_ID: &str = "Iv1.stand-in";
const CLIENT_SECRET: &str = "stand-in-client-secret-0123456789";

/// code -> (PKCE challenge, GitHub user id)
type Codes = Arc<Mutex<HashMap<String, (String, u64)>>>;

/// Serves GitHub's endpoints; the user id of each authorization comes from
/// `login_as` at the time of the authorize request.
fn stand_in(login_as: Arc<Mutex<u64>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let codes: Codes = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(request) = read_request(&mut BufReader::new(stream.try_clone().expect("clone")))
            else {
                continue;
            };
            let (status, headers, body) = answer(&request, &codes, &login_as);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let _ = write_response(&mut stream, status, "Stand-in", &headers, body.as_bytes());
        }
    });
    base
}

fn answer(
    request: &support::http_backend::HttpRequest,
    codes: &Codes,
    login_as: &Arc<Mutex<u64>>,
) -> (u16, Vec<(String, String)>, String) {
    let url = format!("http://x{}", request.target);
    match (request.method.as_str(), request.path()) {
        ("GET", "/login/oauth/authorize") => {
            let get = |name: &str| query_parameter(&url, name).unwrap_or_default();
            assert_eq!(get("client_id"), CLIENT_ID);
            assert_eq!(get("code_challenge_method"), "S256");
            let code = format!("code-{}", codes.lock().expect("lock").len());
            let user = *login_as.lock().expect("lock");
            codes
                .lock()
                .expect("lock")
                .insert(code.clone(), (get("code_challenge"), user));
            let location = format!("{}?code={code}&state={}", get("redirect_uri"), get("state"));
            (302, vec![("Location".into(), location)], String::new())
        }
        ("POST", "/login/oauth/access_token") => {
            let form: HashMap<String, String> = String::from_utf8_lossy(&request.body)
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (percent_decode(k), percent_decode(&v.replace('+', " "))))
                .collect();
            let basic = request
                .header("authorization")
                .unwrap_or_default()
                .to_owned();
            let credentials = base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
            let authenticated = basic == format!("Basic {credentials}")
                || (form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                    && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET));
            let code = form.get("code").cloned().unwrap_or_default();
            let entry = codes.lock().expect("lock").remove(&code);
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            match entry {
                Some((expected, user)) if authenticated && expected == challenge => {
                    let token = format!("gho_user_{user}");
                    let body = serde_json::json!({
                        "access_token": token, "token_type": "bearer", "scope": "read:user"
                    });
                    (
                        200,
                        vec![("Content-Type".into(), "application/json".into())],
                        body.to_string(),
                    )
                }
                _ => (
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    r#"{"error":"bad_verification_code"}"#.into(),
                ),
            }
        }
        ("GET", "/user") => {
            let token = request.header("authorization").unwrap_or_default();
            match token
                .strip_prefix("Bearer gho_user_")
                .and_then(|id| id.parse::<u64>().ok())
            {
                Some(id) => {
                    let body = serde_json::json!({ "id": id, "login": format!("octo{id}"), "email": null });
                    (
                        200,
                        vec![("Content-Type".into(), "application/json".into())],
                        body.to_string(),
                    )
                }
                None => (401, Vec::new(), r#"{"message":"Bad credentials"}"#.into()),
            }
        }
        _ => (404, Vec::new(), String::new()),
    }
}

#[test]
fn github_sign_in_links_only_known_identities() {
    let login_as = Arc::new(Mutex::new(4242u64));
    let github = stand_in(login_as.clone());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = NimbusServer::start_with(ServerOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![
            ("NIMBUS_PUBLIC_URL".into(), base.clone()),
            ("NIMBUS_GITHUB_CLIENT_ID".into(), CLIENT_ID.into()),
            ("NIMBUS_GITHUB_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("NIMBUS_GITHUB_URL".into(), github.clone()),
            ("NIMBUS_GITHUB_API_URL".into(), github.clone()),
        ],
        ..ServerOptions::default()
    });
    let owner = format!("Bearer {OWNER_TOKEN}");
    let created = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner),
        Some(&serde_json::json!({ "name": "octo" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let linked = server.request(
        "PUT",
        "/api/v1/users/octo/identities/github/4242",
        Some(&owner),
        None,
    );
    assert!(
        linked.status == 204 || linked.status == 200 || linked.status == 201,
        "{}",
        linked.body
    );

    let sign_in = |browser: &mut Browser| {
        let start = browser.get("/login/github");
        assert_eq!(start.status, 303, "{}\n{}", start.body, server.logs());
        assert!(
            start.location().starts_with(&github),
            "{}",
            start.location()
        );
        let authorize = browser.get(start.location());
        assert_eq!(authorize.status, 302, "{}", authorize.body);
        browser.get(authorize.location())
    };

    let mut browser = Browser::new(&base);
    let done = sign_in(&mut browser);
    assert_eq!(done.status, 303, "{}\n{}", done.body, server.logs());
    let account = browser.get("/account");
    assert!(
        account.body.contains("<strong id=\"user\">octo</strong>"),
        "{}",
        account.body
    );

    // A GitHub user nobody linked or invited is refused.
    *login_as.lock().expect("lock") = 7;
    let mut stranger = Browser::new(&base);
    let refused = sign_in(&mut stranger);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("No Nimbus account is linked"),
        "{}",
        refused.body
    );
    assert_eq!(stranger.signed_in_as(), None);
}
