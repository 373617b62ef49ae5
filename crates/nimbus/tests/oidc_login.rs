//! Sign-in through a real OpenID Connect provider (npm `oidc-provider`,
//! started by the harness) end to end (issue 4): an uninvited identity is
//! refused; an invitation creates the account and links the identity; the
//! linked identity signs in again; a tampered `state`, a replayed code, a
//! wrong `nonce` and a used invitation are refused, and none signs anyone in.

mod support;

use support::browser::Browser;
use support::oidc::{OidcProvider, query_parameter};
use support::{NimbusServer, OWNER_TOKEN, ServerOptions, free_port};

struct Setup {
    provider: OidcProvider,
    server: NimbusServer,
}

fn setup() -> Setup {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = OidcProvider::start(&format!("{base}/login/oidc/callback"));
    let server = NimbusServer::start_with(ServerOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![
            ("NIMBUS_PUBLIC_URL".into(), base),
            ("NIMBUS_OIDC_ISSUER".into(), provider.issuer.clone()),
            ("NIMBUS_OIDC_CLIENT_ID".into(), provider.client_id.clone()),
            (
                "NIMBUS_OIDC_CLIENT_SECRET".into(),
                provider.client_secret.clone(),
            ),
            ("NIMBUS_OIDC_NAME".into(), "Test IdP".into()),
        ],
        ..ServerOptions::default()
    });
    Setup { provider, server }
}

impl Setup {
    /// Start a sign-in in `browser` (optionally accepting `invite`); the
    /// provider's authorization URL.
    fn begin(&self, browser: &mut Browser, invite: Option<&str>) -> String {
        let path = match invite {
            Some(secret) => format!("/login/oidc?invite={secret}"),
            None => "/login/oidc".to_owned(),
        };
        let page = browser.get(&path);
        assert_eq!(page.status, 303, "{}\n{}", page.body, self.server.logs());
        let location = page.location().to_owned();
        assert!(location.starts_with(&self.provider.issuer), "{location}");
        for parameter in ["state", "nonce", "code_challenge"] {
            assert!(
                query_parameter(&location, parameter).is_some(),
                "{parameter} in {location}"
            );
        }
        assert_eq!(
            query_parameter(&location, "code_challenge_method").as_deref(),
            Some("S256")
        );
        location
    }

    fn invitation(&self) -> String {
        let response = self.server.request(
            "POST",
            "/api/v1/invitations",
            Some(&format!("Bearer {OWNER_TOKEN}")),
            Some(&serde_json::json!({ "repo": "team", "access": "write" })),
        );
        assert_eq!(response.status, 201, "{}", response.body);
        let url = response.json()["url"].as_str().expect("url").to_owned();
        url.rsplit('/').next().expect("the secret").to_owned()
    }

    fn users(&self) -> String {
        self.server
            .request(
                "GET",
                "/api/v1/users",
                Some(&format!("Bearer {OWNER_TOKEN}")),
                None,
            )
            .body
    }
}

#[test]
fn oidc_sign_in_with_invitations_and_refusals() {
    let setup = setup();
    setup.server.create_repo("team", true);

    // The sign-in page offers the provider.
    let mut browser = Browser::new(setup.server.base_url());
    let login = browser.get("/login");
    assert!(
        login.body.contains("Sign in with Test IdP"),
        "{}",
        login.body
    );

    // An identity nobody invited gets no account and no session.
    let url = setup.begin(&mut browser, None);
    let callback = setup.provider.sign_in(&url, "mallory");
    let refused = browser.get(&callback);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("No Nimbus account is linked"),
        "{}",
        refused.body
    );
    assert_eq!(browser.signed_in_as(), None);
    assert!(!setup.users().contains("mallory"));

    // An invitation creates the account, links the identity and grants the
    // invitation's access.
    let secret = setup.invitation();
    let mut alice = Browser::new(setup.server.base_url());
    let url = setup.begin(&mut alice, Some(&secret));
    let callback = setup.provider.sign_in(&url, "alice");
    let state = query_parameter(&callback, "state").expect("state");
    let welcome = alice.get(&callback);
    assert_eq!(
        welcome.status,
        303,
        "{}\n{}",
        welcome.body,
        setup.server.logs()
    );
    assert_eq!(alice.signed_in_as().as_deref(), Some("alice"));
    let collaborators = setup.server.request(
        "GET",
        "/api/v1/repos/team/collaborators",
        Some(&format!("Bearer {OWNER_TOKEN}")),
        None,
    );
    assert!(
        collaborators.body.contains("\"alice\""),
        "{}",
        collaborators.body
    );

    // The same code and state again (even with the state cookie): refused.
    let mut replayer = Browser::new(setup.server.base_url());
    replayer.cookies.insert("nimbus_login_state".into(), state);
    let replayed = replayer.get(&callback);
    assert_eq!(replayed.status, 400, "{}", replayed.body);
    assert!(
        replayed.body.contains("already completed"),
        "{}",
        replayed.body
    );
    assert_eq!(replayer.signed_in_as(), None);

    // The linked identity signs in again without an invitation.
    let mut again = Browser::new(setup.server.base_url());
    let url = setup.begin(&mut again, None);
    let callback = setup.provider.sign_in(&url, "alice");
    assert_eq!(again.get(&callback).status, 303);
    assert_eq!(again.signed_in_as().as_deref(), Some("alice"));

    // A tampered state does not match this browser's sign-in.
    let mut tamper = Browser::new(setup.server.base_url());
    let url = setup.begin(&mut tamper, None);
    let callback = setup.provider.sign_in(&url, "alice");
    let state = query_parameter(&callback, "state").expect("state");
    let forged = callback.replace(&format!("state={state}"), "state=forged-state-value");
    assert_ne!(forged, callback);
    let page = tamper.get(&forged);
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("state does not match"), "{}", page.body);
    assert_eq!(tamper.signed_in_as(), None);

    // An ID token whose nonce is not the one this sign-in sent.
    let mut nonce = Browser::new(setup.server.base_url());
    let url = setup.begin(&mut nonce, None);
    let sent = query_parameter(&url, "nonce").expect("nonce");
    let swapped = url.replace(&format!("nonce={sent}"), "nonce=someone-elses-nonce");
    assert_ne!(swapped, url);
    let callback = setup.provider.sign_in(&swapped, "alice");
    let page = nonce.get(&callback);
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("ID token was refused"), "{}", page.body);
    assert_eq!(nonce.signed_in_as(), None);

    // The used invitation does not admit a second identity.
    let mut bob = Browser::new(setup.server.base_url());
    let url = setup.begin(&mut bob, Some(&secret));
    let callback = setup.provider.sign_in(&url, "bob");
    let page = bob.get(&callback);
    assert_eq!(page.status, 410, "{}", page.body);
    assert!(page.body.contains("already been used"), "{}", page.body);
    assert!(!setup.users().contains("\"bob\""));

    // Every refusal is in the audit log, with no secret in it.
    let audit = setup.server.request(
        "GET",
        "/api/v1/audit?action=login.failed",
        Some(&format!("Bearer {OWNER_TOKEN}")),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.body);
    let events = audit.json();
    assert!(events.as_array().expect("a list").len() >= 5, "{events}");
    assert!(!audit.body.contains(&secret));
    assert!(!audit.body.contains(&setup.provider.client_secret));
}
