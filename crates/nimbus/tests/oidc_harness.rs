//! The OpenID Connect test provider works end to end without Nimbus: a sign-in through its login
//! and consent pages yields a code that the token endpoint exchanges once (client_secret_basic
//! and PKCE S256) for an ID token naming the user and carrying the request's nonce.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use support::basic_authorization;
use support::oidc::{OidcProvider, percent_encode, query_parameter};

const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

fn json_response(response: ureq::http::Response<ureq::Body>) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_to_string()
        .expect("read the response body");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("response {status} is not JSON ({error}): {body}"));
    (status, json)
}

#[test]
fn sign_in_yields_a_code_that_exchanges_once_for_an_id_token() {
    let provider = OidcProvider::start(REDIRECT_URI);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();

    let (status, discovery) = json_response(
        agent
            .get(provider.discovery_url())
            .call()
            .expect("fetch the discovery document"),
    );
    assert_eq!(status, 200, "discovery: {discovery}");
    assert_eq!(discovery["issuer"], provider.issuer.as_str());
    let authorization_endpoint = discovery["authorization_endpoint"]
        .as_str()
        .expect("authorization_endpoint");
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("token_endpoint");

    let state = "state-0123456789";
    let nonce = "nonce-9876543210";
    let code_verifier = "verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP";
    let code_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
    let authorization_url = format!(
        "{authorization_endpoint}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={code_challenge}&code_challenge_method=S256",
        percent_encode(&provider.client_id),
        percent_encode(REDIRECT_URI),
        percent_encode("openid profile email"),
    );

    let callback = provider.sign_in(&authorization_url, "alice");
    assert!(
        callback.starts_with(&format!("{REDIRECT_URI}?")),
        "{callback}"
    );
    assert_eq!(query_parameter(&callback, "error"), None, "{callback}");
    assert_eq!(
        query_parameter(&callback, "state").as_deref(),
        Some(state),
        "{callback}"
    );
    let code = query_parameter(&callback, "code")
        .unwrap_or_else(|| panic!("no code in the callback URL {callback}"));

    let exchange = |authorization: Option<String>, client_fields: &[(&str, &str)]| {
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", code_verifier),
        ];
        fields.extend_from_slice(client_fields);
        let mut request = agent.post(token_endpoint);
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        json_response(request.send_form(fields).expect("call the token endpoint"))
    };

    let (status, tokens) = exchange(
        Some(basic_authorization(
            &provider.client_id,
            &provider.client_secret,
        )),
        &[],
    );
    assert_eq!(status, 200, "token response: {tokens}");
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let payload = id_token.split('.').nth(1).expect("a JWT has a payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload)
            .expect("the payload is base64url"),
    )
    .expect("the payload is JSON");
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["nonce"], nonce, "{claims}");
    assert_eq!(claims["iss"], provider.issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], provider.client_id.as_str(), "{claims}");
    assert_eq!(claims["preferred_username"], "alice", "{claims}");
    assert_eq!(claims["email"], "alice@example.test", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");

    // The replay authenticates with client_secret_post: `invalid_grant` rather than
    // `invalid_client` shows that method is accepted too, and the code is spent.
    let (status, replay) = exchange(
        None,
        &[
            ("client_id", provider.client_id.as_str()),
            ("client_secret", provider.client_secret.as_str()),
        ],
    );
    assert_eq!(status, 400, "replayed code: {replay}");
    assert_eq!(replay["error"], "invalid_grant", "{replay}");
}
