//! No secret ever reaches a log line (issue 4). One server logs at `trace`,
//! the most verbose level, while every secret-bearing path runs: tokens
//! issued and used by git and the API, an invitation accepted with a
//! password, password sign-in, session refresh and sign-out, and a sign-in
//! at a real OpenID Connect provider. Then its log is searched for each
//! secret. (Every other end-to-end test's server log is also checked for
//! token-shaped strings when its server stops: see `support::secret_leaks`.)

mod support;

use support::browser::Browser;
use support::oidc::OidcProvider;
use support::{Git, NimbusServer, OWNER_TOKEN, ServerOptions, free_port};

#[test]
fn secrets_never_reach_the_log() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = OidcProvider::start(&format!("{base}/login/oidc/callback"));
    let server = NimbusServer::start_with(ServerOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![
            ("NIMBUS_LOG".into(), "trace".into()),
            ("NIMBUS_PUBLIC_URL".into(), base.clone()),
            ("NIMBUS_OIDC_ISSUER".into(), provider.issuer.clone()),
            ("NIMBUS_OIDC_CLIENT_ID".into(), provider.client_id.clone()),
            (
                "NIMBUS_OIDC_CLIENT_SECRET".into(),
                provider.client_secret.clone(),
            ),
        ],
        ..ServerOptions::default()
    });
    let owner = format!("Bearer {OWNER_TOKEN}");
    let mut secrets: Vec<(String, String)> = vec![
        ("owner token".into(), OWNER_TOKEN.into()),
        ("OIDC client secret".into(), provider.client_secret.clone()),
    ];
    server.create_repo("vault", true);

    // A token, used by git (Basic) and the API (Bearer), and a wrong one.
    let token = server.request(
        "POST",
        "/api/v1/user/tokens",
        Some(&owner),
        Some(&serde_json::json!({ "description": "ci", "scopes": ["repo:read", "repo:write", "api"] })),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    let token = token.json()["token"].as_str().expect("token").to_owned();
    secrets.push(("a personal access token".into(), token.clone()));
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    let authority = base.strip_prefix("http://").expect("http");
    let url = format!("http://x:{token}@{authority}/vault.git");
    git.init(work.path());
    git.commit(
        work.path(),
        "first",
        &[("README", "secret-free")],
        1_700_000_000,
    );
    git.run(work.path(), &["push", &url, "HEAD:refs/heads/main"]);
    git.run(work.path(), &["ls-remote", &url]);
    let wrong = server.request(
        "GET",
        "/api/v1/user",
        Some("Bearer nimbus_not_a_real_token_0123456789abcdefghijklmno"),
        None,
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(
        server
            .request(
                "GET",
                "/api/v1/user",
                Some(&format!("Bearer {token}")),
                None
            )
            .status,
        200
    );

    // An invitation accepted with a password; sign-in, refresh, sign-out.
    let invitation = server.request(
        "POST",
        "/api/v1/invitations",
        Some(&owner),
        Some(&serde_json::json!({})),
    );
    assert_eq!(invitation.status, 201, "{}", invitation.body);
    let invitation = invitation.json()["url"].as_str().expect("url").to_owned();
    let path = invitation[invitation.find("/invite/").expect("path")..].to_owned();
    secrets.push((
        "an invitation secret".into(),
        path.trim_start_matches("/invite/").to_owned(),
    ));
    let password = "quartz-meadow-whistles-softly";
    secrets.push(("a password".into(), password.into()));
    let mut browser = Browser::new(&base);
    let csrf = browser.get(&path).hidden("csrf");
    let joined = browser.post_form(
        &path,
        &[("csrf", &csrf), ("user", "frank"), ("password", password)],
    );
    assert_eq!(joined.status, 303, "{}", joined.body);
    let csrf = browser.get("/login").hidden("csrf");
    let wrong = browser.post_form(
        "/login",
        &[
            ("csrf", &csrf),
            ("user", "frank"),
            ("password", "wrong-quartz-meadow"),
        ],
    );
    assert_eq!(wrong.status, 401);
    secrets.push(("a wrong password".into(), "wrong-quartz-meadow".into()));
    let signed_in = browser.post_form(
        "/login",
        &[("csrf", &csrf), ("user", "frank"), ("password", password)],
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    secrets.push((
        "a session token".into(),
        browser.cookies["nimbus_session"].clone(),
    ));
    secrets.push((
        "a refresh secret".into(),
        browser.cookies["nimbus_refresh"].clone(),
    ));
    browser.cookies.remove("nimbus_session");
    assert_eq!(browser.get("/account").status, 200, "refreshed");
    secrets.push((
        "a rotated refresh secret".into(),
        browser.cookies["nimbus_refresh"].clone(),
    ));
    let account = browser.get("/account");
    let csrf = account.hidden("csrf");
    secrets.push(("a session CSRF token".into(), csrf.clone()));
    assert_eq!(browser.post_form("/logout", &[("csrf", &csrf)]).status, 303);

    // A sign-in at the OpenID Connect provider (refused: not invited), with
    // its authorization code and state.
    let mut oidc = Browser::new(&base);
    let start = oidc.get("/login/oidc");
    assert_eq!(start.status, 303, "{}", start.body);
    let callback = provider.sign_in(start.location(), "grace");
    for name in ["code", "state"] {
        let value = support::oidc::query_parameter(&callback, name).expect("parameter");
        secrets.push((format!("an OIDC {name}"), value));
    }
    assert_eq!(oidc.get(&callback).status, 403);

    let log = server.full_log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the server logged at trace level"
    );
    assert!(
        log.len() > 10_000,
        "the log has content: {} bytes",
        log.len()
    );
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} is long enough to search for");
        assert!(
            !log.contains(secret.as_str()),
            "{what} appears in the server log"
        );
    }
    assert_eq!(support::secret_leaks(&log), Vec::<String>::new());
}
