//! The authorisation policy: a pure function from who asks (with their
//! token's scopes and their level on the repository), the repository's
//! visibility and the action to a [`Decision`]. Every permission rule of
//! Nimbus is here; [`crate::AccessControl`] only gathers the inputs.
//!
//! The rules:
//! - The owner is admin on every repository and alone manages the instance:
//!   creates and deletes repositories, manages users.
//! - A collaborator has the level they were given on a repository; any
//!   signed-in user may read public and hidden repositories.
//! - Anonymous users read public and hidden repositories when the instance
//!   allows anonymous reads (`NIMBUS_ANONYMOUS_READ`, default on); for
//!   anything else they get `Unauthenticated` (401), so git asks for
//!   credentials.
//! - Private repositories are invisible to signed-in users without access:
//!   `NotFound`, exactly as for a repository that does not exist. Anonymous
//!   users get the same 401 for private and missing repositories.
//! - Hidden repositories are readable like public ones by whoever knows the
//!   name, but listed only to those with a collaborator level (or the owner).
//! - Token scopes cap what a token can do whatever the user may:
//!   `repo:read` reads, `repo:write` pushes, `admin` administers
//!   repositories (and, for the owner, the instance); each implies the ones
//!   before. `api` is needed for every JSON API call, in addition.

use nimbus_types::{Access, Scope, Scopes, Visibility};

/// What a principal wants to do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoAction {
    /// Clone, fetch, read its API record.
    Read,
    /// Push, including deleting refs.
    Write,
    /// Change settings, manage collaborators, rename.
    Admin,
    /// Delete the repository: the owner only, as with creating one.
    Delete,
}

impl RepoAction {
    /// The repository level the action needs.
    pub fn needs(self) -> Access {
        match self {
            RepoAction::Read => Access::Read,
            RepoAction::Write => Access::Write,
            RepoAction::Admin | RepoAction::Delete => Access::Admin,
        }
    }
}

/// What a principal wants to do with the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceAction {
    CreateRepository,
    ManageUsers,
    /// Instance-wide webhooks, which see every repository's events.
    ManageWebhooks,
}

/// Through which door the request came: the JSON API needs the `api` scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Git,
    Api,
    /// The server-rendered pages: like git, no `api` scope is needed (a web
    /// session has every scope; its reads are the signed-in user's).
    Web,
}

/// Who asks, as the policy needs to know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Anonymous,
    User {
        is_owner: bool,
        /// The level this user was given on the repository in question
        /// (`None` for instance actions or when they have none).
        collaborator: Option<Access>,
        scopes: Scopes,
    },
}

/// Instance-wide settings the policy depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// Anonymous users may read public and hidden repositories.
    pub anonymous_read: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            anonymous_read: true,
        }
    }
}

/// Why an authenticated principal is refused while the repository stays
/// visible to them (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    #[error("this token lacks the '{scope}' scope")]
    MissingScope { scope: Scope },
    #[error("you do not have {needs} access to this repository")]
    NotPermitted { needs: Access },
    #[error("only the instance owner can {what}")]
    OwnerOnly { what: &'static str },
}

/// The outcome of an access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// No credentials, and some might help: 401. Also given to anonymous
    /// users for private and missing repositories alike.
    Unauthenticated,
    /// Authenticated, and not allowed: 403.
    Forbidden(Refusal),
    /// Answer as if the repository did not exist: 404.
    NotFound,
}

/// The scope a repository action needs of a token.
fn scope_for(action: RepoAction) -> Scope {
    match action {
        RepoAction::Read => Scope::RepoRead,
        RepoAction::Write => Scope::RepoWrite,
        RepoAction::Admin | RepoAction::Delete => Scope::Admin,
    }
}

/// Decide a repository action. `visibility` is `None` for a repository that
/// does not exist, so missing and invisible repositories get one answer.
pub fn decide_repo(
    settings: PolicySettings,
    subject: Subject,
    visibility: Option<Visibility>,
    action: RepoAction,
    surface: Surface,
) -> Decision {
    match subject {
        Subject::Anonymous => match visibility {
            Some(Visibility::Public | Visibility::Hidden)
                if action == RepoAction::Read && settings.anonymous_read =>
            {
                Decision::Allow
            }
            _ => Decision::Unauthenticated,
        },
        Subject::User {
            is_owner,
            collaborator,
            scopes,
        } => {
            if surface == Surface::Api && !scopes.api {
                return Decision::Forbidden(Refusal::MissingScope { scope: Scope::Api });
            }
            let Some(visibility) = visibility else {
                return Decision::NotFound;
            };
            let level = if is_owner {
                Some(Access::Admin)
            } else {
                match (collaborator, visibility) {
                    (Some(level), _) => Some(level),
                    (None, Visibility::Public | Visibility::Hidden) => Some(Access::Read),
                    (None, Visibility::Private) => None,
                }
            };
            let Some(level) = level else {
                return Decision::NotFound;
            };
            if action == RepoAction::Delete && !is_owner {
                return Decision::Forbidden(Refusal::OwnerOnly {
                    what: "delete repositories",
                });
            }
            if level < action.needs() {
                return Decision::Forbidden(Refusal::NotPermitted {
                    needs: action.needs(),
                });
            }
            if scopes
                .repo_limit()
                .is_none_or(|limit| limit < action.needs())
            {
                return Decision::Forbidden(Refusal::MissingScope {
                    scope: scope_for(action),
                });
            }
            Decision::Allow
        }
    }
}

/// Whether a repository appears in listings for `subject`: those who may
/// read it, except that hidden repositories are listed only to the owner
/// and their collaborators.
pub fn lists_repo(settings: PolicySettings, subject: Subject, visibility: Visibility) -> bool {
    let readable = decide_repo(
        settings,
        subject,
        Some(visibility),
        RepoAction::Read,
        Surface::Api,
    ) == Decision::Allow;
    readable
        && (visibility != Visibility::Hidden
            || matches!(
                subject,
                Subject::User { is_owner: true, .. }
                    | Subject::User {
                        collaborator: Some(_),
                        ..
                    }
            ))
}

/// Decide an instance action: only the owner, with an `admin` token.
pub fn decide_instance(subject: Subject, action: InstanceAction, surface: Surface) -> Decision {
    match subject {
        Subject::Anonymous => Decision::Unauthenticated,
        Subject::User {
            is_owner, scopes, ..
        } => {
            if surface == Surface::Api && !scopes.api {
                return Decision::Forbidden(Refusal::MissingScope { scope: Scope::Api });
            }
            if !is_owner {
                return Decision::Forbidden(Refusal::OwnerOnly {
                    what: match action {
                        InstanceAction::CreateRepository => "create repositories",
                        InstanceAction::ManageUsers => "manage users",
                        InstanceAction::ManageWebhooks => "manage instance-wide webhooks",
                    },
                });
            }
            if !scopes.admin {
                return Decision::Forbidden(Refusal::MissingScope {
                    scope: Scope::Admin,
                });
            }
            Decision::Allow
        }
    }
}

/// What a signed-in user may do with their own account (who am I, their
/// own tokens): anything, through the API with the `api` scope.
pub fn decide_self(subject: Subject, surface: Surface) -> Decision {
    match subject {
        Subject::Anonymous => Decision::Unauthenticated,
        Subject::User { scopes, .. } if surface == Surface::Api && !scopes.api => {
            Decision::Forbidden(Refusal::MissingScope { scope: Scope::Api })
        }
        Subject::User { .. } => Decision::Allow,
    }
}

/// Whether a token with `presented` scopes may create a token with
/// `requested` scopes: never more than it has itself, so a narrow token
/// cannot mint a wider one.
pub fn may_grant(presented: Scopes, requested: Scopes) -> bool {
    requested.iter().all(|scope| presented.contains(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISIBILITIES: [Option<Visibility>; 4] = [
        None,
        Some(Visibility::Public),
        Some(Visibility::Private),
        Some(Visibility::Hidden),
    ];
    const ACTIONS: [RepoAction; 4] = [
        RepoAction::Read,
        RepoAction::Write,
        RepoAction::Admin,
        RepoAction::Delete,
    ];

    fn every_scope_set() -> Vec<Scopes> {
        (0..16u8)
            .map(|bits| Scopes {
                repo_read: bits & 1 != 0,
                repo_write: bits & 2 != 0,
                admin: bits & 4 != 0,
                api: bits & 8 != 0,
            })
            .collect()
    }

    /// The rules restated independently, case by case, as the expected
    /// answer for every combination.
    fn expected(
        settings: PolicySettings,
        subject: Subject,
        visibility: Option<Visibility>,
        action: RepoAction,
        surface: Surface,
    ) -> Decision {
        let Subject::User {
            is_owner,
            collaborator,
            scopes,
        } = subject
        else {
            let world_readable = matches!(
                visibility,
                Some(Visibility::Public) | Some(Visibility::Hidden)
            );
            return if world_readable && action == RepoAction::Read && settings.anonymous_read {
                Decision::Allow
            } else {
                Decision::Unauthenticated
            };
        };
        if surface == Surface::Api && !scopes.api {
            return Decision::Forbidden(Refusal::MissingScope { scope: Scope::Api });
        }
        let can_see = is_owner
            || collaborator.is_some()
            || matches!(
                visibility,
                Some(Visibility::Public) | Some(Visibility::Hidden)
            );
        if visibility.is_none() || !can_see {
            return Decision::NotFound;
        }
        if action == RepoAction::Delete && !is_owner {
            return Decision::Forbidden(Refusal::OwnerOnly {
                what: "delete repositories",
            });
        }
        let user_may = is_owner
            || match action {
                RepoAction::Read => true,
                RepoAction::Write => collaborator >= Some(Access::Write),
                RepoAction::Admin => collaborator == Some(Access::Admin),
                RepoAction::Delete => false,
            };
        if !user_may {
            return Decision::Forbidden(Refusal::NotPermitted {
                needs: action.needs(),
            });
        }
        let token_may = match action {
            RepoAction::Read => scopes.repo_read || scopes.repo_write || scopes.admin,
            RepoAction::Write => scopes.repo_write || scopes.admin,
            RepoAction::Admin | RepoAction::Delete => scopes.admin,
        };
        if !token_may {
            return Decision::Forbidden(Refusal::MissingScope {
                scope: scope_for(action),
            });
        }
        Decision::Allow
    }

    #[test]
    fn every_repository_decision_follows_the_rules() {
        let mut subjects = vec![Subject::Anonymous];
        for scopes in every_scope_set() {
            for is_owner in [false, true] {
                for collaborator in [
                    None,
                    Some(Access::Read),
                    Some(Access::Write),
                    Some(Access::Admin),
                ] {
                    subjects.push(Subject::User {
                        is_owner,
                        collaborator,
                        scopes,
                    });
                }
            }
        }
        let mut checked = 0;
        for anonymous_read in [true, false] {
            let settings = PolicySettings { anonymous_read };
            for subject in &subjects {
                for visibility in VISIBILITIES {
                    for action in ACTIONS {
                        for surface in [Surface::Git, Surface::Api] {
                            assert_eq!(
                                decide_repo(settings, *subject, visibility, action, surface),
                                expected(settings, *subject, visibility, action, surface),
                                "{settings:?} {subject:?} {visibility:?} {action:?} {surface:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * (1 + 16 * 2 * 4) * 4 * 4 * 2);
    }

    fn user(is_owner: bool, collaborator: Option<Access>, scopes: &str) -> Subject {
        Subject::User {
            is_owner,
            collaborator,
            scopes: Scopes::parse(scopes).expect("valid scopes"),
        }
    }

    /// The headline cases, spelled out so a reader sees the policy at a glance.
    #[test]
    fn headline_cases() {
        use Decision::*;
        use RepoAction::*;
        use Visibility::*;
        let on = PolicySettings::default();
        let off = PolicySettings {
            anonymous_read: false,
        };
        let git = Surface::Git;
        let all = "repo:read,repo:write,admin,api";
        let cases = [
            (on, Subject::Anonymous, Some(Public), Read, Allow),
            (on, Subject::Anonymous, Some(Hidden), Read, Allow),
            (off, Subject::Anonymous, Some(Public), Read, Unauthenticated),
            (on, Subject::Anonymous, Some(Private), Read, Unauthenticated),
            (on, Subject::Anonymous, None, Read, Unauthenticated),
            (on, Subject::Anonymous, Some(Public), Write, Unauthenticated),
            (on, user(false, None, all), Some(Private), Read, NotFound),
            (on, user(false, None, all), None, Read, NotFound),
            (on, user(false, None, all), Some(Public), Read, Allow),
            (off, user(false, None, all), Some(Public), Read, Allow),
            (
                on,
                user(false, None, all),
                Some(Public),
                Write,
                Forbidden(Refusal::NotPermitted {
                    needs: Access::Write,
                }),
            ),
            (
                on,
                user(false, Some(Access::Read), all),
                Some(Private),
                Write,
                Forbidden(Refusal::NotPermitted {
                    needs: Access::Write,
                }),
            ),
            (
                on,
                user(false, Some(Access::Write), all),
                Some(Private),
                Write,
                Allow,
            ),
            (
                on,
                user(false, Some(Access::Write), all),
                Some(Hidden),
                Admin,
                Forbidden(Refusal::NotPermitted {
                    needs: Access::Admin,
                }),
            ),
            (
                on,
                user(false, Some(Access::Admin), all),
                Some(Private),
                Admin,
                Allow,
            ),
            (on, user(true, None, all), Some(Private), Admin, Allow),
            (on, user(true, None, all), Some(Private), Delete, Allow),
            (
                on,
                user(false, Some(Access::Admin), all),
                Some(Public),
                Delete,
                Forbidden(Refusal::OwnerOnly {
                    what: "delete repositories",
                }),
            ),
            (on, user(false, None, all), Some(Private), Delete, NotFound),
            (
                on,
                user(true, None, "repo:read"),
                Some(Private),
                Write,
                Forbidden(Refusal::MissingScope {
                    scope: Scope::RepoWrite,
                }),
            ),
            (on, user(true, None, "admin"), Some(Private), Write, Allow),
        ];
        for (settings, subject, visibility, action, decision) in cases {
            assert_eq!(
                decide_repo(settings, subject, visibility, action, git),
                decision,
                "{subject:?} {visibility:?} {action:?}"
            );
        }
        assert_eq!(
            decide_repo(
                on,
                user(true, None, "repo:read"),
                Some(Public),
                Read,
                Surface::Api
            ),
            Forbidden(Refusal::MissingScope { scope: Scope::Api })
        );
    }

    #[test]
    fn instance_actions_are_for_the_owner_with_an_admin_token() {
        use Decision::*;
        for action in [
            InstanceAction::CreateRepository,
            InstanceAction::ManageUsers,
            InstanceAction::ManageWebhooks,
        ] {
            for surface in [Surface::Git, Surface::Api] {
                assert_eq!(
                    decide_instance(Subject::Anonymous, action, surface),
                    Unauthenticated
                );
                assert_eq!(
                    decide_instance(user(true, None, "admin,api"), action, surface),
                    Allow
                );
                assert!(matches!(
                    decide_instance(
                        user(false, Some(Access::Admin), "admin,api"),
                        action,
                        surface
                    ),
                    Forbidden(Refusal::OwnerOnly { .. })
                ));
                assert_eq!(
                    decide_instance(user(true, None, "repo:write,api"), action, surface),
                    Forbidden(Refusal::MissingScope {
                        scope: Scope::Admin
                    })
                );
            }
            assert_eq!(
                decide_instance(user(true, None, "admin"), action, Surface::Api),
                Forbidden(Refusal::MissingScope { scope: Scope::Api })
            );
        }
        assert_eq!(
            decide_self(user(false, None, "api"), Surface::Api),
            Decision::Allow
        );
        assert_eq!(
            decide_self(user(false, None, "repo:read"), Surface::Api),
            Forbidden(Refusal::MissingScope { scope: Scope::Api })
        );
        assert_eq!(
            decide_self(Subject::Anonymous, Surface::Api),
            Unauthenticated
        );
    }

    #[test]
    fn tokens_never_mint_wider_tokens() {
        let read = Scopes::parse("repo:read,api").expect("valid");
        assert!(may_grant(Scopes::ALL, read));
        assert!(may_grant(read, read));
        assert!(may_grant(read, Scopes::parse("api").expect("valid")));
        assert!(!may_grant(
            read,
            Scopes::parse("repo:write,api").expect("valid")
        ));
        assert!(!may_grant(read, Scopes::ALL));
    }

    #[test]
    fn hidden_repositories_are_listed_only_to_owner_and_collaborators() {
        let settings = PolicySettings::default();
        let all = "repo:read,repo:write,admin,api";
        assert!(!lists_repo(
            settings,
            Subject::Anonymous,
            Visibility::Hidden
        ));
        assert!(lists_repo(settings, Subject::Anonymous, Visibility::Public));
        assert!(!lists_repo(
            settings,
            Subject::Anonymous,
            Visibility::Private
        ));
        assert!(!lists_repo(
            settings,
            user(false, None, all),
            Visibility::Hidden
        ));
        assert!(!lists_repo(
            settings,
            user(false, None, all),
            Visibility::Private
        ));
        assert!(lists_repo(
            settings,
            user(false, Some(Access::Read), all),
            Visibility::Hidden
        ));
        assert!(lists_repo(
            settings,
            user(true, None, all),
            Visibility::Hidden
        ));
        assert!(lists_repo(
            settings,
            user(true, None, all),
            Visibility::Private
        ));
    }
}
