//! The URL scheme, as a pure function from method and path to a route.
//! Repository paths accept the name with or without `.git`.

/// The pages of a repository below its home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoPage {
    Tree,
    Blob,
    Raw,
    /// `blame/{rev}/{path}`: who last changed each line.
    Blame,
    Commits,
    Commit,
    Branches,
    Tags,
    Compare,
    /// `archive/{rev}.tar.gz` or `.zip`.
    Archive,
    /// The editor's forms (GET shows, POST commits).
    Edit,
    New,
    Delete,
    /// `settings[/…]`: the repository's settings pages (admins).
    Settings,
}

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `GET /{repo}/info/refs?service=...`
    InfoRefs {
        repo: String,
    },
    /// `POST /{repo}/git-upload-pack`
    UploadPack {
        repo: String,
    },
    /// `POST /{repo}/git-receive-pack`
    ReceivePack {
        repo: String,
    },
    /// `GET /{repo}/bundles/{name}.bundle`: a bundle advertised by the
    /// protocol v2 `bundle-uri` command (`name` without `.bundle`).
    Bundle {
        repo: String,
        name: String,
    },
    /// `/api/v1/repos`
    ApiRepos,
    /// `/api/v1/repos/{name}`
    ApiRepo {
        name: String,
    },
    /// `/api/v1/repos/{name}/collaborators`
    ApiCollaborators {
        repo: String,
    },
    /// `/api/v1/repos/{name}/collaborators/{user}`
    ApiCollaborator {
        repo: String,
        user: String,
    },
    /// `/api/v1/repos/{name}/hooks`, or `/api/v1/hooks` (instance-wide)
    /// when `repo` is `None`; likewise for the other webhook routes.
    ApiHooks {
        repo: Option<String>,
    },
    /// `…/hooks/{id}`
    ApiHook {
        repo: Option<String>,
        id: String,
    },
    /// `…/hooks/{id}/deliveries`
    ApiHookDeliveries {
        repo: Option<String>,
        id: String,
    },
    /// `…/hooks/{id}/deliveries/{delivery}`
    ApiHookDelivery {
        repo: Option<String>,
        id: String,
        delivery: String,
    },
    /// `…/hooks/{id}/deliveries/{delivery}/attempts`: redeliver.
    ApiHookRedeliver {
        repo: Option<String>,
        id: String,
        delivery: String,
    },
    /// `/api/v1/user`: who am I.
    ApiCurrentUser,
    /// `/api/v1/users`
    ApiUsers,
    /// `/api/v1/users/{name}`
    ApiUser {
        name: String,
    },
    /// `/api/v1/users/{name}/tokens`: the owner issues a user's token.
    ApiUserTokens {
        name: String,
    },
    /// `/api/v1/user/tokens`
    ApiTokens,
    /// `/api/v1/user/tokens/{id}`
    ApiToken {
        id: String,
    },
    /// `/api/v1/user/password`: set one's own password.
    ApiPassword,
    /// `/api/v1/invitations`
    ApiInvitations,
    /// `/api/v1/invitations/{id}`
    ApiInvitation {
        id: String,
    },
    /// `/api/v1/audit`: the audit log.
    ApiAudit,
    /// `/api/v1/events`: the live event stream (Server-Sent Events).
    ApiEvents,
    /// `/api/v1/users/{name}/identities`
    ApiIdentities {
        name: String,
    },
    /// `/api/v1/users/{name}/identities/{provider}/{subject}` (segments
    /// still percent-encoded).
    ApiIdentity {
        name: String,
        provider: String,
        subject: String,
    },
    /// `/`: the repositories the visitor may see.
    Dashboard,
    /// `/{repo}`: the repository's home page.
    RepoHome {
        repo: String,
    },
    /// `/{repo}/{page}/{rest...}` for the pages `tree`, `blob`, `raw`,
    /// `commits` (rest: a revision, then a path, segments still
    /// percent-encoded) and `commit` (rest: one commit id).
    RepoPage {
        repo: String,
        page: RepoPage,
        rest: Vec<String>,
    },
    /// `/login`: the sign-in form.
    Login,
    /// `/logout`
    Logout,
    /// `/login/{provider}`: start signing in at an identity provider.
    LoginProvider {
        provider: String,
    },
    /// `/login/{provider}/callback`
    LoginCallback {
        provider: String,
    },
    /// `/invite/{secret}`: accept an invitation.
    Invite {
        secret: String,
    },
    /// `/account`: who is signed in.
    Account,
    /// `/account/password`
    AccountPassword,
    /// `/account/tokens`: one's personal access tokens.
    AccountTokens,
    /// `/account/tokens/{id}/revoke`
    AccountTokenRevoke {
        id: String,
    },
    /// `/.well-known/jwks.json`: the keys that verify session tokens.
    Jwks,
    /// `/-/assets/{name}`: a script or other static file pages load.
    Asset {
        name: String,
    },
    NotFound,
}

/// The path as it may be logged: invitation links carry their secret in
/// the path, which is replaced.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/invite/") {
        Some(rest) if !rest.is_empty() => std::borrow::Cow::Borrowed("/invite/<secret>"),
        _ => std::borrow::Cow::Borrowed(path),
    }
}

/// Whether a route is git smart HTTP (never authenticated by cookies).
pub fn is_git(route: &Route) -> bool {
    matches!(
        route,
        Route::InfoRefs { .. }
            | Route::UploadPack { .. }
            | Route::ReceivePack { .. }
            | Route::Bundle { .. }
    )
}

/// Which methods a route answers, for `405` responses.
pub fn allowed_methods(route: &Route) -> &'static [&'static str] {
    match route {
        Route::RepoPage {
            page: RepoPage::Edit | RepoPage::New | RepoPage::Delete | RepoPage::Settings,
            ..
        } => &["GET", "HEAD", "POST"],
        Route::Health
        | Route::InfoRefs { .. }
        | Route::Bundle { .. }
        | Route::Dashboard
        | Route::RepoHome { .. }
        | Route::RepoPage { .. } => &["GET", "HEAD"],
        Route::UploadPack { .. } | Route::ReceivePack { .. } => &["POST"],
        Route::ApiRepos => &["GET", "POST"],
        Route::ApiRepo { .. } => &["GET", "PATCH", "DELETE"],
        Route::ApiCollaborators { .. } => &["GET"],
        Route::ApiCollaborator { .. } => &["PUT", "DELETE"],
        Route::ApiHooks { .. } => &["GET", "POST"],
        Route::ApiHook { .. } => &["GET", "PATCH", "DELETE"],
        Route::ApiHookDeliveries { .. } | Route::ApiHookDelivery { .. } => &["GET"],
        Route::ApiHookRedeliver { .. } => &["POST"],
        Route::ApiCurrentUser => &["GET"],
        Route::ApiUsers => &["GET", "POST"],
        Route::ApiUser { .. } => &["GET", "DELETE"],
        Route::ApiUserTokens { .. } => &["POST"],
        Route::ApiTokens => &["GET", "POST"],
        Route::ApiToken { .. } => &["DELETE"],
        Route::ApiPassword => &["PUT"],
        Route::ApiInvitations => &["GET", "POST"],
        Route::ApiInvitation { .. } => &["DELETE"],
        Route::ApiAudit | Route::ApiIdentities { .. } | Route::ApiEvents => &["GET"],
        Route::ApiIdentity { .. } => &["PUT", "DELETE"],
        Route::Login | Route::Invite { .. } => &["GET", "POST"],
        Route::Logout | Route::AccountPassword | Route::AccountTokenRevoke { .. } => &["POST"],
        Route::AccountTokens => &["GET", "HEAD", "POST"],
        Route::LoginProvider { .. }
        | Route::LoginCallback { .. }
        | Route::Account
        | Route::Asset { .. }
        | Route::Jwks => &["GET"],
        Route::NotFound => &[],
    }
}

fn repo_segment(segment: &str) -> String {
    segment.strip_suffix(".git").unwrap_or(segment).to_owned()
}

/// Map a request path (without the query) to a route.
/// The webhook routes below `…/hooks`, for `repo` (`None`: instance-wide).
fn hook_route(repo: Option<&str>, rest: &[&str]) -> Route {
    let repo = repo.map(str::to_owned);
    let id = |id: &str| id.to_owned();
    match rest {
        [] => Route::ApiHooks { repo },
        [hook] if !hook.is_empty() => Route::ApiHook { repo, id: id(hook) },
        [hook, "deliveries"] if !hook.is_empty() => Route::ApiHookDeliveries { repo, id: id(hook) },
        [hook, "deliveries", delivery] if !hook.is_empty() && !delivery.is_empty() => {
            Route::ApiHookDelivery {
                repo,
                id: id(hook),
                delivery: id(delivery),
            }
        }
        [hook, "deliveries", delivery, "attempts"] if !hook.is_empty() && !delivery.is_empty() => {
            Route::ApiHookRedeliver {
                repo,
                id: id(hook),
                delivery: id(delivery),
            }
        }
        _ => Route::NotFound,
    }
}

pub fn route(path: &str) -> Route {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "hooks", rest @ ..] => hook_route(None, rest),
        ["api", "v1", "repos", repo, "hooks", rest @ ..] if !repo.is_empty() => {
            hook_route(Some(repo), rest)
        }
        ["healthz"] => Route::Health,
        ["login"] => Route::Login,
        ["logout"] => Route::Logout,
        ["login", provider] if !provider.is_empty() => Route::LoginProvider {
            provider: (*provider).to_owned(),
        },
        ["login", provider, "callback"] if !provider.is_empty() => Route::LoginCallback {
            provider: (*provider).to_owned(),
        },
        ["invite", secret] if !secret.is_empty() => Route::Invite {
            secret: (*secret).to_owned(),
        },
        ["account"] => Route::Account,
        ["account", "password"] => Route::AccountPassword,
        ["account", "tokens"] => Route::AccountTokens,
        ["account", "tokens", id, "revoke"] if !id.is_empty() => Route::AccountTokenRevoke {
            id: (*id).to_owned(),
        },
        [".well-known", "jwks.json"] => Route::Jwks,
        ["-", "assets", name] if !name.is_empty() => Route::Asset {
            name: (*name).to_owned(),
        },
        ["api", "v1", "repos"] => Route::ApiRepos,
        ["api", "v1", "repos", name] if !name.is_empty() => Route::ApiRepo {
            name: (*name).to_owned(),
        },
        ["api", "v1", "repos", repo, "collaborators"] if !repo.is_empty() => {
            Route::ApiCollaborators {
                repo: (*repo).to_owned(),
            }
        }
        ["api", "v1", "repos", repo, "collaborators", user]
            if !repo.is_empty() && !user.is_empty() =>
        {
            Route::ApiCollaborator {
                repo: (*repo).to_owned(),
                user: (*user).to_owned(),
            }
        }
        ["api", "v1", "user"] => Route::ApiCurrentUser,
        ["api", "v1", "user", "tokens"] => Route::ApiTokens,
        ["api", "v1", "user", "tokens", id] if !id.is_empty() => Route::ApiToken {
            id: (*id).to_owned(),
        },
        ["api", "v1", "user", "password"] => Route::ApiPassword,
        ["api", "v1", "invitations"] => Route::ApiInvitations,
        ["api", "v1", "invitations", id] if !id.is_empty() => Route::ApiInvitation {
            id: (*id).to_owned(),
        },
        ["api", "v1", "audit"] => Route::ApiAudit,
        ["api", "v1", "events"] => Route::ApiEvents,
        ["api", "v1", "users", name, "identities"] if !name.is_empty() => Route::ApiIdentities {
            name: (*name).to_owned(),
        },
        ["api", "v1", "users", name, "identities", provider, subject]
            if !name.is_empty() && !provider.is_empty() && !subject.is_empty() =>
        {
            Route::ApiIdentity {
                name: (*name).to_owned(),
                provider: (*provider).to_owned(),
                subject: (*subject).to_owned(),
            }
        }
        ["api", "v1", "users"] => Route::ApiUsers,
        ["api", "v1", "users", name] if !name.is_empty() => Route::ApiUser {
            name: (*name).to_owned(),
        },
        ["api", "v1", "users", name, "tokens"] if !name.is_empty() => Route::ApiUserTokens {
            name: (*name).to_owned(),
        },
        [repo, "info", "refs"] if !repo.is_empty() => Route::InfoRefs {
            repo: repo_segment(repo),
        },
        [repo, "git-upload-pack"] if !repo.is_empty() => Route::UploadPack {
            repo: repo_segment(repo),
        },
        [repo, "git-receive-pack"] if !repo.is_empty() => Route::ReceivePack {
            repo: repo_segment(repo),
        },
        [repo, "bundles", file] if !repo.is_empty() && file.ends_with(".bundle") => Route::Bundle {
            repo: repo_segment(repo),
            name: file.trim_end_matches(".bundle").to_owned(),
        },
        [""] => Route::Dashboard,
        [repo] if !repo.is_empty() => Route::RepoHome {
            repo: repo_segment(repo),
        },
        [repo, page, rest @ ..] if !repo.is_empty() => {
            let page = match *page {
                "tree" => RepoPage::Tree,
                "blob" if !rest.is_empty() => RepoPage::Blob,
                "raw" if !rest.is_empty() => RepoPage::Raw,
                "blame" if rest.len() >= 2 => RepoPage::Blame,
                "commits" => RepoPage::Commits,
                "commit" if rest.len() == 1 && !rest[0].is_empty() => RepoPage::Commit,
                "branches" if rest.is_empty() => RepoPage::Branches,
                "tags" if rest.is_empty() => RepoPage::Tags,
                "compare" if !rest.is_empty() => RepoPage::Compare,
                "archive" if !rest.is_empty() => RepoPage::Archive,
                "edit" if rest.len() >= 2 => RepoPage::Edit,
                "new" if !rest.is_empty() => RepoPage::New,
                "delete" if rest.len() >= 2 => RepoPage::Delete,
                "settings" => RepoPage::Settings,
                _ => return Route::NotFound,
            };
            Route::RepoPage {
                repo: (*repo).to_owned(),
                page,
                rest: rest.iter().map(|segment| (*segment).to_owned()).collect(),
            }
        }
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_paths_with_and_without_dot_git() {
        for path in ["/demo.git/info/refs", "/demo/info/refs"] {
            assert_eq!(
                route(path),
                Route::InfoRefs {
                    repo: "demo".into()
                }
            );
        }
        assert_eq!(
            route("/demo.git/git-upload-pack"),
            Route::UploadPack {
                repo: "demo".into()
            }
        );
        assert_eq!(
            route("/demo/git-receive-pack"),
            Route::ReceivePack {
                repo: "demo".into()
            }
        );
        for path in ["/demo.git/bundles/1-ab.bundle", "/demo/bundles/1-ab.bundle"] {
            let bundle = route(path);
            assert_eq!(
                bundle,
                Route::Bundle {
                    repo: "demo".into(),
                    name: "1-ab".into()
                }
            );
            assert!(is_git(&bundle));
        }
        assert!(!matches!(
            route("/demo/bundles/1-ab.pack"),
            Route::Bundle { .. }
        ));
    }

    #[test]
    fn api_and_unknown_paths() {
        assert_eq!(route("/api/v1/repos"), Route::ApiRepos);
        assert_eq!(
            route("/api/v1/repos/x"),
            Route::ApiRepo { name: "x".into() }
        );
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(
            route("/api/v1/repos/x/collaborators/bob"),
            Route::ApiCollaborator {
                repo: "x".into(),
                user: "bob".into()
            }
        );
        assert_eq!(
            route("/api/v1/repos/x/collaborators"),
            Route::ApiCollaborators { repo: "x".into() }
        );
        assert_eq!(route("/api/v1/user"), Route::ApiCurrentUser);
        assert_eq!(route("/api/v1/user/tokens"), Route::ApiTokens);
        assert_eq!(
            route("/api/v1/user/tokens/7"),
            Route::ApiToken { id: "7".into() }
        );
        assert_eq!(route("/api/v1/users"), Route::ApiUsers);
        assert_eq!(
            route("/api/v1/users/bob/tokens"),
            Route::ApiUserTokens { name: "bob".into() }
        );
        for path in [
            "/demo/info",
            "/demo/objects/info/packs",
            "//info/refs",
            "/api/v1/repos/",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn identity_administration_paths() {
        assert_eq!(route("/api/v1/user/password"), Route::ApiPassword);
        assert_eq!(route("/api/v1/invitations"), Route::ApiInvitations);
        assert_eq!(
            route("/api/v1/invitations/3"),
            Route::ApiInvitation { id: "3".into() }
        );
        assert_eq!(route("/api/v1/audit"), Route::ApiAudit);
        assert_eq!(route("/api/v1/events"), Route::ApiEvents);
        assert_eq!(
            route("/api/v1/users/bob/identities"),
            Route::ApiIdentities { name: "bob".into() }
        );
        assert_eq!(
            route("/api/v1/users/bob/identities/corp/auth0%7C42"),
            Route::ApiIdentity {
                name: "bob".into(),
                provider: "corp".into(),
                subject: "auth0%7C42".into()
            }
        );
        assert_eq!(allowed_methods(&Route::ApiPassword), &["PUT"]);
        assert_eq!(allowed_methods(&Route::ApiInvitations), &["GET", "POST"]);
        assert_eq!(
            allowed_methods(&Route::ApiInvitation { id: "1".into() }),
            &["DELETE"]
        );
        assert_eq!(allowed_methods(&Route::ApiAudit), &["GET"]);
        for path in [
            "/api/v1/invitations/",
            "/api/v1/users/bob/identities/corp",
            "/api/v1/users/bob/identities/corp/",
            "/api/v1/users/bob/identities//x",
            "/api/v1/audit/1",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn webhook_routes_per_repository_and_instance() {
        let repo = || Some("demo".to_owned());
        assert_eq!(
            route("/api/v1/repos/demo/hooks"),
            Route::ApiHooks { repo: repo() }
        );
        assert_eq!(route("/api/v1/hooks"), Route::ApiHooks { repo: None });
        assert_eq!(
            route("/api/v1/repos/demo/hooks/3"),
            Route::ApiHook {
                repo: repo(),
                id: "3".into()
            }
        );
        assert_eq!(
            route("/api/v1/hooks/3/deliveries"),
            Route::ApiHookDeliveries {
                repo: None,
                id: "3".into()
            }
        );
        assert_eq!(
            route("/api/v1/repos/demo/hooks/3/deliveries/9"),
            Route::ApiHookDelivery {
                repo: repo(),
                id: "3".into(),
                delivery: "9".into()
            }
        );
        assert_eq!(
            route("/api/v1/hooks/3/deliveries/9/attempts"),
            Route::ApiHookRedeliver {
                repo: None,
                id: "3".into(),
                delivery: "9".into()
            }
        );
        for path in [
            "/api/v1/hooks/",
            "/api/v1/repos//hooks",
            "/api/v1/hooks/3/deliveries/",
            "/api/v1/hooks/3/deliveries/9/attempts/1",
            "/api/v1/hooks/3/other",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
        assert_eq!(
            allowed_methods(&Route::ApiHookRedeliver {
                repo: None,
                id: "3".into(),
                delivery: "9".into()
            }),
            &["POST"]
        );
    }

    #[test]
    fn settings_and_token_pages() {
        assert_eq!(
            route("/demo/settings/hooks/3"),
            Route::RepoPage {
                repo: "demo".into(),
                page: RepoPage::Settings,
                rest: vec!["hooks".into(), "3".into()],
            }
        );
        assert_eq!(route("/account/tokens"), Route::AccountTokens);
        assert_eq!(
            route("/account/tokens/7/revoke"),
            Route::AccountTokenRevoke { id: "7".into() }
        );
        assert_eq!(route("/account/tokens/7"), Route::NotFound);
        assert_eq!(
            allowed_methods(&route("/demo/settings")),
            &["GET", "HEAD", "POST"]
        );
    }

    #[test]
    fn web_pages_beside_git_paths() {
        assert_eq!(route("/"), Route::Dashboard);
        assert_eq!(
            route("/demo"),
            Route::RepoHome {
                repo: "demo".into()
            }
        );
        assert_eq!(
            route("/demo.git"),
            Route::RepoHome {
                repo: "demo".into()
            }
        );
        let page = |page, rest: &[&str]| Route::RepoPage {
            repo: "demo".into(),
            page,
            rest: rest.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            route("/demo/tree/feature/x/src"),
            page(RepoPage::Tree, &["feature", "x", "src"])
        );
        assert_eq!(route("/demo/tree"), page(RepoPage::Tree, &[]));
        assert_eq!(
            route("/demo/blob/main/a%20b.txt"),
            page(RepoPage::Blob, &["main", "a%20b.txt"])
        );
        assert_eq!(
            route("/demo/raw/main/x"),
            page(RepoPage::Raw, &["main", "x"])
        );
        assert_eq!(
            route("/demo/commits/main"),
            page(RepoPage::Commits, &["main"])
        );
        assert_eq!(
            route("/demo/commit/abc123"),
            page(RepoPage::Commit, &["abc123"])
        );
        for path in [
            "/demo/blob",
            "/demo/raw",
            "/demo/commit",
            "/demo/commit/a/b",
            "/demo/wiki",
            "/demo/info",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
        // Git's own paths win.
        assert_eq!(
            route("/demo/info/refs"),
            Route::InfoRefs {
                repo: "demo".into()
            }
        );
        assert_eq!(
            route("/demo/git-upload-pack"),
            Route::UploadPack {
                repo: "demo".into()
            }
        );
    }
}
