//! The signed-in user's personal access tokens:
//!
//! - `GET /account/tokens`: the list (name, scopes, created, expiry, last
//!   use, state) and the form for a new one;
//! - `POST /account/tokens`: issue one; its secret is shown on the answer,
//!   once, and never stored in the clear;
//! - `POST /account/tokens/{id}/revoke`.
//!
//! Tokens are issued and revoked by the same functions as the JSON API
//! (`api::issue_token_for`, `api::revoke_own_token`), with the same audit
//! entries; forms are checked as in [`super::settings`].

use super::layout::{Viewer, error_page, page, when};
use super::settings::{capitalise, checked_form, done_message, no_store, redirect};
use crate::error::WebError;
use crate::{App, RequestParts};
use maud::{Markup, html};
use nimbus_auth::Surface;
use nimbus_auth::session::ActiveSession;
use nimbus_types::metadata::TokenInfo;
use nimbus_types::{Scope, unix_now};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// The expiries offered, in days; `None`: never.
const EXPIRIES: [(Option<u32>, &str); 5] = [
    (Some(7), "7 days"),
    (Some(30), "30 days"),
    (Some(90), "90 days"),
    (Some(365), "a year"),
    (None, "never"),
];

/// What a scope allows, for the form.
fn scope_help(scope: Scope) -> &'static str {
    match scope {
        Scope::RepoRead => "clone and fetch",
        Scope::RepoWrite => "push (implies repo:read)",
        Scope::Admin => "repository settings (implies repo:write)",
        Scope::Api => "use the JSON API",
    }
}

/// The signed-in user, once they may manage their own tokens.
async fn signed_in(app: &App, parts: &RequestParts) -> Result<(ActiveSession, Viewer), Response> {
    let Some(session) = parts.session.clone() else {
        return Err(redirect("/login?next=/account/tokens"));
    };
    let viewer = Viewer {
        name: Some(session.user.name.clone()),
    };
    match app
        .access
        .authorize_self(&session.principal(), Surface::Web)
    {
        nimbus_auth::Decision::Allow => Ok((session, viewer)),
        _ => Err(error_page(
            StatusCode::FORBIDDEN,
            &viewer,
            "You may not manage tokens.",
        )),
    }
}

/// What the new-token form holds.
struct Entered {
    description: String,
    scopes: Vec<String>,
    expiry: String,
}

impl Default for Entered {
    fn default() -> Self {
        Entered {
            description: String::new(),
            scopes: vec![Scope::RepoRead.as_str().to_owned()],
            expiry: "30".to_owned(),
        }
    }
}

fn state(token: &TokenInfo, now: i64) -> &'static str {
    if token.revoked_at.is_some() {
        "revoked"
    } else if token.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

async fn list_page(
    app: &App,
    status: StatusCode,
    session: &ActiveSession,
    viewer: &Viewer,
    done: Option<&str>,
    error: Option<&str>,
    entered: &Entered,
) -> Result<Response, Response> {
    let tokens = app
        .meta
        .list_tokens(session.user.id)
        .await
        .map_err(|e| WebError::internal(&e).into_response())?;
    let now = unix_now();
    let body = html! {
        h1 { "Personal access tokens" }
        p.muted { "Tokens act as you for git over HTTPS (as the password) and for the API, limited to their scopes. "
            a href="/account" { "Back to your account" } }
        @if let Some(done) = done { p.ok #done role="status" { (done) } }
        @if let Some(error) = error { p.error #form-error role="alert" { (error) } }
        @if tokens.is_empty() {
            p.muted #no-tokens { "You have no tokens." }
        } @else {
            div.box { table.list #tokens {
                @for token in &tokens {
                    @let state = state(token, now);
                    tr id={ "token-" (token.id) } {
                        td {
                            strong { @if token.description.is_empty() { "(no name)" } @else { (token.description) } }
                            " " span.badge.state { (state) }
                            br; span.muted.scopes { (token.scopes) }
                        }
                        td.when {
                            "created " (when(token.created_at)) br;
                            @match token.expires_at { Some(at) => { "expires " (when(at)) } None => { "never expires" } }
                            br;
                            @match token.last_used_at { Some(at) => { "last used " (when(at)) } None => { "never used" } }
                        }
                        td {
                            @if token.revoked_at.is_none() {
                                form method="post" action={ "/account/tokens/" (token.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "New token" }
        (new_form(session, entered))
    };
    Ok(page(status, "Personal access tokens", viewer, body))
}

fn new_form(session: &ActiveSession, entered: &Entered) -> Markup {
    html! {
        form #new-token method="post" action="/account/tokens" {
            input type="hidden" name="csrf" value=(session.csrf);
            p { label for="description" { "Name" } br;
                input #description name="description" size="40" maxlength="200" placeholder="laptop, CI…" value=(entered.description); }
            fieldset {
                legend { "Scopes" }
                @for scope in Scope::ALL {
                    p { label {
                        input type="checkbox" name="scopes" value=(scope.as_str()) checked[entered.scopes.iter().any(|s| s == scope.as_str())];
                        " " code { (scope.as_str()) } " " span.muted { (scope_help(scope)) }
                    } }
                }
            }
            p { label for="expiry" { "Expires after" } br;
                select #expiry name="expiry" {
                    @for (days, label) in EXPIRIES {
                        @let value = days.map_or_else(|| "never".to_owned(), |d| d.to_string());
                        option value=(value) selected[value == entered.expiry] { (label) }
                    }
                } }
            p { button type="submit" { "Create token" } }
        }
    }
}

/// `GET|POST /account/tokens`
pub async fn tokens(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    let (session, viewer) = match signed_in(app, &parts).await {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    let answer = if parts.method == Method::POST {
        create(app, &session, &viewer, parts).await
    } else {
        list_page(
            app,
            StatusCode::OK,
            &session,
            &viewer,
            done_message(parts.query.as_deref()),
            None,
            &Entered::default(),
        )
        .await
    };
    Ok(no_store(answer.unwrap_or_else(|response| response)))
}

async fn create(
    app: &App,
    session: &ActiveSession,
    viewer: &Viewer,
    parts: RequestParts,
) -> Result<Response, Response> {
    let client = parts.client.clone();
    let form = checked_form(app, session, viewer, parts).await?;
    let entered = Entered {
        description: form.get("description").trim().to_owned(),
        scopes: form.all("scopes"),
        expiry: form.get("expiry").to_owned(),
    };
    let again = |message: String| {
        let entered = &entered;
        async move {
            list_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                session,
                viewer,
                None,
                Some(&message),
                entered,
            )
            .await
            .unwrap_or_else(|response| response)
        }
    };
    let Some((days, _)) = EXPIRIES.iter().find(|(days, _)| {
        days.map_or_else(|| "never".to_owned(), |d| d.to_string()) == entered.expiry
    }) else {
        return Err(again("Choose when the token expires.".to_owned()).await);
    };
    if entered.description.chars().count() > 200 {
        return Err(again("The name must be at most 200 characters long.".to_owned()).await);
    }
    let principal = session.principal();
    let issued = crate::api::issue_token_for(
        app,
        &principal,
        &session.user,
        &crate::api::TokenRequest {
            description: &entered.description,
            scopes: &entered.scopes.join(","),
            expires_in_days: *days,
        },
        client.as_deref(),
    )
    .await;
    let issued = match issued {
        Ok(issued) => issued,
        Err(err) if err.status.is_client_error() && err.status != StatusCode::FORBIDDEN => {
            return Err(again(format!("{}.", capitalise(&err.message))).await);
        }
        Err(err) => return Err(error_page(err.status, viewer, &err.message)),
    };
    let body = html! {
        h1 { "Personal access tokens" }
        p.ok role="status" { "Token created." }
        p { "Copy your new token now. It is shown only this once; Nimbus keeps only its hash." }
        p { code.clone #new-token-secret { (issued.secret) } }
        p.muted { "Scopes: " (issued.scopes)
            @match issued.expires_at { Some(at) => { "; expires " (when(at)) "." } None => { "; never expires." } } }
        p { a href="/account/tokens" { "Back to your tokens" } }
    };
    Ok(page(
        StatusCode::CREATED,
        "New token · Personal access tokens",
        viewer,
        body,
    ))
}

/// `POST /account/tokens/{id}/revoke`
pub async fn revoke(app: &App, id: &str, parts: RequestParts) -> Result<Response, WebError> {
    let (session, viewer) = match signed_in(app, &parts).await {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    let client = parts.client.clone();
    if let Err(response) = checked_form(app, &session, &viewer, parts).await {
        return Ok(response);
    }
    match crate::api::revoke_own_token(
        app,
        &session.principal(),
        session.user.id,
        id,
        client.as_deref(),
    )
    .await
    {
        Ok(()) => Ok(redirect("/account/tokens?done=token-revoked")),
        Err(err) => Ok(error_page(err.status, &viewer, "No such token of yours.")),
    }
}
