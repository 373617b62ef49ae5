//! Webhooks (issue 5) against a real local HTTP receiver: signatures verify
//! with the shared secret, a 500 is retried until it succeeds, the delivery
//! log shows request and response without secrets, a delivery can be sent
//! again, and the SSRF guard refuses loopback and other non-public targets
//! (directly or through a redirect) unless the allowlist permits them.

mod support;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, Instant};
use support::receiver::{Received, Receiver, Reply};
use support::{ApiResponse, Git, NimbusServer, OWNER_TOKEN, ServerOptions, commit_and_push};

const SECRET: &str = "correct-horse-battery-staple-42";

fn owner() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

fn api(
    server: &NimbusServer,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> ApiResponse {
    server.request(method, path, Some(&owner()), body.as_ref())
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Check both signatures the way a receiver would, with the shared secret.
fn assert_signed(request: &Received, secret: &str) {
    let github = format!(
        "sha256={}",
        hex::encode(hmac(secret.as_bytes(), &request.body))
    );
    assert_eq!(
        request.header("X-Hub-Signature-256"),
        github,
        "GitHub signature"
    );

    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.as_bytes(),
        b".",
        &request.body,
    ]
    .concat();
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac(secret.as_bytes(), &signed))
    );
    assert_eq!(
        request.header("webhook-signature"),
        expected,
        "Standard Webhooks signature"
    );
    let sent_at: i64 = timestamp.parse().expect("a Unix timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert!((now - sent_at).abs() < 300, "timestamp {sent_at} is recent");

    // A body changed in transit no longer verifies.
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert_ne!(
        format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &tampered))),
        github
    );
}

/// Poll the delivery log of `hook` until `done` holds.
fn deliveries_until(
    server: &NimbusServer,
    hooks: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = api(server, "GET", &format!("{hooks}/deliveries"), None);
        assert_eq!(response.status, 200, "{}", response.body);
        let listed: Vec<serde_json::Value> = response.json().as_array().expect("a list").clone();
        if done(&listed) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery log never got there: {listed:#?}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deliveries_are_signed_retried_logged_and_redelivered() {
    let receiver = Receiver::start("127.0.0.1");
    let server = NimbusServer::start_with(ServerOptions {
        env: vec![
            ("NIMBUS_WEBHOOK_ALLOW".into(), "127.0.0.1/32".into()),
            ("NIMBUS_WEBHOOK_RETRY".into(), "1s".into()),
        ],
        ..ServerOptions::default()
    });
    server.create_repo("hooked", false);

    // A repository webhook for pushes and tags, with our secret.
    let created = api(
        &server,
        "POST",
        "/api/v1/repos/hooked/hooks",
        Some(serde_json::json!({
            "url": receiver.url("/github"),
            "secret": SECRET,
            "events": ["push", "tag.created"],
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let hook = created.json();
    let hook_id = hook["id"].as_i64().expect("an id");
    assert_eq!(hook["config"]["secret"], "********");
    assert!(hook.get("secret").is_none(), "a given secret is not echoed");
    assert!(!created.body.contains(SECRET));
    let hooks = format!("/api/v1/repos/hooked/hooks/{hook_id}");

    // First attempt fails with 500, the retry (a second later) succeeds.
    receiver.script(vec![Reply::Status(500, "database on fire")]);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let commit = commit_and_push(&server, &git, work.path(), "hooked", "first");
    let got = receiver.wait_for(2, || server.logs());
    let (first, second) = (&got[0], &got[1]);
    for request in [first, second] {
        assert_signed(request, SECRET);
        assert_eq!(request.path, "/github");
        assert_eq!(
            request.header("X-GitHub-Event"),
            "push",
            "branch.created was not chosen"
        );
        assert_eq!(request.header("X-Nimbus-Event"), "push");
        assert_eq!(request.header("Content-Type"), "application/json");
        assert_eq!(request.header("X-GitHub-Hook-ID"), hook_id.to_string());
        assert!(request.header("User-Agent").starts_with("Nimbus-Hookshot/"));
    }
    assert_eq!(
        first.header("X-GitHub-Delivery"),
        second.header("X-GitHub-Delivery"),
        "a retry is the same delivery"
    );
    assert_eq!(
        first.header("webhook-id"),
        first.header("X-GitHub-Delivery")
    );
    assert_eq!(first.header("X-Nimbus-Attempt"), "1");
    assert_eq!(second.header("X-Nimbus-Attempt"), "2");
    assert_eq!(first.body, second.body);

    // GitHub's push payload.
    let payload = second.json();
    assert_eq!(payload["ref"], "refs/heads/main");
    assert_eq!(payload["before"], "0".repeat(40));
    assert_eq!(payload["after"], commit);
    assert_eq!(payload["created"], true);
    assert_eq!(payload["deleted"], false);
    assert_eq!(payload["forced"], false);
    assert_eq!(payload["commits"][0]["id"], commit);
    assert!(
        payload["commits"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("first"))
    );
    assert_eq!(payload["head_commit"]["id"], commit);
    assert_eq!(payload["repository"]["name"], "hooked");
    assert_eq!(payload["repository"]["private"], false);
    assert_eq!(payload["repository"]["default_branch"], "main");
    assert_eq!(payload["pusher"]["name"], payload["sender"]["login"]);
    assert_eq!(payload["nimbus"]["type"], "push");

    // The delivery log: newest first, the failure with its response.
    let log = deliveries_until(&server, &hooks, |listed| {
        listed.len() == 2 && listed.iter().all(|d| d["status"] != "pending")
    });
    assert_eq!(log[0]["attempt"], 2);
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["status_code"], 200);
    assert_eq!(log[1]["attempt"], 1);
    assert_eq!(log[1]["status"], "failed");
    assert_eq!(log[1]["status_code"], 500);
    assert_eq!(log[1]["event"], "push");
    assert_eq!(log[0]["guid"], first.header("X-GitHub-Delivery"));
    let failed = api(
        &server,
        "GET",
        &format!("{hooks}/deliveries/{}", log[1]["id"]),
        None,
    );
    assert_eq!(failed.status, 200, "{}", failed.body);
    let detail = failed.json();
    assert_eq!(detail["response"]["payload"], "database on fire");
    assert_eq!(detail["request"]["payload"]["after"], commit);
    let sent_headers = detail["request"]["headers"].as_array().expect("headers");
    assert!(
        sent_headers
            .iter()
            .any(|h| h[0] == "X-Hub-Signature-256" && h[1] == first.header("X-Hub-Signature-256")),
        "{sent_headers:?}"
    );
    let response_headers = detail["response"]["headers"].as_array().expect("headers");
    assert!(
        response_headers
            .iter()
            .any(|h| h[0] == "set-cookie" && h[1] == "[redacted]"),
        "cookies are redacted: {response_headers:?}"
    );
    assert!(!failed.body.contains(SECRET) && !failed.body.contains("abc123"));

    // Redelivery: the same delivery again, marked so.
    let redelivered = api(
        &server,
        "POST",
        &format!("{hooks}/deliveries/{}/attempts", log[0]["id"]),
        None,
    );
    assert_eq!(redelivered.status, 202, "{}", redelivered.body);
    let got = receiver.wait_for(3, || server.logs());
    assert_signed(&got[2], SECRET);
    assert_eq!(
        got[2].header("X-GitHub-Delivery"),
        first.header("X-GitHub-Delivery")
    );
    assert_eq!(got[2].body, first.body);
    let log = deliveries_until(&server, &hooks, |listed| {
        listed.len() == 3 && listed[0]["status"] == "succeeded"
    });
    assert_eq!(log[0]["redelivery"], true);

    // A tag is a GitHub `create` event, and (as on GitHub) also a `push`.
    git.run(work.path(), &["tag", "v1.0"]);
    git.run(
        work.path(),
        &["push", "-q", &server.push_url("hooked"), "refs/tags/v1.0"],
    );
    let got = receiver.wait_for(5, || server.logs());
    let tag_events = &got[3..5];
    let create = tag_events
        .iter()
        .find(|r| r.header("X-GitHub-Event") == "create")
        .expect("a create event");
    assert_signed(create, SECRET);
    assert_eq!(create.json()["ref"], "v1.0");
    assert_eq!(create.json()["ref_type"], "tag");
    let push = tag_events
        .iter()
        .find(|r| r.header("X-GitHub-Event") == "push")
        .expect("a push event");
    assert_eq!(push.json()["ref"], "refs/tags/v1.0");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.received().len(), 5, "nothing else was sent");

    // An instance-wide webhook with a generated secret sees every
    // repository; the secret is shown once.
    let instance = api(
        &server,
        "POST",
        "/api/v1/hooks",
        Some(serde_json::json!({
            "config": { "url": receiver.url("/instance"), "content_type": "json" },
            "events": ["repository.created"],
        })),
    );
    assert_eq!(instance.status, 201, "{}", instance.body);
    let generated = instance.json()["secret"]
        .as_str()
        .expect("a generated secret")
        .to_owned();
    assert!(generated.starts_with("whsec_"));
    let listed = api(&server, "GET", "/api/v1/hooks", None);
    assert!(!listed.body.contains(&generated), "{}", listed.body);
    server.create_repo("another", true);
    let got = receiver.wait_for(6, || server.logs());
    let created_event = &got[5];
    assert_eq!(created_event.path, "/instance");
    assert_eq!(created_event.header("X-GitHub-Event"), "repository");
    assert_eq!(created_event.json()["action"], "created");
    assert_eq!(created_event.json()["repository"]["name"], "another");
    // A whsec_ secret keys the Standard Webhooks signature with its decoded
    // bytes, GitHub's with the text as written.
    let key = base64::engine::general_purpose::STANDARD
        .decode(generated.trim_start_matches("whsec_"))
        .expect("base64");
    let signed = [
        created_event.header("webhook-id").as_bytes(),
        b".",
        created_event.header("webhook-timestamp").as_bytes(),
        b".",
        &created_event.body,
    ]
    .concat();
    assert_eq!(
        created_event.header("webhook-signature"),
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac(&key, &signed))
        )
    );
    assert_eq!(
        created_event.header("X-Hub-Signature-256"),
        format!(
            "sha256={}",
            hex::encode(hmac(generated.as_bytes(), &created_event.body))
        )
    );

    // A redirect to an address the allowlist does not name is not followed.
    let elsewhere = Receiver::start("127.0.0.2");
    let redirecting = api(
        &server,
        "PATCH",
        &hooks,
        Some(serde_json::json!({ "url": receiver.url("/moved"), "events": ["push"] })),
    );
    assert_eq!(redirecting.status, 200, "{}", redirecting.body);
    receiver.script(vec![Reply::Redirect(elsewhere.url("/stolen"))]);
    commit_and_push(&server, &git, work.path(), "hooked", "second");
    let redirected = |d: &serde_json::Value| {
        d["status"] == "failed" && d["error"].as_str().is_some_and(|e| e.contains("127.0.0.2"))
    };
    let log = deliveries_until(&server, &hooks, |listed| listed.iter().any(redirected));
    let failed = log
        .iter()
        .find(|d| redirected(d))
        .expect("a refused redirect");
    let error = failed["error"].as_str().expect("an error");
    assert!(
        error.contains("redirect") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(
        failed["status_code"],
        serde_json::Value::Null,
        "{failed:#?}"
    );
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );

    // The secret never reached the server's log.
    assert!(!server.full_log().contains(SECRET));
    assert!(!server.full_log().contains(&generated));
}

#[test]
fn the_ssrf_guard_refuses_non_public_targets_without_the_allowlist() {
    let receiver = Receiver::start("127.0.0.1");
    let server = NimbusServer::start();
    server.create_repo("guarded", false);
    for url in [
        receiver.url("/"),
        format!("http://[::1]:{}/", receiver.address.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://2130706433/".to_owned(),
        "ftp://example.com/".to_owned(),
    ] {
        let refused = api(
            &server,
            "POST",
            "/api/v1/repos/guarded/hooks",
            Some(serde_json::json!({ "url": url, "secret": SECRET })),
        );
        assert_eq!(refused.status, 422, "{url}: {}", refused.body);
    }
    let loopback = api(
        &server,
        "POST",
        "/api/v1/repos/guarded/hooks",
        Some(serde_json::json!({ "url": receiver.url("/"), "secret": SECRET })),
    );
    assert!(
        loopback.body.contains("loopback") && loopback.body.contains("NIMBUS_WEBHOOK_ALLOW"),
        "{}",
        loopback.body
    );
    assert!(
        api(&server, "GET", "/api/v1/repos/guarded/hooks", None)
            .json()
            .as_array()
            .expect("list")
            .is_empty()
    );

    // A name is checked when it resolves: `localhost` is accepted, and its
    // delivery fails without reaching the receiver.
    let named = api(
        &server,
        "POST",
        "/api/v1/repos/guarded/hooks",
        Some(serde_json::json!({
            "url": format!("http://localhost:{}/", receiver.address.port()),
            "secret": SECRET,
        })),
    );
    assert_eq!(named.status, 201, "{}", named.body);
    let hooks = format!("/api/v1/repos/guarded/hooks/{}", named.json()["id"]);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    commit_and_push(&server, &git, work.path(), "guarded", "first");
    let log = deliveries_until(&server, &hooks, |listed| {
        listed.iter().any(|d| d["status"] == "failed")
    });
    let failed = log
        .iter()
        .find(|d| d["status"] == "failed")
        .expect("a failed attempt");
    let error = failed["error"].as_str().expect("an error");
    assert!(error.contains("loopback"), "{error}");
    assert!(failed["status_code"].is_null());
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );

    // Bad requests change nothing.
    for (body, needle) in [
        (
            serde_json::json!({ "url": "https://example.com/", "events": ["pushed"] }),
            "unknown event type",
        ),
        (
            serde_json::json!({ "url": "https://example.com/", "secret": "short" }),
            "8 to",
        ),
        (
            serde_json::json!({ "url": "https://example.com/", "config": { "content_type": "form" } }),
            "JSON",
        ),
        (serde_json::json!({ "events": ["push"] }), "needs a url"),
    ] {
        let refused = api(&server, "POST", "/api/v1/repos/guarded/hooks", Some(body));
        assert_eq!(refused.status, 422, "{}", refused.body);
        assert!(refused.body.contains(needle), "{needle}: {}", refused.body);
    }
    let unknown = api(
        &server,
        "POST",
        "/api/v1/repos/guarded/hooks",
        Some(serde_json::json!({ "url": "https://example.com/", "colour": "red" })),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(
        api(&server, "GET", "/api/v1/repos/guarded/hooks", None)
            .json()
            .as_array()
            .expect("list")
            .len(),
        1
    );

    // Who may: repository admins for its hooks, the owner for the instance.
    let bob = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner()),
        Some(&serde_json::json!({ "name": "bob" })),
    );
    assert_eq!(bob.status, 201, "{}", bob.body);
    let granted = api(
        &server,
        "PUT",
        "/api/v1/repos/guarded/collaborators/bob",
        Some(serde_json::json!({ "access": "write" })),
    );
    assert!(granted.status < 300, "{}", granted.body);
    let token = api(
        &server,
        "POST",
        "/api/v1/users/bob/tokens",
        Some(serde_json::json!({ "scopes": ["repo:write", "api"] })),
    );
    let bob = format!("Bearer {}", token.json()["token"].as_str().expect("token"));
    assert_eq!(
        server
            .request("GET", "/api/v1/repos/guarded/hooks", Some(&bob), None)
            .status,
        403
    );
    assert_eq!(
        server
            .request("GET", "/api/v1/hooks", Some(&bob), None)
            .status,
        403
    );
    assert_eq!(
        server.request("GET", "/api/v1/hooks", None, None).status,
        401
    );
    // Another repository's hook id is not found through this one.
    server.create_repo("other", false);
    assert_eq!(
        api(&server, "GET", &hooks.replace("guarded", "other"), None).status,
        404
    );
}

#[test]
fn the_command_line_manages_webhooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nimbus = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("NIMBUS_LOG", "warn")
            .env_remove("NIMBUS_WEBHOOK_ALLOW")
            .envs(env.iter().copied())
            .output()
            .expect("run nimbus")
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert!(nimbus(&["repo", "create", "cli"], &[]).status.success());
    let added = nimbus(
        &[
            "webhook",
            "add",
            "--repo",
            "cli",
            "https://hooks.example.com/x",
            "--events",
            "push,tag.created",
        ],
        &[],
    );
    assert!(added.status.success(), "{}", text(&added));
    let out = text(&added);
    assert!(
        out.contains("created webhook 1") && out.contains("whsec_"),
        "{out}"
    );

    let refused = nimbus(
        &["webhook", "add", "--repo", "cli", "http://127.0.0.1:9/"],
        &[],
    );
    assert!(!refused.status.success());
    assert!(text(&refused).contains("loopback"), "{}", text(&refused));
    let allowed = nimbus(
        &[
            "webhook",
            "add",
            "--instance",
            "http://127.0.0.1:9/",
            "--secret",
            "a-long-enough-secret",
        ],
        &[("NIMBUS_WEBHOOK_ALLOW", "127.0.0.0/8")],
    );
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert!(!text(&allowed).contains("a-long-enough-secret"));
    let bad_events = nimbus(
        &[
            "webhook",
            "add",
            "--repo",
            "cli",
            "https://e.example/",
            "--events",
            "nope",
        ],
        &[],
    );
    assert!(
        text(&bad_events).contains("unknown event type"),
        "{}",
        text(&bad_events)
    );

    let listed = text(&nimbus(&["webhook", "list"], &[]));
    assert!(
        listed.contains("1\tcli\ttrue\tpush,tag.created\thttps://hooks.example.com/x"),
        "{listed}"
    );
    assert!(
        listed.contains("2\t(instance)\ttrue\tpush\thttp://127.0.0.1:9/"),
        "{listed}"
    );
    let updated = nimbus(&["webhook", "update", "1", "--active", "false"], &[]);
    assert!(updated.status.success(), "{}", text(&updated));
    assert!(text(&nimbus(&["webhook", "list", "--repo", "cli"], &[])).contains("1\tcli\tfalse"));
    assert!(text(&nimbus(&["webhook", "deliveries", "1"], &[])).starts_with("id\tguid"));
    let missing = nimbus(&["webhook", "redeliver", "1", "99"], &[]);
    assert!(
        text(&missing).contains("delivery 99 of webhook 1 not found"),
        "{}",
        text(&missing)
    );
    assert!(nimbus(&["webhook", "remove", "1"], &[]).status.success());
    assert!(text(&nimbus(&["webhook", "remove", "1"], &[])).contains("webhook 1 not found"));
    let audit = text(&nimbus(&["audit", "--action", "webhook."], &[]));
    assert!(
        audit.contains("webhook.created") && audit.contains("webhook.deleted"),
        "{audit}"
    );
}
