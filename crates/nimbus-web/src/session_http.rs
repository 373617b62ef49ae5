//! Signing in on the web: session cookies, the sign-in and invitation
//! pages, sign-in through identity providers, sign-out, the account page
//! and the JWKS document.
//!
//! Cookies (all `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` when the
//! public URL is HTTPS):
//! - `nimbus_session`: the signed session token, for [`ACCESS_TTL`];
//! - `nimbus_refresh`: the refresh secret, for the rest of the session;
//! - `nimbus_csrf`: the anti-CSRF token of forms shown before signing in
//!   (double submit: the form must repeat it);
//! - `nimbus_login_state`: the `state` of a sign-in at a provider, which
//!   binds its callback to the browser that started it.
//!
//! Every state-changing form carries a CSRF token (the session's, or the
//! `nimbus_csrf` cookie's before signing in), and a cross-site `Origin` or
//! `Sec-Fetch-Site` is refused outright.

use crate::error::WebError;
use crate::git_http::too_many_failures;
use crate::{App, Audit, RequestParts, app::now, body};
use cookie::{Cookie, SameSite};
use maud::{DOCTYPE, Markup, html};
use nimbus_auth::oidc::{CompletedLogin, OidcError};
use nimbus_auth::session::{ACCESS_TTL, IssuedSession, random_string};
use nimbus_auth::{password, token, validate_user_name};
use nimbus_types::identity::{InvitationRefusal, NewAccount};
use nimbus_types::metadata::User;
use serde::Deserialize;
use std::time::Instant;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

pub const SESSION_COOKIE: &str = "nimbus_session";
pub const REFRESH_COOKIE: &str = "nimbus_refresh";
pub const CSRF_COOKIE: &str = "nimbus_csrf";
pub const LOGIN_STATE_COOKIE: &str = "nimbus_login_state";

/// The largest form body accepted.
const MAX_FORM_BYTES: u64 = 16 << 10;
/// Where to go after signing in when no (safe) `next` is given.
const DEFAULT_LANDING: &str = "/account";

/// What the session cookies of a request asked for, applied to its
/// response unless the handler set session cookies itself.
#[derive(Debug, Default)]
pub struct SessionCookies {
    renewed: Option<IssuedSession>,
    clear: bool,
}

impl SessionCookies {
    pub fn apply(self, app: &App, response: &mut Response) {
        let handled = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|value| value.as_bytes().starts_with(SESSION_COOKIE.as_bytes()));
        if handled {
            return;
        }
        if let Some(issued) = &self.renewed {
            set_session_cookies(app, response, issued);
        } else if self.clear {
            clear_session_cookies(app, response);
        }
    }
}

/// The cookies of a request, by name (the first of duplicates wins).
fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for cookie in Cookie::split_parse(value).flatten() {
            found.push((cookie.name().to_owned(), cookie.value().to_owned()));
        }
    }
    found
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies(headers)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Resolve the session cookies of a request into `parts.session`.
pub async fn resolve(app: &App, parts: &mut RequestParts) -> SessionCookies {
    let access = cookie_value(&parts.headers, SESSION_COOKIE);
    let refresh = cookie_value(&parts.headers, REFRESH_COOKIE);
    if access.is_none() && refresh.is_none() {
        return SessionCookies::default();
    }
    match app
        .sessions
        .resolve(access.as_deref(), refresh.as_deref(), now())
        .await
    {
        Ok(outcome) => {
            parts.session = outcome.session;
            SessionCookies {
                renewed: outcome.renewed,
                clear: outcome.clear,
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "could not check a session");
            SessionCookies::default()
        }
    }
}

fn build_cookie(app: &App, name: &str, value: String, max_age: i64, path: &str) -> HeaderValue {
    let cookie = Cookie::build((name.to_owned(), value))
        .http_only(true)
        .secure(app.config.secure_cookies)
        .same_site(SameSite::Lax)
        .path(path.to_owned())
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build();
    // Cookie values we set are base64url or JWTs: always valid header bytes.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn add_cookie(response: &mut Response, value: HeaderValue) {
    if !value.is_empty() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn set_session_cookies(app: &App, response: &mut Response, issued: &IssuedSession) {
    add_cookie(
        response,
        build_cookie(app, SESSION_COOKIE, issued.access.clone(), ACCESS_TTL, "/"),
    );
    add_cookie(
        response,
        build_cookie(
            app,
            REFRESH_COOKIE,
            issued.refresh.clone(),
            issued.expires_at - now(),
            "/",
        ),
    );
}

fn clear_session_cookies(app: &App, response: &mut Response) {
    add_cookie(
        response,
        build_cookie(app, SESSION_COOKIE, String::new(), 0, "/"),
    );
    add_cookie(
        response,
        build_cookie(app, REFRESH_COOKIE, String::new(), 0, "/"),
    );
}

/// A page with the shared layout and a Content-Security-Policy that allows
/// nothing but its own inline style and same-origin forms.
fn page(status: StatusCode, title: &str, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Nimbus" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    };
    let mut response =
        warp::reply::with_status(warp::reply::html(markup.into_string()), status).into_response();
    crate::ui::layout::protect(
        &mut response,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const STYLE: &str = "
:root { color-scheme: dark light; --bg: #0d1117; --fg: #e6edf3; --muted: #8b949e;
  --line: #30363d; --accent: #2f81f7; --bad: #f85149; --good: #3fb950; }
@media (prefers-color-scheme: light) { :root { --bg: #ffffff; --fg: #1f2328;
  --muted: #59636e; --line: #d1d9e0; --accent: #0969da; --bad: #cf222e; --good: #1a7f37; } }
body { background: var(--bg); color: var(--fg); font: 16px/1.5 system-ui, sans-serif; margin: 0; }
main { max-width: 28rem; margin: 3rem auto; padding: 0 1rem; }
label { display: block; margin: .75rem 0 .25rem; }
input { width: 100%; box-sizing: border-box; padding: .5rem; background: transparent;
  color: inherit; border: 1px solid var(--line); border-radius: 6px; }
button, a.button { display: inline-block; margin-top: 1rem; padding: .5rem 1rem; border: 0;
  border-radius: 6px; background: var(--accent); color: #fff; text-decoration: none; cursor: pointer; }
.error { color: var(--bad); } .ok { color: var(--good); } .muted { color: var(--muted); }
";

fn redirect(location: &str) -> Response {
    let mut response = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A local path to go to after signing in; anything else (other hosts,
/// `//host`, backslashes) becomes the default.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => DEFAULT_LANDING.to_owned(),
    }
}

fn query<T: for<'de> Deserialize<'de> + Default>(parts: &RequestParts) -> T {
    parts
        .query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

async fn read_form<T: for<'de> Deserialize<'de>>(parts: RequestParts) -> Result<T, WebError> {
    let bytes = body::read_limited(parts.body, MAX_FORM_BYTES)
        .await
        .map_err(|e| WebError::bad_request(e.to_string()))?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| WebError::bad_request(format!("invalid form: {e}")))
}

/// Read and drop a refused form's body (bounded), so the connection stays
/// usable: a response sent before the request body was read makes the
/// server close a connection the client may already be reusing.
async fn drain(parts: RequestParts) {
    let _ = body::read_limited(parts.body, MAX_FORM_BYTES).await;
}

/// Refuse a state-changing request another site made the browser send.
pub(crate) fn check_origin(app: &App, parts: &RequestParts) -> Result<(), WebError> {
    let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return Err(WebError::forbidden(
            "cross-site form submissions are refused",
        ));
    }
    let Some(origin) = text("origin") else {
        return Ok(());
    };
    let expected = match &app.config.public_url {
        Some(url) => origin_of(url),
        None => text("host").map(|host| format!("http://{host}")),
    };
    let host_https = text("host").map(|host| format!("https://{host}"));
    if Some(origin.to_owned()) == expected || Some(origin.to_owned()) == host_https {
        Ok(())
    } else {
        Err(WebError::forbidden(format!(
            "form submitted from another origin ({origin}) refused"
        )))
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

/// Constant-time comparison of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The anti-CSRF token for a form shown to someone not signed in: the
/// `nimbus_csrf` cookie's, or a new one to set.
fn anonymous_csrf(parts: &RequestParts) -> (String, bool) {
    match cookie_value(&parts.headers, CSRF_COOKIE) {
        Some(value) if value.len() >= 16 => (value, false),
        _ => (random_string(24), true),
    }
}

fn with_csrf_cookie(app: &App, mut response: Response, csrf: &str, new: bool) -> Response {
    if new {
        add_cookie(
            &mut response,
            build_cookie(app, CSRF_COOKIE, csrf.to_owned(), 24 * 3600, "/"),
        );
    }
    response
}

/// A form whose CSRF token does not match.
fn stale_form() -> WebError {
    WebError::forbidden(
        "the form's security token is missing or stale; reload the page and try again",
    )
}

/// Check the CSRF token of a form posted by someone not signed in.
fn check_anonymous_csrf(headers: &HeaderMap, presented: &str) -> Result<(), WebError> {
    match cookie_value(headers, CSRF_COOKIE) {
        Some(expected) if same_token(&expected, presented) => Ok(()),
        _ => Err(stale_form()),
    }
}

fn error_page(err: WebError) -> Response {
    let status = err.status;
    let retry = err.retry_after;
    let title = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot continue",
    };
    let mut response = page(
        status,
        title,
        html! {
            p.error { (err.message) }
            p { a href="/login" { "Back to sign in" } }
        },
    );
    if let Some(seconds) = retry
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn provider_links(app: &App, invite: Option<&str>) -> Markup {
    html! {
        @for (id, name) in app.providers.list() {
            p {
                @let href = match invite {
                    Some(secret) => format!("/login/{id}?invite={secret}"),
                    None => format!("/login/{id}"),
                };
                a.button href=(href) { "Sign in with " (name) }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

fn login_form(app: &App, csrf: &str, next: &str, user: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="next" value=(next);
            label for="user" { "User name" }
            input id="user" name="user" autocomplete="username" required value=(user);
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        (provider_links(app, None))
    }
}

/// `GET|POST /login`
pub async fn login(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    if parts.method == Method::POST {
        return Ok(login_post(app, parts).await.unwrap_or_else(error_page));
    }
    let next = safe_next(query::<NextQuery>(&parts).next.as_deref());
    let (csrf, new) = anonymous_csrf(&parts);
    let body = html! {
        @if let Some(session) = &parts.session {
            p.muted { "You are signed in as " strong { (session.user.name) } ". "
                a href="/account" { "Your account" } }
        }
        (login_form(app, &csrf, &next, "", None))
    };
    Ok(with_csrf_cookie(
        app,
        page(StatusCode::OK, "Sign in", body),
        &csrf,
        new,
    ))
}

async fn login_post(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    if let Err(err) = check_origin(app, &parts) {
        drain(parts).await;
        return Err(err);
    }
    let client = parts.client.clone();
    let headers = parts.headers.clone();
    let form: LoginForm = read_form(parts).await?;
    check_anonymous_csrf(&headers, &form.csrf)?;
    let client_key = client.as_deref().map(|ip| format!("ip:{ip}"));
    let account_key = format!("user:{}", form.user.to_ascii_lowercase());
    let started = Instant::now();
    for key in client_key.iter().chain(std::iter::once(&account_key)) {
        let limiter = if key.starts_with("ip:") {
            &app.limits.clients
        } else {
            &app.limits.accounts
        };
        if let Some(wait) = limiter.blocked(key, started) {
            app.audit(
                Audit::new("login.blocked")
                    .target(&form.user)
                    .client(client.as_deref()),
            )
            .await;
            return Err(too_many_failures(wait));
        }
    }
    let found = if form.user.len() <= 64 {
        app.meta
            .user_credentials(&form.user)
            .await
            .map_err(|e| WebError::internal(&e))?
    } else {
        None
    };
    let stored = found.as_ref().and_then(|(_, hash)| hash.clone());
    let password = form.password.clone();
    let matches =
        tokio::task::spawn_blocking(move || password::verify(&password, stored.as_deref()))
            .await
            .unwrap_or(false);
    let user = match (found, matches) {
        (Some((user, _)), true) => user,
        _ => {
            if let Some(key) = &client_key {
                app.limits.clients.record_failure(key, Instant::now());
            }
            app.limits
                .accounts
                .record_failure(&account_key, Instant::now());
            app.audit(
                Audit::new("login.failed")
                    .target(&form.user)
                    .client(client.as_deref())
                    .detail("wrong user name or password"),
            )
            .await;
            let next = safe_next(form.next.as_deref());
            return Ok(page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                login_form(
                    app,
                    &form.csrf,
                    &next,
                    &form.user,
                    Some("Wrong user name or password."),
                ),
            ));
        }
    };
    app.limits.accounts.forget(&account_key);
    start_session(
        app,
        &user,
        client.as_deref(),
        "password",
        &safe_next(form.next.as_deref()),
    )
    .await
}

/// Sign `user` in and send them to `next`.
async fn start_session(
    app: &App,
    user: &User,
    client: Option<&str>,
    method: &str,
    next: &str,
) -> Result<Response, WebError> {
    let issued = app
        .sessions
        .start(user, now())
        .await
        .map_err(|e| WebError::internal(&e))?;
    app.audit(
        Audit::new("login")
            .by_user(user)
            .client(client)
            .detail(format!("signed in with {method}")),
    )
    .await;
    tracing::info!(user = %user.name, method, "signed in");
    let mut response = redirect(next);
    set_session_cookies(app, &mut response, &issued);
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// `POST /logout`
pub async fn logout(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    if let Err(err) = check_origin(app, &parts) {
        drain(parts).await;
        return Ok(error_page(err));
    }
    let Some(session) = parts.session.clone() else {
        let mut response = redirect("/login");
        clear_session_cookies(app, &mut response);
        return Ok(response);
    };
    let client = parts.client.clone();
    let form: CsrfForm = read_form(parts).await?;
    if !same_token(&session.csrf, &form.csrf) {
        return Ok(error_page(stale_form()));
    }
    app.sessions
        .end(&session.id, now())
        .await
        .map_err(|e| WebError::internal(&e))?;
    app.audit(
        Audit::new("logout")
            .by_user(&session.user)
            .client(client.as_deref()),
    )
    .await;
    let mut response = redirect("/login");
    clear_session_cookies(app, &mut response);
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
struct ProviderQuery {
    invite: Option<String>,
}

/// `GET /login/{provider}`: off to the identity provider.
pub async fn login_provider(
    app: &App,
    provider: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let invite = query::<ProviderQuery>(&parts).invite;
    let invitation_hash = invite.as_deref().map(|secret| token::hash(secret).to_vec());
    match app.providers.begin(provider, invitation_hash, now()).await {
        Ok((url, state)) => {
            let mut response = redirect(&url);
            add_cookie(
                &mut response,
                build_cookie(
                    app,
                    LOGIN_STATE_COOKIE,
                    state,
                    nimbus_auth::oidc::FLOW_TTL,
                    "/login",
                ),
            );
            Ok(response)
        }
        Err(err) => Ok(error_page(oidc_error(err))),
    }
}

fn oidc_error(err: OidcError) -> WebError {
    match err {
        OidcError::UnknownProvider(_) => WebError::not_found(err.to_string()),
        OidcError::Metadata(err) => WebError::internal(&err),
        OidcError::Discovery(_) | OidcError::Exchange(_) | OidcError::UserInfo(_) => {
            tracing::warn!(error = %err, "identity provider failure");
            WebError::new(StatusCode::BAD_GATEWAY, err.to_string())
        }
        OidcError::Config(_) => WebError::internal(&err),
        OidcError::UnknownState
        | OidcError::WrongProvider
        | OidcError::NoIdToken
        | OidcError::IdToken(_) => WebError::bad_request(err.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/{provider}/callback`
pub async fn login_callback(
    app: &App,
    provider: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let mut response = callback_inner(app, provider, &parts)
        .await
        .unwrap_or_else(|err| {
            // Refusals are worth auditing; provider outages are logged.
            error_page(err)
        });
    add_cookie(
        &mut response,
        build_cookie(app, LOGIN_STATE_COOKIE, String::new(), 0, "/login"),
    );
    Ok(response)
}

async fn callback_inner(
    app: &App,
    provider: &str,
    parts: &RequestParts,
) -> Result<Response, WebError> {
    let client = parts.client.as_deref();
    let refuse = async |detail: String, err: WebError| {
        app.audit(
            Audit::new("login.failed")
                .target(provider)
                .client(client)
                .detail(detail),
        )
        .await;
        Err::<Response, WebError>(err)
    };
    let query: CallbackQuery = query(parts);
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        let message = format!("the identity provider refused the sign-in: {error} {description}");
        return refuse(message.clone(), WebError::forbidden(message)).await;
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return Err(WebError::bad_request(
            "the callback lacks its code or state parameter",
        ));
    };
    let bound = cookie_value(&parts.headers, LOGIN_STATE_COOKIE);
    if !bound.is_some_and(|cookie| same_token(&cookie, &state)) {
        return refuse(
            "state does not match this browser's sign-in".into(),
            WebError::bad_request(
                "this sign-in was not started in this browser (its state does not match); start again",
            ),
        )
        .await;
    }
    let completed: CompletedLogin =
        match app.providers.complete(provider, &state, &code, now()).await {
            Ok(completed) => completed,
            Err(err) => {
                let detail = err.to_string();
                return refuse(detail, oidc_error(err)).await;
            }
        };
    let identity = completed.identity;
    if let Some(user) = app
        .meta
        .user_by_identity(&identity.provider, &identity.subject)
        .await
        .map_err(|e| WebError::internal(&e))?
    {
        return start_session(app, &user, client, provider, DEFAULT_LANDING).await;
    }
    let Some(invitation) = completed.invitation_hash else {
        return refuse(
            format!(
                "no account is linked to {} identity {}",
                identity.provider, identity.subject
            ),
            WebError::forbidden(format!(
                "No Nimbus account is linked to this {} identity. Ask the owner for an invitation, \
                 or to link the identity to your account.",
                identity.provider
            )),
        )
        .await;
    };
    let base = account_name(identity.preferred_name.as_deref(), &identity.subject);
    let mut attempt = 0;
    loop {
        let name = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}-{}", attempt + 1)
        };
        let account = NewAccount {
            name,
            password_hash: None,
            identity: Some((identity.provider.clone(), identity.subject.clone())),
        };
        match accept_invitation(app, &invitation, &account, client, provider).await? {
            Ok(user) => {
                return start_session(app, &user, client, provider, DEFAULT_LANDING).await;
            }
            Err(InvitationRefusal::NameTaken(_)) if attempt < 5 => attempt += 1,
            Err(refusal) => {
                return refuse(refusal.to_string(), invitation_error(refusal)).await;
            }
        }
    }
}

/// Accept the invitation of `hash` for `account` (made with `how`: a
/// provider or a password), recording it in the audit log.
async fn accept_invitation(
    app: &App,
    hash: &[u8],
    account: &NewAccount,
    client: Option<&str>,
    how: &str,
) -> Result<Result<User, InvitationRefusal>, WebError> {
    let outcome = app
        .meta
        .accept_invitation(hash, account, now())
        .await
        .map_err(|e| WebError::internal(&e))?;
    if let Ok(user) = &outcome {
        app.audit(
            Audit::new("invitation.accepted")
                .by_user(user)
                .client(client)
                .detail(format!("with {how}")),
        )
        .await;
    }
    Ok(outcome)
}

/// A valid user name from a provider's suggestion.
fn account_name(preferred: Option<&str>, subject: &str) -> String {
    let cleaned: String = preferred
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_start_matches(['.', '-'])
        .chars()
        .take(48)
        .collect();
    if validate_user_name(&cleaned).is_ok() {
        cleaned
    } else {
        let digest = token::hash(subject);
        format!("user-{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2])
    }
}

fn invitation_error(refusal: InvitationRefusal) -> WebError {
    let status = match refusal {
        InvitationRefusal::Unknown => StatusCode::NOT_FOUND,
        InvitationRefusal::Used | InvitationRefusal::Expired | InvitationRefusal::Revoked => {
            StatusCode::GONE
        }
        InvitationRefusal::NameTaken(_) | InvitationRefusal::IdentityLinked => StatusCode::CONFLICT,
    };
    WebError::new(status, refusal.to_string())
}

#[derive(Deserialize)]
struct InviteForm {
    user: String,
    password: String,
    csrf: String,
}

fn invite_form(app: &App, secret: &str, csrf: &str, user: &str, error: Option<&str>) -> Markup {
    html! {
        p { "Choose a user name and a password for your new account." }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action=(format!("/invite/{secret}")) {
            input type="hidden" name="csrf" value=(csrf);
            label for="user" { "User name" }
            input id="user" name="user" autocomplete="username" required value=(user);
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="new-password" required;
            p.muted { "At least " (password::MIN_LENGTH) " characters, hard to guess." }
            button type="submit" { "Create account" }
        }
        @if !app.providers.is_empty() {
            p.muted { "Or use an existing identity:" }
            (provider_links(app, Some(secret)))
        }
    }
}

/// `GET|POST /invite/{secret}`
pub async fn invite(app: &App, secret: &str, parts: RequestParts) -> Result<Response, WebError> {
    let hash = token::hash(secret);
    let invitation = app
        .meta
        .invitation_by_hash(&hash)
        .await
        .map_err(|e| WebError::internal(&e))?;
    let refusal = match &invitation {
        None => Some(InvitationRefusal::Unknown),
        Some(invitation) => invitation.unusable(now()),
    };
    if let Some(refusal) = refusal {
        return Ok(error_page(invitation_error(refusal)));
    }
    if parts.method != Method::POST {
        let (csrf, new) = anonymous_csrf(&parts);
        let response = page(
            StatusCode::OK,
            "Join Nimbus",
            invite_form(app, secret, &csrf, "", None),
        );
        return Ok(with_csrf_cookie(app, response, &csrf, new));
    }
    if let Err(err) = check_origin(app, &parts) {
        drain(parts).await;
        return Ok(error_page(err));
    }
    let client = parts.client.clone();
    let headers = parts.headers.clone();
    let form: InviteForm = read_form(parts).await?;
    if let Err(err) = check_anonymous_csrf(&headers, &form.csrf) {
        return Ok(error_page(err));
    }
    let again = |status: StatusCode, message: String| {
        page(
            status,
            "Join Nimbus",
            invite_form(app, secret, &form.csrf, &form.user, Some(&message)),
        )
    };
    if let Err(err) = validate_user_name(&form.user) {
        return Ok(again(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()));
    }
    let (password, user_name) = (form.password.clone(), form.user.clone());
    let hashed = tokio::task::spawn_blocking(move || {
        password::check_strength(&password, &user_name).and_then(|()| password::hash(&password))
    })
    .await
    .map_err(|e| WebError::internal(&e))?;
    let hashed = match hashed {
        Ok(hashed) => hashed,
        Err(err) => return Ok(again(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())),
    };
    let account = NewAccount {
        name: form.user.clone(),
        password_hash: Some(hashed),
        identity: None,
    };
    match accept_invitation(app, &hash, &account, client.as_deref(), "a password").await? {
        Ok(user) => start_session(app, &user, client.as_deref(), "password", DEFAULT_LANDING).await,
        Err(refusal @ InvitationRefusal::NameTaken(_)) => {
            Ok(again(StatusCode::CONFLICT, refusal.to_string()))
        }
        Err(refusal) => Ok(error_page(invitation_error(refusal))),
    }
}

/// `GET /account`
pub async fn account(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    let Some(session) = &parts.session else {
        return Ok(redirect("/login?next=/account"));
    };
    let identities = app
        .meta
        .list_identities(session.user.id)
        .await
        .map_err(|e| WebError::internal(&e))?;
    let has_password = app
        .meta
        .user_credentials(&session.user.name)
        .await
        .map_err(|e| WebError::internal(&e))?
        .is_some_and(|(_, hash)| hash.is_some());
    let changed = parts
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "password=changed"));
    let body = html! {
        @if changed { p.ok role="status" { "Password changed. Other sessions were signed out." } }
        p { "Signed in as " strong id="user" { (session.user.name) }
            @if session.user.is_owner { " (owner)" } }
        @if !identities.is_empty() {
            p.muted { "Linked identities:" }
            ul { @for (provider, subject) in &identities { li { (provider) ": " (subject) } } }
        }
        p { a #tokens-link href="/account/tokens" { "Personal access tokens" } }
        form method="post" action="/logout" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" { "Sign out" }
        }
        h2 { @if has_password { "Change password" } @else { "Set a password" } }
        form method="post" action="/account/password" {
            input type="hidden" name="csrf" value=(session.csrf);
            @if has_password {
                label for="current" { "Current password" }
                input id="current" name="current" type="password" autocomplete="current-password" required;
            }
            label for="new" { "New password" }
            input id="new" name="new" type="password" autocomplete="new-password" required;
            button type="submit" { "Save password" }
        }
    };
    Ok(page(StatusCode::OK, "Your account", body))
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    current: Option<String>,
    new: String,
}

/// `POST /account/password`: change the password, sign out every other
/// session, and start a new one here.
pub async fn account_password(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    if let Err(err) = check_origin(app, &parts) {
        drain(parts).await;
        return Ok(error_page(err));
    }
    let Some(session) = parts.session.clone() else {
        return Ok(redirect("/login?next=/account"));
    };
    let client = parts.client.clone();
    let form: PasswordForm = read_form(parts).await?;
    if !same_token(&session.csrf, &form.csrf) {
        return Ok(error_page(stale_form()));
    }
    let user = session.user.clone();
    let stored = app
        .meta
        .user_credentials(&user.name)
        .await
        .map_err(|e| WebError::internal(&e))?
        .and_then(|(_, hash)| hash);
    let (current, new, name) = (form.current.clone(), form.new.clone(), user.name.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        if let Some(stored) = &stored
            && !password::verify(current.as_deref().unwrap_or(""), Some(stored))
        {
            return Err("The current password is wrong.".to_owned());
        }
        password::check_strength(&new, &name)
            .and_then(|()| password::hash(&new))
            .map_err(|e| format!("{}.", capitalise(&e.to_string())))
    })
    .await
    .map_err(|e| WebError::internal(&e))?;
    let hashed = match outcome {
        Ok(hashed) => hashed,
        Err(message) => {
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Your account",
                html! {
                    p.error role="alert" { (message) }
                    p { a href="/account" { "Back" } }
                },
            ));
        }
    };
    app.meta
        .set_password_hash(user.id, Some(&hashed))
        .await
        .map_err(|e| WebError::internal(&e))?;
    app.meta
        .revoke_user_sessions(user.id, now())
        .await
        .map_err(|e| WebError::internal(&e))?;
    app.audit(
        Audit::new("password.changed")
            .by_user(&user)
            .client(client.as_deref()),
    )
    .await;
    let issued = app
        .sessions
        .start(&user, now())
        .await
        .map_err(|e| WebError::internal(&e))?;
    let mut response = redirect("/account?password=changed");
    set_session_cookies(app, &mut response, &issued);
    Ok(response)
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `GET /.well-known/jwks.json`
pub fn jwks(app: &App) -> Response {
    let mut response = warp::reply::json(app.sessions.keys().jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/demo")), "/demo");
        for bad in [
            "https://evil.test/",
            "//evil.test/",
            "/\\evil.test",
            "javascript:alert(1)",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), DEFAULT_LANDING, "{bad:?}");
        }
        assert_eq!(safe_next(None), DEFAULT_LANDING);
    }

    #[test]
    fn provider_names_become_valid_user_names() {
        assert_eq!(account_name(Some("alice"), "1"), "alice");
        assert_eq!(account_name(Some("Jane Doe"), "1"), "Jane-Doe");
        assert_eq!(account_name(Some(".x"), "1"), "x");
        let fallback = account_name(Some("日本"), "1");
        assert!(fallback.starts_with("user-"), "{fallback}");
        assert!(validate_user_name(&account_name(None, "1")).is_ok());
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert_eq!(
            origin_of("https://h.test:8443/x").as_deref(),
            Some("https://h.test:8443")
        );
    }
}
