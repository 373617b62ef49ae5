//! Web sessions end to end (issue 4): accepting an invitation with a
//! password, signing in and out, cookie attributes, refresh rotation and
//! theft detection, server-side revocation (sign-out, password change,
//! account removal), CSRF and cross-origin refusal, rate limiting of failed
//! sign-ins and token use, the JWKS document, and forged session tokens.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::browser::{Browser, Page, accept, invite};
use support::{NimbusServer, OWNER_TOKEN, ServerOptions};

const GOOD_PASSWORD: &str = "violet-canyon-drifts-at-noon";

fn owner() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

fn sign_in(browser: &mut Browser, name: &str, password: &str) -> Page {
    let form = browser.get("/login");
    let csrf = form.hidden("csrf");
    browser.post_form(
        "/login",
        &[("csrf", &csrf), ("user", name), ("password", password)],
    )
}

fn api_as(browser: &mut Browser, path: &str) -> Page {
    let csrf = browser
        .get("/account")
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .unwrap_or_default();
    browser.send("GET", path, &[("X-CSRF-Token", &csrf)], None)
}

#[test]
fn invitation_sign_in_refresh_and_sign_out() {
    let server = NimbusServer::start();
    server.create_repo("team", true);
    let invitation = invite(&server, Some(("team", "write")));
    let mut browser = Browser::new(server.base_url());

    // A weak password is refused with the reason, and nothing is created.
    let weak = accept(&mut browser, &invitation, "bob", "password123");
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert!(weak.body.contains("too easy to guess"), "{}", weak.body);
    let page = accept(&mut browser, &invitation, "bob", GOOD_PASSWORD);
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/account");
    for cookie in page.set_cookies() {
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Lax"), "{cookie}");
        assert!(
            !cookie.contains("Secure"),
            "plain http has no Secure: {cookie}"
        );
    }
    assert_eq!(browser.signed_in_as().as_deref(), Some("bob"));
    // The invitation granted write access to the private repository.
    let collaborators = server.request(
        "GET",
        "/api/v1/repos/team/collaborators",
        Some(&owner()),
        None,
    );
    assert!(
        collaborators.body.contains("\"bob\""),
        "{}",
        collaborators.body
    );
    assert!(
        collaborators.body.contains("\"write\""),
        "{}",
        collaborators.body
    );
    // Single use.
    let again = Browser::new(server.base_url()).get(&invitation);
    assert_eq!(again.status, 410, "{}", again.body);

    // The API takes the session only with its CSRF token in a header.
    let bare = browser.get("/api/v1/user");
    assert_eq!(bare.status, 401, "{}", bare.body);
    let with_token = api_as(&mut browser, "/api/v1/user");
    assert_eq!(with_token.status, 200, "{}", with_token.body);
    assert!(with_token.body.contains("\"bob\""), "{}", with_token.body);

    // Sign-out needs the session's CSRF token and a same-origin request.
    let csrf = browser.get("/account").hidden("csrf");
    let cross = browser.post_form_with(
        "/logout",
        &[("csrf", &csrf)],
        &[("Origin", "http://evil.test")],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let forged = browser.post_form("/logout", &[("csrf", "not-the-token")]);
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(browser.signed_in_as().as_deref(), Some("bob"));

    // Refresh: without the session token, the refresh secret renews both
    // cookies; the replaced secret presented again revokes the session.
    let stale_refresh = browser.cookies["nimbus_refresh"].clone();
    browser.cookies.remove("nimbus_session");
    let renewed = browser.get("/account");
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.set_cookies().len(), 2, "{:?}", renewed.headers);
    assert_ne!(browser.cookies["nimbus_refresh"], stale_refresh);
    let mut thief = Browser::new(server.base_url());
    thief.cookies.insert("nimbus_refresh".into(), stale_refresh);
    assert_eq!(
        thief.signed_in_as(),
        None,
        "a replaced secret must not work"
    );
    assert_eq!(
        browser.signed_in_as(),
        None,
        "reuse of a replaced refresh secret revokes the whole session"
    );

    // Sign in with the password; sign out; the old cookies are dead.
    let page = sign_in(&mut browser, "bob", GOOD_PASSWORD);
    assert_eq!(page.status, 303, "{}", page.body);
    let saved = browser.cookies.clone();
    let csrf = browser.get("/account").hidden("csrf");
    let out = browser.post_form("/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(!browser.cookies.contains_key("nimbus_session"));
    let mut replay = Browser::new(server.base_url());
    replay.cookies = saved;
    assert_eq!(
        replay.signed_in_as(),
        None,
        "a signed-out session stays out"
    );
}

#[test]
fn password_change_and_account_removal_end_sessions() {
    let server = NimbusServer::start();
    let invitation = invite(&server, None);
    let mut first = Browser::new(server.base_url());
    assert_eq!(
        accept(&mut first, &invitation, "carol", GOOD_PASSWORD).status,
        303
    );
    let mut second = Browser::new(server.base_url());
    assert_eq!(sign_in(&mut second, "carol", GOOD_PASSWORD).status, 303);
    assert_eq!(second.signed_in_as().as_deref(), Some("carol"));

    let csrf = first.get("/account").hidden("csrf");
    let wrong = first.post_form(
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", "not-my-password"),
            ("new", "amber-harbor-lights-fade"),
        ],
    );
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert!(
        wrong.body.contains("current password is wrong"),
        "{}",
        wrong.body
    );
    let changed = first.post_form(
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", GOOD_PASSWORD),
            ("new", "amber-harbor-lights-fade"),
        ],
    );
    assert_eq!(changed.status, 303, "{}", changed.body);
    assert_eq!(
        first.signed_in_as().as_deref(),
        Some("carol"),
        "this browser stays in"
    );
    assert_eq!(second.signed_in_as(), None, "other sessions end");
    assert_eq!(sign_in(&mut second, "carol", GOOD_PASSWORD).status, 401);
    assert_eq!(
        sign_in(&mut second, "carol", "amber-harbor-lights-fade").status,
        303
    );

    let deleted = server.request("DELETE", "/api/v1/users/carol", Some(&owner()), None);
    assert!(
        deleted.status == 204 || deleted.status == 200,
        "{}",
        deleted.body
    );
    assert_eq!(first.signed_in_as(), None);
    assert_eq!(second.signed_in_as(), None);
}

#[test]
fn failed_sign_ins_and_token_use_are_limited() {
    let server = NimbusServer::start_with(ServerOptions {
        env: vec![("NIMBUS_AUTH_MAX_FAILURES".into(), "6".into())],
        ..ServerOptions::default()
    });
    let invitation = invite(&server, None);
    let mut browser = Browser::new(server.base_url());
    assert_eq!(
        accept(&mut browser, &invitation, "dave", GOOD_PASSWORD).status,
        303
    );

    // Per account: 3 failures (half the client limit), then refused even
    // with the right password.
    let mut attacker = Browser::new(server.base_url());
    for _ in 0..3 {
        let page = sign_in(&mut attacker, "dave", "wrong-password-guess");
        assert_eq!(page.status, 401, "{}", page.body);
        assert!(
            page.body.contains("Wrong user name or password"),
            "{}",
            page.body
        );
    }
    let blocked = sign_in(&mut attacker, "dave", GOOD_PASSWORD);
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(blocked.header("retry-after").is_some());
    assert_eq!(attacker.signed_in_as(), None);

    // Per client, sign-ins and token use alike: the 3 failed sign-ins and
    // 3 bad tokens from this address reach its limit of 6; then even a
    // good token waits.
    for _ in 0..3 {
        let response = server.request("GET", "/api/v1/user", Some("Bearer nimbus_wrong"), None);
        assert_eq!(response.status, 401, "{}", response.body);
    }
    let limited = server.request("GET", "/api/v1/user", Some(&owner()), None);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.body.contains("too many failed"), "{}", limited.body);

    // Both are in the audit log (read through a fresh client address is not
    // possible here, so through the database-backed CLI).
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["audit", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .expect("run nimbus audit");
    let listing = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "{listing}\n{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(listing.contains("login.failed"), "{listing}");
    assert!(listing.contains("login.blocked"), "{listing}");
    assert!(listing.contains("token.failed"), "{listing}");
}

fn claims_of(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

#[test]
fn session_tokens_verify_with_jwks_and_forgeries_are_refused() {
    let server = NimbusServer::start();
    let invitation = invite(&server, None);
    let mut browser = Browser::new(server.base_url());
    assert_eq!(
        accept(&mut browser, &invitation, "erin", GOOD_PASSWORD).status,
        303
    );
    let jwt = browser.cookies["nimbus_session"].clone();

    // Another process verifies the token from the JWKS document alone.
    let jwks = server.request("GET", "/.well-known/jwks.json", None, None);
    assert_eq!(jwks.status, 200);
    let keys = nimbus_auth::session::KeySet::from_jwks("nimbus", &jwks.json()).expect("keys");
    let now = claims_of(&jwt)["iat"].as_i64().expect("iat");
    let claims = keys.verify(&jwt, now).expect("the session token verifies");
    assert_eq!(claims.name, "erin");

    // A token of another instance (its own key) is refused, though it names
    // the same user id.
    let other = NimbusServer::start();
    let other_invitation = invite(&other, None);
    let mut elsewhere = Browser::new(other.base_url());
    assert_eq!(
        accept(&mut elsewhere, &other_invitation, "erin", GOOD_PASSWORD).status,
        303
    );
    let foreign = elsewhere.cookies["nimbus_session"].clone();
    assert!(keys.verify(&foreign, now).is_err());
    let mut forger = Browser::new(server.base_url());
    forger.cookies.insert("nimbus_session".into(), foreign);
    assert_eq!(forger.signed_in_as(), None);

    // alg none, and a changed payload under the real signature.
    let mut pieces = jwt.split('.');
    let (_, payload, signature) = (
        pieces.next().expect("header"),
        pieces.next().expect("payload"),
        pieces.next().expect("signature"),
    );
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let mut owner_claims = claims_of(&jwt);
    owner_claims["sub"] = serde_json::json!("1");
    owner_claims["owner"] = serde_json::json!(true);
    let escalated = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&owner_claims).expect("json"));
    let header = jwt.split('.').next().expect("header");
    for forged in [
        format!("{none}.{payload}."),
        format!("{none}.{escalated}."),
        format!("{header}.{escalated}.{signature}"),
    ] {
        let mut forger = Browser::new(server.base_url());
        forger
            .cookies
            .insert("nimbus_session".into(), forged.clone());
        assert_eq!(forger.signed_in_as(), None, "{forged}");
    }
}
