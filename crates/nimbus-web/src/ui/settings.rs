//! The repository settings pages, for its administrators (the owner and
//! admin collaborators):
//!
//! - `GET|POST /{repo}/settings`: visibility and default branch;
//!   `POST /{repo}/settings/delete`: delete it (the owner; the name must be
//!   typed to confirm);
//! - `GET|POST /{repo}/settings/collaborators`: list, add or change;
//!   `POST …/collaborators/remove`; `POST …/collaborators/invite`: an
//!   invitation link granting access (the owner, who alone may invite);
//! - `GET|POST /{repo}/settings/hooks`: list and add webhooks;
//!   `GET|POST …/hooks/{id}`: edit one and see its deliveries
//!   (`?delivery={id}`: one delivery's request and response);
//!   `POST …/hooks/{id}/delete`;
//!   `POST …/hooks/{id}/deliveries/{delivery}/redeliver`.
//!
//! Every change goes through the same functions as the JSON API (`api`,
//! `api_webhooks`, `api_identity`), so checks and audit entries are the
//! same. Forms carry the session's CSRF token and are refused from other
//! origins; a change answers `303` back to its page with a fixed
//! confirmation (`?done=…`), bad input re-renders the form with `422`.

use super::layout::{Viewer, error_page, page, when};
use crate::error::WebError;
use crate::{App, RequestParts, body};
use maud::{Markup, html};
use nimbus_auth::session::ActiveSession;
use nimbus_auth::{Decision, InstanceAction, RepoAction, Surface};
use nimbus_types::events::EVENT_TYPES;
use nimbus_types::webhooks::{Delivery, Webhook};
use nimbus_types::{Access, Principal, RepoUpdate, Repository, Visibility};
use nimbus_webhooks::redact_url;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// The largest settings form accepted.
const MAX_SETTINGS_FORM_BYTES: u64 = 32 << 10;
/// Deliveries listed on a webhook's page.
const DELIVERIES_SHOWN: u32 = 30;
/// How long an invitation made on the collaborators page lasts.
const INVITATION_HOURS: u32 = crate::api_identity::DEFAULT_INVITATION_HOURS;

/// A form body's fields in order, repeated names kept (checkboxes).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `name`, or `""`.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// Whether the form has the field at all (a ticked checkbox).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }
}

/// A `303 See Other` to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    let mut response = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Where to sign in and come back to this page.
pub(crate) fn sign_in(parts: &RequestParts) -> Response {
    redirect(&format!("/login?next={}", super::path(&parts.path)))
}

/// A page that must not be cached (it shows a secret, or private settings).
pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The checks of every state-changing form, as in the editor: the request
/// comes from this site, the body is a bounded form, and it carries the
/// session's CSRF token. The refusal page otherwise (nothing was changed).
pub(crate) async fn checked_form(
    app: &App,
    session: &ActiveSession,
    viewer: &Viewer,
    parts: RequestParts,
) -> Result<Form, Response> {
    if let Err(err) = crate::session_http::check_origin(app, &parts) {
        return Err(error_page(err.status, viewer, &err.message));
    }
    let bytes = match body::read_limited(parts.body, MAX_SETTINGS_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return Err(error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                viewer,
                &err.to_string(),
            ));
        }
    };
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&bytes) {
        Ok(pairs) => pairs,
        Err(err) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                viewer,
                &format!("invalid form: {err}"),
            ));
        }
    };
    let form = Form(pairs);
    if !crate::session_http::same_token(&session.csrf, form.get("csrf")) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            viewer,
            "This form is stale or was not sent from this site; reload the page.",
        ));
    }
    Ok(form)
}

/// The confirmation for `?done=<key>`: a fixed text per key, never the
/// query's own text.
pub(crate) fn done_message(query: Option<&str>) -> Option<&'static str> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).ok()?;
    let key = pairs.into_iter().find(|(name, _)| name == "done")?.1;
    Some(match key.as_str() {
        "saved" => "Settings saved.",
        "collaborator-saved" => "Collaborator saved.",
        "collaborator-removed" => "Collaborator removed.",
        "invitation-revoked" => "Invitation revoked.",
        "hook-created" => "Webhook added.",
        "hook-saved" => "Webhook saved.",
        "hook-deleted" => "Webhook deleted.",
        "redelivered" => "The delivery was queued again.",
        "token-revoked" => "Token revoked.",
        _ => return None,
    })
}

/// A failed change as the form's message: input the user can fix (`422`,
/// an unknown name, a conflict) re-renders the form; anything else stays an
/// error, shown as a page of its own.
fn fixable(err: WebError) -> Result<String, WebError> {
    let status = err.status;
    if status.is_client_error() && status != StatusCode::FORBIDDEN {
        Ok(capitalise(&err.message))
    } else {
        Err(err)
    }
}

/// An error as a page.
fn error_response(viewer: &Viewer) -> impl Fn(WebError) -> Response + '_ {
    move |err| error_page(err.status, viewer, &err.message)
}

/// `text` with its first letter upper case (API messages start lower case).
pub(crate) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    }
}

/// The repository, once the signed-in visitor may administer it.
struct Admin {
    session: ActiveSession,
    viewer: Viewer,
    principal: Principal,
    repo: Repository,
    /// Whether they may delete it too (the owner).
    can_delete: bool,
    /// Whether they may invite new accounts (the owner).
    can_invite: bool,
}

/// Anonymous visitors are sent to sign in; those who may read but not
/// administer get `403`, others the `404` of a missing repository.
async fn admin(app: &App, name: &str, parts: &RequestParts) -> Result<Admin, Response> {
    let Some(session) = parts.session.clone() else {
        return Err(sign_in(parts));
    };
    let viewer = Viewer {
        name: Some(session.user.name.clone()),
    };
    let principal = session.principal();
    let (decision, repo) = super::authorize(app, name, &principal, RepoAction::Admin).await?;
    let repo = match (decision, repo) {
        (Decision::Allow, Some(repo)) => repo,
        (Decision::Unauthenticated, _) => return Err(sign_in(parts)),
        (Decision::Forbidden(_), Some(repo)) => {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                &viewer,
                &format!(
                    "Only administrators of '{}' may change its settings.",
                    repo.name
                ),
            ));
        }
        _ => {
            return Err(error_page(
                StatusCode::NOT_FOUND,
                &viewer,
                &format!("Repository '{name}' was not found."),
            ));
        }
    };
    let allowed = |decision: Result<Decision, nimbus_auth::AuthError>| match decision {
        Ok(decision) => Ok(decision == Decision::Allow),
        Err(err) => Err(crate::git_http::auth_failure(err)),
    };
    let can_delete = allowed(
        app.access
            .authorize_repo(&principal, Some(&repo), RepoAction::Delete, Surface::Web)
            .await,
    )
    .map_err(WebError::into_response)?;
    let can_invite =
        app.access
            .authorize_instance(&principal, InstanceAction::ManageUsers, Surface::Web)
            == Decision::Allow;
    Ok(Admin {
        session,
        viewer,
        principal,
        repo,
        can_delete,
        can_invite,
    })
}

/// `GET|POST /{repo}/settings/…`
pub async fn settings(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let admin = match admin(app, name, &parts).await {
        Ok(admin) => admin,
        Err(response) => return Ok(response),
    };
    let post = parts.method == Method::POST;
    let segments: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
    let response = match (segments.as_slice(), post) {
        ([], false) => general(app, &admin, &parts).await,
        ([], true) => general_post(app, &admin, parts).await,
        (["delete"], true) => delete_post(app, &admin, parts).await,
        (["collaborators"], false) => collaborators(app, &admin, &parts).await,
        (["collaborators"], true) => collaborator_post(app, &admin, parts).await,
        (["collaborators", "remove"], true) => collaborator_remove(app, &admin, parts).await,
        (["collaborators", "invite"], true) => invite_post(app, &admin, parts).await,
        (["collaborators", "invitations", id, "revoke"], true) => {
            invitation_revoke(app, &admin, id, parts).await
        }
        (["hooks"], false) => hooks(app, &admin, &parts).await,
        (["hooks"], true) => hook_create(app, &admin, parts).await,
        (["hooks", id], false) => hook_page(app, &admin, id, &parts).await,
        (["hooks", id], true) => hook_update(app, &admin, id, parts).await,
        (["hooks", id, "delete"], true) => hook_delete(app, &admin, id, parts).await,
        (["hooks", id, "deliveries", delivery, "redeliver"], true) => {
            redeliver(app, &admin, id, delivery, parts).await
        }
        _ => Ok(error_page(
            StatusCode::NOT_FOUND,
            &admin.viewer,
            "No such settings page.",
        )),
    };
    Ok(response.map(no_store).unwrap_or_else(|response| response))
}

/// The page's heading and tabs.
fn header(admin: &Admin, current: &str) -> Markup {
    let name = admin.repo.name.as_str();
    html! {
        h1 { a href={ "/" (name) } { (name) } " · Settings " span.badge { (admin.repo.visibility) } }
        nav.tabs {
            a.current[current == "general"] href={ "/" (name) "/settings" } { "General" }
            a.current[current == "collaborators"] href={ "/" (name) "/settings/collaborators" } { "Collaborators" }
            a.current[current == "hooks"] href={ "/" (name) "/settings/hooks" } { "Webhooks" }
        }
    }
}

fn notices(done: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        @if let Some(done) = done { p.ok #done role="status" { (done) } }
        @if let Some(error) = error { p.error #form-error role="alert" { (error) } }
    }
}

type Page = Result<Response, Response>;

/// The repository's branch names, sorted.
async fn branches(app: &App, repo: &Repository) -> Result<Vec<String>, Response> {
    let refs = app
        .meta
        .refs(repo.id)
        .await
        .map_err(|e| WebError::internal(&e).into_response())?;
    let mut names: Vec<String> = refs
        .iter()
        .filter_map(|r| {
            r.name
                .to_string()
                .strip_prefix("refs/heads/")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

async fn general(app: &App, admin: &Admin, parts: &RequestParts) -> Page {
    let branches = branches(app, &admin.repo).await?;
    Ok(general_page(
        StatusCode::OK,
        admin,
        &branches,
        done_message(parts.query.as_deref()),
        None,
    ))
}

fn general_page(
    status: StatusCode,
    admin: &Admin,
    branches: &[String],
    done: Option<&str>,
    error: Option<&str>,
) -> Response {
    let repo = &admin.repo;
    let name = repo.name.as_str();
    let choices = [
        (Visibility::Public, "Public", "Anyone can see and clone it."),
        (
            Visibility::Private,
            "Private",
            "Only the owner and its collaborators can see it.",
        ),
        (
            Visibility::Hidden,
            "Hidden",
            "Readable by anyone who knows its name, listed only to collaborators.",
        ),
    ];
    let body = html! {
        (header(admin, "general"))
        (notices(done, error))
        form #general method="post" action={ "/" (name) "/settings" } {
            input type="hidden" name="csrf" value=(admin.session.csrf);
            fieldset {
                legend { "Visibility" }
                @for (visibility, label, help) in choices {
                    p { label {
                        input type="radio" name="visibility" value=(visibility.as_str()) checked[repo.visibility == visibility];
                        " " strong { (label) } " " span.muted { (help) }
                    } }
                }
            }
            p { label for="default_branch" { "Default branch" } br;
                @if branches.is_empty() {
                    input #default_branch name="default_branch" value=(repo.default_branch) required;
                    " " span.muted { "The repository has no branches yet." }
                } @else {
                    select #default_branch name="default_branch" {
                        @for branch in branches {
                            option value=(branch) selected[*branch == repo.default_branch] { (branch) }
                        }
                    }
                }
            }
            p { button type="submit" { "Save" } }
        }
        div.box #danger-zone {
            div.head { strong.error { "Danger zone" } }
            div.markdown {
                @if admin.can_delete {
                    form #delete-repo method="post" action={ "/" (name) "/settings/delete" } {
                        input type="hidden" name="csrf" value=(admin.session.csrf);
                        p { "Deleting the repository removes its branches, tags, webhooks and collaborators. It cannot be undone." }
                        p { label for="confirm" { "Type " strong { (name) } " to confirm" } br;
                            input #confirm name="confirm" required autocomplete="off"; }
                        p { button type="submit" { "Delete this repository" } }
                    }
                } @else {
                    p.muted { "Only the instance owner can delete a repository." }
                }
            }
        }
    };
    page(status, &format!("Settings · {name}"), &admin.viewer, body)
}

async fn general_post(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let branches = branches(app, &admin.repo).await?;
    let again = |message: &str| {
        general_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            admin,
            &branches,
            None,
            Some(message),
        )
    };
    let Some(visibility) = Visibility::parse(form.get("visibility")) else {
        return Err(again("Choose public, private or hidden."));
    };
    let branch = form.get("default_branch").trim();
    if !branches.is_empty() && !branches.iter().any(|b| b == branch) {
        return Err(again(&format!("There is no branch named '{branch}'.")));
    }
    let repo = &admin.repo;
    let update = RepoUpdate {
        name: None,
        visibility: (visibility != repo.visibility).then_some(visibility),
        default_branch: (branch != repo.default_branch).then(|| branch.to_owned()),
    };
    if update.visibility.is_none() && update.default_branch.is_none() {
        return Ok(redirect(&format!("/{}/settings?done=saved", repo.name)));
    }
    match crate::api::update_repo(
        app,
        &admin.principal,
        &admin.repo,
        update,
        client.as_deref(),
    )
    .await
    {
        Ok(_) => Ok(redirect(&format!(
            "/{}/settings?done=saved",
            admin.repo.name
        ))),
        Err(err) => Err(again(&fixable(err).map_err(error_response(&admin.viewer))?)),
    }
}

async fn delete_post(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    if !admin.can_delete {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            &admin.viewer,
            "Only the instance owner can delete a repository.",
        ));
    }
    if form.get("confirm") != admin.repo.name.as_str() {
        let branches = branches(app, &admin.repo).await?;
        return Err(general_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            admin,
            &branches,
            None,
            Some("Type the repository's name exactly to delete it; nothing was deleted."),
        ));
    }
    match crate::api::delete_repo(app, &admin.principal, &admin.repo, client.as_deref()).await {
        Ok(()) => Ok(redirect("/")),
        Err(err) => Err(error_page(err.status, &admin.viewer, &err.message)),
    }
}

const LEVELS: [Access; 3] = [Access::Read, Access::Write, Access::Admin];

fn access_select(id: &str, current: Option<Access>) -> Markup {
    html! {
        select id=(id) name="access" {
            @for level in LEVELS {
                option value=(level.as_str()) selected[current == Some(level)] { (level.as_str()) }
            }
        }
    }
}

async fn collaborators(app: &App, admin: &Admin, parts: &RequestParts) -> Page {
    collaborators_page(
        app,
        StatusCode::OK,
        admin,
        done_message(parts.query.as_deref()),
        None,
        ("", None),
    )
    .await
}

/// The collaborators page; `entered` is the add form's user and level.
async fn collaborators_page(
    app: &App,
    status: StatusCode,
    admin: &Admin,
    done: Option<&str>,
    error: Option<&str>,
    entered: (&str, Option<Access>),
) -> Page {
    let listed = app
        .meta
        .list_collaborators(admin.repo.id)
        .await
        .map_err(|e| WebError::internal(&e).into_response())?;
    let pending = pending_invitations(app, admin).await?;
    let name = admin.repo.name.as_str();
    let csrf = admin.session.csrf.as_str();
    let body = html! {
        (header(admin, "collaborators"))
        (notices(done, error))
        @if listed.is_empty() {
            p.muted #no-collaborators { "No collaborators yet. The instance owner is admin on every repository." }
        } @else {
            div.box { table.list #collaborators {
                @for collaborator in &listed {
                    tr {
                        td { strong.user { (collaborator.user.name) } }
                        td {
                            form.inline method="post" action={ "/" (name) "/settings/collaborators" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="user" value=(collaborator.user.name);
                                (access_select(&format!("access-{}", collaborator.user.id.0), Some(collaborator.access)))
                                " " button type="submit" { "Change" }
                            }
                        }
                        td {
                            form.inline method="post" action={ "/" (name) "/settings/collaborators/remove" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="user" value=(collaborator.user.name);
                                button type="submit" { "Remove" }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "Add a collaborator" }
        form #add-collaborator method="post" action={ "/" (name) "/settings/collaborators" } {
            input type="hidden" name="csrf" value=(csrf);
            p {
                label for="user" { "User name" } br;
                input #user name="user" required value=(entered.0) autocomplete="off";
                " "
                (access_select("access", entered.1.or(Some(Access::Write))))
                " " button type="submit" { "Add" }
            }
            p.muted { "Read: clone and fetch. Write: push too. Admin: settings, collaborators and webhooks too." }
        }
        @if admin.can_invite {
            h2 { "Invite someone new" }
            form #invite method="post" action={ "/" (name) "/settings/collaborators/invite" } {
                input type="hidden" name="csrf" value=(csrf);
                p {
                    "Make an invitation link: whoever opens it creates an account and becomes a collaborator with "
                    (access_select("invite-access", Some(Access::Write)))
                    " access. It works once, for " (INVITATION_HOURS / 24) " days."
                }
                p { button type="submit" { "Create invitation link" } }
            }
            @if !pending.is_empty() {
                h3 { "Pending invitations" }
                div.box { table.list #invitations {
                    @for invitation in &pending {
                        tr {
                            td {
                                "Invitation " (invitation.id) ": "
                                @if let Some((_, access)) = &invitation.grant { strong { (access) } " access" }
                                @if let Some(by) = &invitation.created_by { span.muted { ", by " (by) } }
                            }
                            td.when { "expires " (when(invitation.expires_at)) }
                            td {
                                form.inline method="post" action={ "/" (name) "/settings/collaborators/invitations/" (invitation.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok(page(
        status,
        &format!("Collaborators · {name}"),
        &admin.viewer,
        body,
    ))
}

async fn collaborator_post(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let user_name = form.get("user").trim();
    let access = Access::parse(form.get("access"));
    let outcome = async {
        let access = crate::api::parse_access(form.get("access"))?;
        let user = crate::api::existing_user(app, user_name).await?;
        crate::api::set_collaborator(
            app,
            &admin.principal,
            &admin.repo,
            &user,
            access,
            client.as_deref(),
        )
        .await
    }
    .await;
    match outcome {
        Ok(()) => Ok(redirect(&format!(
            "/{}/settings/collaborators?done=collaborator-saved",
            admin.repo.name
        ))),
        Err(err) => {
            let message = fixable(err).map_err(error_response(&admin.viewer))?;
            Err(collaborators_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                admin,
                None,
                Some(&message),
                (user_name, access),
            )
            .await
            .unwrap_or_else(|response| response))
        }
    }
}

async fn collaborator_remove(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let outcome = async {
        let user = crate::api::existing_user(app, form.get("user")).await?;
        crate::api::remove_collaborator(
            app,
            &admin.principal,
            &admin.repo,
            &user,
            client.as_deref(),
        )
        .await
    }
    .await;
    match outcome {
        Ok(()) => Ok(redirect(&format!(
            "/{}/settings/collaborators?done=collaborator-removed",
            admin.repo.name
        ))),
        Err(err) => {
            let message = fixable(err).map_err(error_response(&admin.viewer))?;
            Err(collaborators_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                admin,
                None,
                Some(&message),
                ("", None),
            )
            .await
            .unwrap_or_else(|response| response))
        }
    }
}

/// The owner makes an invitation link granting access to this repository;
/// the link is shown on the answer, once.
async fn invite_post(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let base = crate::api::base_url(app, &parts);
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    if !admin.can_invite {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            &admin.viewer,
            "Only the instance owner can invite new accounts.",
        ));
    }
    let outcome = async {
        let access = crate::api::parse_access(form.get("access"))?;
        crate::api_identity::create_invitation(
            app,
            &admin.principal,
            admin.session.user.id,
            Some((&admin.repo, access)),
            INVITATION_HOURS,
            "",
            client.as_deref(),
        )
        .await
        .map(|created| (created, access))
    }
    .await;
    let (created, access) = match outcome {
        Ok(created) => created,
        Err(err) => {
            let message = fixable(err).map_err(error_response(&admin.viewer))?;
            return Err(collaborators_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                admin,
                None,
                Some(&message),
                ("", None),
            )
            .await
            .unwrap_or_else(|response| response));
        }
    };
    let name = admin.repo.name.as_str();
    let link = format!("{base}/invite/{}", created.secret);
    let body = html! {
        (header(admin, "collaborators"))
        p.ok role="status" { "Invitation created." }
        p { "Send this link to the person you invite. It is shown only now, works once and expires on "
            (when(created.expires_at)) ". They become a collaborator with " strong { (access) } " access." }
        p { code.clone #invitation-link { (link) } }
        p { a href={ "/" (name) "/settings/collaborators" } { "Back to collaborators" } }
    };
    Ok(page(
        StatusCode::CREATED,
        &format!("Invitation · {name}"),
        &admin.viewer,
        body,
    ))
}

/// The pending invitations granting access to this repository (the owner's
/// to see: none for others).
async fn pending_invitations(
    app: &App,
    admin: &Admin,
) -> Result<Vec<nimbus_types::identity::Invitation>, Response> {
    if !admin.can_invite {
        return Ok(Vec::new());
    }
    let now = nimbus_types::unix_now();
    let name = admin.repo.name.as_str();
    Ok(app
        .meta
        .list_invitations()
        .await
        .map_err(|e| WebError::internal(&e).into_response())?
        .into_iter()
        .filter(|invitation| {
            invitation.unusable(now).is_none()
                && invitation
                    .grant
                    .as_ref()
                    .is_some_and(|(repo, _)| repo == name)
        })
        .collect())
}

/// The owner revokes a pending invitation to this repository.
async fn invitation_revoke(app: &App, admin: &Admin, id: &str, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    checked_form(app, &admin.session, &admin.viewer, parts).await?;
    if !admin.can_invite {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            &admin.viewer,
            "Only the instance owner can revoke invitations.",
        ));
    }
    let pending = pending_invitations(app, admin).await?;
    if !pending
        .iter()
        .any(|invitation| invitation.id.to_string() == id)
    {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            &admin.viewer,
            "No such pending invitation to this repository.",
        ));
    }
    crate::api_identity::revoke_invitation(app, &admin.principal, id, client.as_deref())
        .await
        .map_err(error_response(&admin.viewer))?;
    Ok(redirect(&format!(
        "/{}/settings/collaborators?done=invitation-revoked",
        admin.repo.name
    )))
}

/// What the webhook form holds.
struct HookFields<'a> {
    url: &'a str,
    events: Vec<String>,
    active: bool,
}

impl HookFields<'_> {
    fn of(hook: &Webhook) -> HookFields<'static> {
        HookFields {
            url: "",
            events: hook.events.clone(),
            active: hook.active,
        }
    }
}

/// The webhook form's fields (create and edit).
fn hook_form_fields(fields: &HookFields<'_>, url: &str, editing: bool) -> Markup {
    let all = fields.events.iter().any(|e| e == "*");
    html! {
        p { label for="url" { "Payload URL" } br;
            input #url name="url" type="url" required size="60" value=(url) placeholder="https://example.com/hook"; }
        p { label for="content_type" { "Content type" } br;
            select #content_type name="content_type" { option value="json" selected { "application/json" } } }
        p { label for="secret" { "Secret" } br;
            input #secret name="secret" type="password" autocomplete="new-password" size="40";
            br; span.muted {
                @if editing { "Leave empty to keep the current secret; it is never shown." }
                @else { "Leave empty to have one generated (shown once)." }
            } }
        fieldset {
            legend { "Events" }
            label { input type="checkbox" name="events" value="*" checked[all]; " " strong { "Everything" } }
            @for event in EVENT_TYPES {
                " " label { input type="checkbox" name="events" value=(event) checked[!all && fields.events.iter().any(|e| e == event)]; " " (event) }
            }
        }
        p { label { input type="checkbox" name="active" value="on" checked[fields.active]; " Active" } }
    }
}

fn delivery_status(delivery: &Delivery) -> Markup {
    let class = match delivery.status.as_str() {
        "succeeded" => "ok",
        "failed" => "error",
        _ => "muted",
    };
    html! {
        span class=(class) { (delivery.status.as_str()) }
        @if let Some(code) = delivery.outcome.as_ref().and_then(|o| o.response_status) { " " (code) }
    }
}

async fn hooks(app: &App, admin: &Admin, parts: &RequestParts) -> Page {
    let fields = HookFields {
        url: "",
        events: vec!["push".to_owned()],
        active: true,
    };
    hooks_page(
        app,
        StatusCode::OK,
        admin,
        done_message(parts.query.as_deref()),
        None,
        &fields,
    )
    .await
}

async fn hooks_page(
    app: &App,
    status: StatusCode,
    admin: &Admin,
    done: Option<&str>,
    error: Option<&str>,
    fields: &HookFields<'_>,
) -> Page {
    let internal =
        |e: nimbus_types::metadata::MetadataError| WebError::internal(&e).into_response();
    let listed = app
        .meta
        .list_webhooks(Some(admin.repo.id))
        .await
        .map_err(internal)?;
    let mut rows = Vec::with_capacity(listed.len());
    for hook in listed {
        let last = app
            .meta
            .deliveries(hook.id, None, 1)
            .await
            .map_err(internal)?;
        rows.push((hook, last.into_iter().next()));
    }
    let name = admin.repo.name.as_str();
    let body = html! {
        (header(admin, "hooks"))
        (notices(done, error))
        @if rows.is_empty() {
            p.muted #no-hooks { "No webhooks yet." }
        } @else {
            div.box { table.list #hooks {
                @for (hook, last) in &rows {
                    tr {
                        td {
                            a href={ "/" (name) "/settings/hooks/" (hook.id) } { (redact_url(&hook.url)) }
                            @if !hook.active { " " span.badge { "inactive" } }
                            br; span.muted { (hook.events.join(", ")) }
                        }
                        td.when {
                            @match last {
                                Some(delivery) => { (delivery_status(delivery)) }
                                None => { span.muted { "no deliveries" } }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "Add a webhook" }
        form #new-hook method="post" action={ "/" (name) "/settings/hooks" } {
            input type="hidden" name="csrf" value=(admin.session.csrf);
            (hook_form_fields(fields, fields.url, false))
            p { button type="submit" { "Add webhook" } }
        }
    };
    Ok(page(
        status,
        &format!("Webhooks · {name}"),
        &admin.viewer,
        body,
    ))
}

/// The form as the API's request: the same checks and defaults.
/// An empty secret means none (create: generate one; edit: keep it).
fn hook_request(form: &Form, url: Option<String>) -> crate::api_webhooks::HookRequest {
    let secret = Some(form.get("secret").to_owned()).filter(|s| !s.is_empty());
    crate::api_webhooks::HookRequest {
        url,
        secret,
        events: Some(form.all("events")),
        active: Some(form.has("active")),
        config: Some(crate::api_webhooks::HookConfig {
            url: None,
            secret: None,
            content_type: Some(form.get("content_type").to_owned()).filter(|c| !c.is_empty()),
        }),
        name: None,
    }
}

async fn hook_create(app: &App, admin: &Admin, parts: RequestParts) -> Page {
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let url = form.get("url").trim().to_owned();
    let outcome = async {
        let checked = crate::api_webhooks::check(app, hook_request(&form, Some(url.clone())))?;
        crate::api_webhooks::create_hook(
            app,
            &admin.principal,
            Some(&admin.repo),
            checked,
            client.as_deref(),
        )
        .await
    }
    .await;
    let name = admin.repo.name.as_str();
    match outcome {
        Ok((hook, None)) => Ok(redirect(&format!(
            "/{name}/settings/hooks/{}?done=hook-created",
            hook.id
        ))),
        Ok((hook, Some(secret))) => {
            let body = html! {
                (header(admin, "hooks"))
                p.ok role="status" { "Webhook added." }
                p { "Its deliveries are signed with this secret. Copy it now: it is not shown again." }
                p { code.clone #hook-secret { (secret) } }
                p { a href={ "/" (name) "/settings/hooks/" (hook.id) } { "Go to the webhook" } }
            };
            Ok(page(
                StatusCode::CREATED,
                &format!("Webhook added · {name}"),
                &admin.viewer,
                body,
            ))
        }
        Err(err) => {
            let message = fixable(err).map_err(error_response(&admin.viewer))?;
            let fields = HookFields {
                url: &url,
                events: form.all("events"),
                active: form.has("active"),
            };
            Err(hooks_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                admin,
                None,
                Some(&message),
                &fields,
            )
            .await
            .unwrap_or_else(|response| response))
        }
    }
}

/// The webhook `id` of this repository, or the 404 page.
async fn scoped_hook(app: &App, admin: &Admin, id: &str) -> Result<Webhook, Response> {
    crate::api_webhooks::scoped_hook(app, id, Some(&admin.repo))
        .await
        .map_err(|err| error_page(err.status, &admin.viewer, &capitalise(&err.message)))
}

async fn hook_page(app: &App, admin: &Admin, id: &str, parts: &RequestParts) -> Page {
    let hook = scoped_hook(app, admin, id).await?;
    let selected: Option<String> = parts
        .query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "delivery"))
        .map(|(_, v)| v);
    let selected = match selected {
        Some(delivery) => Some(
            crate::api_webhooks::scoped_delivery(app, &hook, &delivery)
                .await
                .map_err(|err| error_page(err.status, &admin.viewer, &capitalise(&err.message)))?,
        ),
        None => None,
    };
    hook_view(
        app,
        StatusCode::OK,
        admin,
        &hook,
        selected.as_ref(),
        done_message(parts.query.as_deref()),
        None,
        &HookFields::of(&hook),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn hook_view(
    app: &App,
    status: StatusCode,
    admin: &Admin,
    hook: &Webhook,
    selected: Option<&Delivery>,
    done: Option<&str>,
    error: Option<&str>,
    fields: &HookFields<'_>,
) -> Page {
    let deliveries = app
        .meta
        .deliveries(hook.id, None, DELIVERIES_SHOWN)
        .await
        .map_err(|e| WebError::internal(&e).into_response())?;
    let name = admin.repo.name.as_str();
    let here = format!("/{name}/settings/hooks/{}", hook.id);
    let shown_url = if fields.url.is_empty() {
        redact_url(&hook.url)
    } else {
        fields.url.to_owned()
    };
    let csrf = admin.session.csrf.as_str();
    let body = html! {
        (header(admin, "hooks"))
        (notices(done, error))
        h2 { "Webhook " (hook.id) }
        form #edit-hook method="post" action=(here) {
            input type="hidden" name="csrf" value=(csrf);
            (hook_form_fields(fields, &shown_url, true))
            p { button type="submit" { "Save" } }
        }
        form #delete-hook method="post" action={ (here) "/delete" } {
            input type="hidden" name="csrf" value=(csrf);
            p { button type="submit" { "Delete this webhook" } }
        }
        h2 { "Recent deliveries" }
        @if deliveries.is_empty() {
            p.muted #no-deliveries { "Nothing was delivered yet." }
        } @else {
            div.box { table.list #deliveries {
                @for delivery in &deliveries {
                    tr {
                        td {
                            a href={ (here) "?delivery=" (delivery.id) } { code { (delivery.guid) } }
                            " " span.muted { (delivery.github_event) " (" (delivery.event_type) ")" }
                            @if delivery.redelivery { " " span.badge { "redelivery" } }
                        }
                        td { (delivery_status(delivery)) }
                        td.when {
                            @match &delivery.outcome {
                                Some(outcome) => { (when(outcome.delivered_at)) br; (outcome.duration_ms) " ms" }
                                None => { "due " (when(delivery.due_at)) }
                            }
                        }
                    }
                }
            } }
        }
        @if let Some(delivery) = selected {
            (delivery_detail(&here, csrf, delivery))
        }
    };
    Ok(page(
        status,
        &format!("Webhook {} · {name}", hook.id),
        &admin.viewer,
        body,
    ))
}

fn headers_table(headers: &[(String, String)]) -> Markup {
    html! {
        div.scroll { table.list.headers {
            @for (name, value) in headers { tr { td { code { (name) } } td { code { (value) } } } }
        } }
    }
}

fn delivery_detail(here: &str, csrf: &str, delivery: &Delivery) -> Markup {
    let payload = serde_json::from_str::<serde_json::Value>(&delivery.body)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| delivery.body.clone());
    html! {
        div.box #delivery {
            div.head {
                strong { "Delivery " code { (delivery.guid) } }
                (delivery_status(delivery))
                span.actions {
                    form method="post" action={ (here) "/deliveries/" (delivery.id) "/redeliver" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button #redeliver type="submit" { "Redeliver" }
                    }
                }
            }
            div.markdown {
                @if let Some(outcome) = &delivery.outcome {
                    p.muted { "Attempt " (delivery.attempt) ", " (when(outcome.delivered_at)) ", " (outcome.duration_ms) " ms" }
                    @if let Some(error) = &outcome.error { p.error { (error) } }
                } @else {
                    p.muted { "Not sent yet; due " (when(delivery.due_at)) "." }
                }
                h3 { "Request" }
                @if let Some(outcome) = &delivery.outcome { (headers_table(&outcome.request_headers)) }
                pre #request-body { (payload) }
                h3 { "Response" }
                @match delivery.outcome.as_ref().filter(|o| o.response_status.is_some()) {
                    Some(outcome) => {
                        p { "Status " @if let Some(code) = outcome.response_status { (code) } }
                        (headers_table(&outcome.response_headers))
                        pre #response-body { (outcome.response_body) }
                    }
                    None => { p.muted { "No response." } }
                }
            }
        }
    }
}

async fn hook_update(app: &App, admin: &Admin, id: &str, parts: RequestParts) -> Page {
    let hook = scoped_hook(app, admin, id).await?;
    let client = parts.client.clone();
    let form = checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let entered = form.get("url").trim().to_owned();
    // The form shows the URL with any password redacted: sent back as it
    // was shown, the stored URL stays.
    let url = (entered != redact_url(&hook.url)).then(|| entered.clone());
    let outcome = async {
        let checked = crate::api_webhooks::check(app, hook_request(&form, url))?;
        crate::api_webhooks::update_hook(
            app,
            &admin.principal,
            Some(&admin.repo),
            &hook,
            checked,
            client.as_deref(),
        )
        .await
    }
    .await;
    match outcome {
        Ok(updated) => Ok(redirect(&format!(
            "/{}/settings/hooks/{}?done=hook-saved",
            admin.repo.name, updated.id
        ))),
        Err(err) => {
            let message = fixable(err).map_err(error_response(&admin.viewer))?;
            let fields = HookFields {
                url: &entered,
                events: form.all("events"),
                active: form.has("active"),
            };
            Err(hook_view(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                admin,
                &hook,
                None,
                None,
                Some(&message),
                &fields,
            )
            .await
            .unwrap_or_else(|response| response))
        }
    }
}

async fn hook_delete(app: &App, admin: &Admin, id: &str, parts: RequestParts) -> Page {
    let hook = scoped_hook(app, admin, id).await?;
    let client = parts.client.clone();
    checked_form(app, &admin.session, &admin.viewer, parts).await?;
    crate::api_webhooks::delete_hook(
        app,
        &admin.principal,
        Some(&admin.repo),
        &hook,
        client.as_deref(),
    )
    .await
    .map_err(|err| error_page(err.status, &admin.viewer, &err.message))?;
    Ok(redirect(&format!(
        "/{}/settings/hooks?done=hook-deleted",
        admin.repo.name
    )))
}

async fn redeliver(
    app: &App,
    admin: &Admin,
    id: &str,
    delivery: &str,
    parts: RequestParts,
) -> Page {
    let hook = scoped_hook(app, admin, id).await?;
    let client = parts.client.clone();
    checked_form(app, &admin.session, &admin.viewer, parts).await?;
    let original = crate::api_webhooks::scoped_delivery(app, &hook, delivery)
        .await
        .map_err(|err| error_page(err.status, &admin.viewer, &capitalise(&err.message)))?;
    crate::api_webhooks::redeliver_delivery(
        app,
        &admin.principal,
        Some(&admin.repo),
        &hook,
        &original,
        client.as_deref(),
    )
    .await
    .map_err(|err| error_page(err.status, &admin.viewer, &err.message))?;
    Ok(redirect(&format!(
        "/{}/settings/hooks/{}?done=redelivered",
        admin.repo.name, hook.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_fixed_texts() {
        assert_eq!(done_message(Some("done=saved")), Some("Settings saved."));
        assert_eq!(
            done_message(Some("x=1&done=token-revoked")),
            Some("Token revoked.")
        );
        for query in [
            None,
            Some(""),
            Some("done=%3Cscript%3E"),
            Some("done"),
            Some("saved"),
        ] {
            assert_eq!(done_message(query), None, "{query:?}");
        }
    }

    #[test]
    fn repeated_form_fields_are_kept() {
        let form = Form(
            serde_urlencoded::from_str("events=push&events=tag.created&active=on&csrf=x")
                .expect("a form"),
        );
        assert_eq!(form.all("events"), ["push", "tag.created"]);
        assert!(form.has("active") && !form.has("secret"));
        assert_eq!(form.get("csrf"), "x");
        assert_eq!(form.get("missing"), "");
    }
}
