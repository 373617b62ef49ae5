//! The `MetadataStore` implementation shared by SQLite and PostgreSQL. The
//! SQL is the same (`sql.rs`); what differs is expressed by items each
//! backend module defines before invoking [`metadata_store!`]:
//! `BEGIN_WRITE` (how a write transaction starts), `REPOSITORY_FOR_PUSH`
//! (the repository lookup a push starts with, locking where the database
//! needs it), `lock_users` (serialising owner creation), `LOCK_OUTBOX` (making
//! outbox writers commit in `seq` order) and `query_failed`.

/// Expands to the ref helpers and `impl MetadataStore for $store`.
macro_rules! metadata_store {
    ($store:ident, $connection:ty, $error:ident) => {
        /// The current target of a ref, read inside `connection`'s transaction.
        async fn current_target(
            connection: &mut $connection,
            repo: RepoId,
            name: &RefName,
        ) -> Result<Option<ObjectId>, $error> {
            let target: Option<String> = sqlx::query_scalar(sql::SELECT_REF_TARGET)
                .bind(repo.0)
                .bind(name.as_bytes())
                .fetch_optional(&mut *connection)
                .await
                .map_err(query_failed("reading a ref"))?;
            Ok(target
                .map(|hex| sql::object_id_from_hex("refs.target", &hex))
                .transpose()?)
        }

        /// A ref that would conflict with creating `name`: one of its parent
        /// "directories" as a ref (`refs/heads/a` for `refs/heads/a/b`), or a ref
        /// below it (`refs/heads/a/b` for `refs/heads/a`).
        async fn name_conflict(
            connection: &mut $connection,
            repo: RepoId,
            name: &[u8],
        ) -> Result<Option<Vec<u8>>, $error> {
            let queries = sql::name_conflict_queries(name);
            for parent in queries.parents {
                let found: Option<Vec<u8>> = sqlx::query_scalar(sql::SELECT_REF_NAME)
                    .bind(repo.0)
                    .bind(parent)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(query_failed("checking ref name conflicts"))?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            let below: Option<Vec<u8>> = sqlx::query_scalar(sql::SELECT_REF_NAME_IN_RANGE)
                .bind(repo.0)
                .bind(queries.below_low)
                .bind(queries.below_high)
                .fetch_optional(&mut *connection)
                .await
                .map_err(query_failed("checking ref name conflicts"))?;
            Ok(below)
        }

        /// Apply one compare-and-swap ref update inside `connection`'s transaction.
        async fn apply_ref_update(
            connection: &mut $connection,
            repo: RepoId,
            update: &RefUpdate,
        ) -> Result<Result<(), RefUpdateRejection>, $error> {
            let name = update.name.as_bytes();
            let peeled = update.new_peeled.as_ref().map(sql::hex_of);
            if update.old.is_none()
                && update.new.is_some()
                && let Some(existing) = name_conflict(connection, repo, name).await?
            {
                return Ok(Err(RefUpdateRejection::NameConflict {
                    existing: existing.into(),
                }));
            }
            let rows_affected = match (&update.old, &update.new) {
                (None, Some(new)) => sqlx::query(sql::CREATE_REF)
                    .bind(repo.0)
                    .bind(name)
                    .bind(sql::hex_of(new))
                    .bind(peeled)
                    .execute(&mut *connection)
                    .await
                    .map_err(query_failed("creating a ref"))?
                    .rows_affected(),
                (Some(old), Some(new)) => sqlx::query(sql::UPDATE_REF)
                    .bind(repo.0)
                    .bind(name)
                    .bind(sql::hex_of(new))
                    .bind(peeled)
                    .bind(sql::hex_of(old))
                    .execute(&mut *connection)
                    .await
                    .map_err(query_failed("updating a ref"))?
                    .rows_affected(),
                (Some(old), None) => sqlx::query(sql::DELETE_REF)
                    .bind(repo.0)
                    .bind(name)
                    .bind(sql::hex_of(old))
                    .execute(&mut *connection)
                    .await
                    .map_err(query_failed("deleting a ref"))?
                    .rows_affected(),
                // "Must not exist, and leave it so": nothing to write, only a check.
                (None, None) => {
                    return Ok(
                        match current_target(connection, repo, &update.name).await? {
                            None => Ok(()),
                            current @ Some(_) => Err(RefUpdateRejection::Stale { current }),
                        },
                    );
                }
            };
            if rows_affected == 1 {
                Ok(Ok(()))
            } else {
                let current = current_target(connection, repo, &update.name).await?;
                Ok(Err(RefUpdateRejection::Stale { current }))
            }
        }

        /// Record a pack of the repository (once: the same name again is
        /// the same upload).
        async fn insert_pack(
            connection: &mut $connection,
            repo: RepoId,
            pack: &PackRecord,
        ) -> Result<(), $error> {
            sqlx::query(sql::INSERT_PACK)
                .bind(repo.0)
                .bind(&pack.name)
                .bind(sql::to_i64("packs.pack_size", pack.pack_size)?)
                .bind(sql::to_i64("packs.index_size", pack.index_size)?)
                .bind(sql::to_i64("packs.object_count", pack.object_count)?)
                .bind(pack.created_at)
                .execute(&mut *connection)
                .await
                .map_err(query_failed("recording a pack"))?;
            Ok(())
        }

        /// Lock the repository for a write (where the backend needs it) and
        /// read its `(pack_generation, ref_version)`.
        /// An event about `repository` as it is now.
        fn repository_event(
            repository: &Repository,
            actor: Option<&nimbus_types::events::EventActor>,
            data: nimbus_types::events::EventData,
        ) -> nimbus_types::events::Event {
            nimbus_types::events::Event::new(
                nimbus_types::events::EventRepository {
                    id: repository.id.0,
                    name: repository.name.to_string(),
                },
                actor.cloned(),
                sql::unix_now(),
                data,
            )
        }

        /// Write `event` to the outbox inside `connection`'s transaction.
        async fn insert_event(
            connection: &mut $connection,
            repo: RepoId,
            event: &nimbus_types::events::Event,
        ) -> Result<(), $error> {
            let body = serde_json::to_string(event).map_err(|_| {
                sql::StoredValueError::Invalid {
                    column: "events.body",
                    value: event.id.clone(),
                }
            })?;
            // Outbox readers follow `seq`, so a lower `seq` must never
            // commit after a higher one: the backend serialises writers of
            // events until they commit.
            if let Some(lock) = LOCK_OUTBOX {
                sqlx::query(lock)
                    .execute(&mut *connection)
                    .await
                    .map_err(query_failed("locking the outbox"))?;
            }
            sqlx::query(sql::INSERT_EVENT)
                .bind(&event.id)
                .bind(repo.0)
                .bind(&event.repository.name)
                .bind(event.kind())
                .bind(body)
                .bind(event.timestamp)
                .execute(&mut *connection)
                .await
                .map_err(query_failed("writing an event to the outbox"))?;
            Ok(())
        }

        async fn lock_repository(
            connection: &mut $connection,
            repo: RepoId,
        ) -> Result<(i64, i64), MetadataError> {
            let exists: Option<i64> = sqlx::query_scalar(REPOSITORY_FOR_PUSH)
                .bind(repo.0)
                .fetch_optional(&mut *connection)
                .await
                .map_err(query_failed("locking the repository"))?;
            if exists.is_none() {
                return Err(MetadataError::RepositoryNotFound);
            }
            repository_counters(connection, repo).await
        }

        async fn repository_counters(
            connection: &mut $connection,
            repo: RepoId,
        ) -> Result<(i64, i64), MetadataError> {
            let counters: Option<(i64, i64)> = sqlx::query_as(sql::SELECT_REPOSITORY_COUNTERS)
                .bind(repo.0)
                .fetch_optional(&mut *connection)
                .await
                .map_err(query_failed("reading the repository's counters"))?;
            counters.ok_or(MetadataError::RepositoryNotFound)
        }

        impl $store {
            /// The refs of `repo` at `ref_version` (read inside
            /// `connection`'s transaction), from the cache when it has them.
            async fn refs_at(
                &self,
                connection: &mut $connection,
                repo: RepoId,
                ref_version: i64,
            ) -> Result<Vec<Ref>, MetadataError> {
                if let Some(refs) = self.refs_cache.get(repo, ref_version) {
                    return Ok(refs);
                }
                let rows: Vec<sql::RefRow> = sqlx::query_as(sql::LIST_REFS)
                    .bind(repo.0)
                    .fetch_all(&mut *connection)
                    .await
                    .map_err(query_failed("listing refs"))?;
                let refs = sql::refs_from_rows(rows).map_err($error::from)?;
                self.refs_cache.put(repo, ref_version, &refs);
                Ok(refs)
            }
        }

        #[async_trait::async_trait]
        impl MetadataStore for $store {
            async fn create_repository_by(
                &self,
                new: &NewRepository,
                actor: Option<&nimbus_types::events::EventActor>,
            ) -> Result<Repository, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to create a repository"))?;
                let row: sql::RepositoryRow = sqlx::query_as(sql::INSERT_REPOSITORY)
                    .bind(new.name.as_str())
                    .bind(new.visibility.as_str())
                    .bind(&new.default_branch)
                    .bind(sql::unix_now())
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(|error| {
                        if sql::is_unique_violation(&error) {
                            MetadataError::RepositoryExists {
                                name: new.name.to_string(),
                            }
                        } else {
                            query_failed("creating a repository")(error).into()
                        }
                    })?;
                let repository = sql::repository_from_row(row).map_err($error::from)?;
                let event = repository_event(
                    &repository,
                    actor,
                    nimbus_types::events::EventData::RepositoryCreated {
                        visibility: repository.visibility.as_str().to_owned(),
                        default_branch: repository.default_branch.clone(),
                    },
                );
                insert_event(&mut transaction, repository.id, &event).await?;
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a new repository"))?;
                Ok(repository)
            }

            /// Names are compared without regard to case, as they are unique that way.
            async fn repository(
                &self,
                name: &RepoName,
            ) -> Result<Option<Repository>, MetadataError> {
                let row: Option<sql::RepositoryRow> =
                    sqlx::query_as(sql::SELECT_REPOSITORY_BY_NAME)
                        .bind(name.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a repository"))?;
                Ok(row
                    .map(sql::repository_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn list_repositories(&self) -> Result<Vec<Repository>, MetadataError> {
                let rows: Vec<sql::RepositoryRow> = sqlx::query_as(sql::LIST_REPOSITORIES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing repositories"))?;
                Ok(rows
                    .into_iter()
                    .map(sql::repository_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn update_repository_by(
                &self,
                id: RepoId,
                update: &RepoUpdate,
                actor: Option<&nimbus_types::events::EventActor>,
            ) -> Result<Repository, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to update a repository"))?;
                let before: Option<sql::RepositoryRow> =
                    sqlx::query_as(sql::SELECT_REPOSITORY_BY_ID)
                        .bind(id.0)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(query_failed("reading a repository"))?;
                let before = before.ok_or(MetadataError::RepositoryNotFound)?;
                let old_name = before.1.clone();
                let row: Option<sql::RepositoryRow> = if update.name.is_none()
                    && update.visibility.is_none()
                    && update.default_branch.is_none()
                {
                    Some(before)
                } else {
                    sqlx::query_as(sql::UPDATE_REPOSITORY)
                        .bind(id.0)
                        .bind(update.name.as_ref().map(RepoName::as_str))
                        .bind(update.visibility.map(Visibility::as_str))
                        .bind(update.default_branch.as_deref())
                        .bind(sql::unix_now())
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(|error| -> MetadataError {
                            match &update.name {
                                Some(name) if sql::is_unique_violation(&error) => {
                                    MetadataError::RepositoryExists {
                                        name: name.to_string(),
                                    }
                                }
                                _ => query_failed("updating a repository")(error).into(),
                            }
                        })?
                };
                let row = row.ok_or(MetadataError::RepositoryNotFound)?;
                let repository = sql::repository_from_row(row).map_err($error::from)?;
                if repository.name.as_str() != old_name {
                    let event = repository_event(
                        &repository,
                        actor,
                        nimbus_types::events::EventData::RepositoryRenamed {
                            from: old_name,
                            to: repository.name.to_string(),
                        },
                    );
                    insert_event(&mut transaction, repository.id, &event).await?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a repository update"))?;
                Ok(repository)
            }

            async fn delete_repository_by(
                &self,
                id: RepoId,
                actor: Option<&nimbus_types::events::EventActor>,
            ) -> Result<(), MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to delete a repository"))?;
                let row: Option<sql::RepositoryRow> =
                    sqlx::query_as(sql::SELECT_REPOSITORY_BY_ID)
                        .bind(id.0)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(query_failed("reading a repository"))?;
                let row = row.ok_or(MetadataError::RepositoryNotFound)?;
                let repository = sql::repository_from_row(row).map_err($error::from)?;
                let deleted = sqlx::query(sql::DELETE_REPOSITORY)
                    .bind(id.0)
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("deleting a repository"))?
                    .rows_affected();
                if deleted == 0 {
                    return Err(MetadataError::RepositoryNotFound);
                }
                let event = repository_event(
                    &repository,
                    actor,
                    nimbus_types::events::EventData::RepositoryDeleted {},
                );
                insert_event(&mut transaction, repository.id, &event).await?;
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a repository deletion"))?;
                Ok(())
            }

            async fn refs(&self, repo: RepoId) -> Result<Vec<Ref>, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_READ)
                    .await
                    .map_err(query_failed("starting a read"))?;
                let ref_version = match repository_counters(&mut transaction, repo).await {
                    Ok((_, ref_version)) => ref_version,
                    // No repository, no refs (as the listing alone says).
                    Err(MetadataError::RepositoryNotFound) => return Ok(Vec::new()),
                    Err(error) => return Err(error),
                };
                let refs = self
                    .refs_at(&mut transaction, repo, ref_version)
                    .await?;
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("ending a read"))?;
                Ok(refs)
            }

            async fn packs(&self, repo: RepoId) -> Result<Vec<PackRecord>, MetadataError> {
                let rows: Vec<sql::PackRow> = sqlx::query_as(sql::LIST_PACKS)
                    .bind(repo.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing packs"))?;
                Ok(sql::packs_from_rows(rows).map_err($error::from)?)
            }

            async fn repo_state(&self, repo: RepoId) -> Result<RepoState, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_READ)
                    .await
                    .map_err(query_failed("starting a read"))?;
                let (pack_generation, ref_version) =
                    repository_counters(&mut transaction, repo).await?;
                let refs = self
                    .refs_at(&mut transaction, repo, ref_version)
                    .await?;
                let packs: Vec<sql::PackRow> = sqlx::query_as(sql::LIST_PACKS)
                    .bind(repo.0)
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(query_failed("listing packs"))?;
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("ending a read"))?;
                Ok(RepoState {
                    refs,
                    packs: sql::packs_from_rows(packs).map_err($error::from)?,
                    pack_generation,
                    ref_version,
                })
            }

            async fn replace_packs(
                &self,
                repo: RepoId,
                replacement: &PackReplacement,
                now: i64,
            ) -> Result<Result<(), ReplacementConflict>, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting a pack replacement"))?;
                let (_, ref_version) = lock_repository(&mut transaction, repo).await?;
                let conflict = 'check: {
                    if let Some(expected) = replacement.prune_at_ref_version
                        && expected != ref_version
                    {
                        break 'check Some(ReplacementConflict::RefsMoved);
                    }
                    for name in &replacement.remove {
                        let removed = sqlx::query(sql::DELETE_PACK)
                            .bind(repo.0)
                            .bind(name)
                            .execute(&mut *transaction)
                            .await
                            .map_err(query_failed("removing a pack"))?
                            .rows_affected();
                        if removed == 0 {
                            break 'check Some(ReplacementConflict::PackGone {
                                name: name.clone(),
                            });
                        }
                        sqlx::query(sql::INSERT_RETIRED_PACK)
                            .bind(repo.0)
                            .bind(name)
                            .bind(now)
                            .execute(&mut *transaction)
                            .await
                            .map_err(query_failed("retiring a pack"))?;
                    }
                    None
                };
                if let Some(conflict) = conflict {
                    transaction
                        .rollback()
                        .await
                        .map_err(query_failed("rolling back a pack replacement"))?;
                    return Ok(Err(conflict));
                }
                if let Some(pack) = &replacement.add {
                    insert_pack(&mut transaction, repo, pack).await?;
                }
                if replacement.prune_at_ref_version.is_some() {
                    sqlx::query(sql::BUMP_PACK_GENERATION)
                        .bind(repo.0)
                        .execute(&mut *transaction)
                        .await
                        .map_err(query_failed("moving the pack generation on"))?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a pack replacement"))?;
                Ok(Ok(()))
            }

            async fn retired_packs(&self, repo: RepoId) -> Result<Vec<RetiredPack>, MetadataError> {
                let rows: Vec<(String, i64)> = sqlx::query_as(sql::LIST_RETIRED_PACKS)
                    .bind(repo.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing retired packs"))?;
                Ok(rows
                    .into_iter()
                    .map(|(name, retired_at)| RetiredPack { name, retired_at })
                    .collect())
            }

            async fn forget_retired_pack(
                &self,
                repo: RepoId,
                name: &str,
            ) -> Result<(), MetadataError> {
                sqlx::query(sql::DELETE_RETIRED_PACK)
                    .bind(repo.0)
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("forgetting a retired pack"))?;
                Ok(())
            }

            async fn apply_push(
                &self,
                repo: RepoId,
                push: &PushRecord,
            ) -> Result<Vec<Result<(), RefUpdateRejection>>, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting a push"))?;

                let (pack_generation, _) = lock_repository(&mut transaction, repo).await?;
                if pack_generation != push.pack_generation {
                    return Err(MetadataError::PacksReplaced);
                }

                for pack in &push.packs {
                    insert_pack(&mut transaction, repo, pack).await?;
                }

                let mut outcomes = Vec::with_capacity(push.updates.len());
                for update in &push.updates {
                    outcomes.push(apply_ref_update(&mut transaction, repo, update).await?);
                }
                let applied = outcomes.iter().filter(|outcome| outcome.is_ok()).count();

                if push.atomic && applied < outcomes.len() {
                    transaction
                        .rollback()
                        .await
                        .map_err(query_failed("rolling back a failed atomic push"))?;
                    let outcomes = outcomes
                        .into_iter()
                        .map(|outcome| outcome.and(Err(RefUpdateRejection::AtomicPushFailed)))
                        .collect();
                    return Ok(outcomes);
                }
                if applied == 0 {
                    // Nothing changed, so the packs are not part of the repository.
                    transaction
                        .rollback()
                        .await
                        .map_err(query_failed("rolling back a push that changed nothing"))?;
                    return Ok(outcomes);
                }

                sqlx::query(sql::TOUCH_REPOSITORY)
                    .bind(repo.0)
                    .bind(sql::unix_now())
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("touching the repository of a push"))?;
                let applied_events = outcomes
                    .iter()
                    .zip(push.events.iter())
                    .filter(|(outcome, _)| outcome.is_ok())
                    .flat_map(|(_, events)| events.iter());
                for event in applied_events {
                    insert_event(&mut transaction, repo, event).await?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a push"))?;
                tracing::debug!(
                    repo = repo.0,
                    applied,
                    rejected = outcomes.len() - applied,
                    packs = push.packs.len(),
                    "push recorded"
                );
                Ok(outcomes)
            }

            async fn owner(&self) -> Result<Option<User>, MetadataError> {
                let row: Option<(i64, String)> = sqlx::query_as(sql::SELECT_OWNER)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("looking up the owner"))?;
                Ok(row.map(sql::owner_from_row))
            }

            /// Fails with [`MetadataError::UserExists`] naming the existing owner if
            /// there is one, or `name` if a user of that name exists.
            async fn create_owner(&self, name: &str) -> Result<User, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to create the owner"))?;
                lock_users(&mut transaction).await?;
                let existing: Option<String> = sqlx::query_scalar(sql::SELECT_OWNER_NAME)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(query_failed("looking up the owner"))?;
                if let Some(existing) = existing {
                    return Err(MetadataError::UserExists { name: existing });
                }
                let id: i64 = sqlx::query_scalar(sql::INSERT_OWNER)
                    .bind(name)
                    .bind(sql::unix_now())
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(|error| -> MetadataError {
                        if sql::is_unique_violation(&error) {
                            MetadataError::UserExists {
                                name: name.to_owned(),
                            }
                        } else {
                            query_failed("creating the owner")(error).into()
                        }
                    })?;
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing the owner"))?;
                Ok(sql::owner_from_row((id, name.to_owned())))
            }

            async fn add_token(&self, token: &NewToken) -> Result<i64, MetadataError> {
                let id: i64 = sqlx::query_scalar(sql::INSERT_TOKEN)
                    .bind(token.user.0)
                    .bind(&token.description)
                    .bind(&token.hash)
                    .bind(sql::token_access_of(token.scopes))
                    .bind(sql::unix_now())
                    .bind(token.expires_at)
                    .bind(token.scopes.to_string())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_failed("adding a token"))?;
                Ok(id)
            }

            async fn token_by_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<TokenRecord>, MetadataError> {
                let row: Option<sql::TokenRow> = sqlx::query_as(sql::SELECT_TOKEN_BY_HASH)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("looking up a token"))?;
                Ok(row
                    .map(sql::token_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetadataError> {
                sqlx::query(sql::TOUCH_TOKEN)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("recording a token's use"))?;
                Ok(())
            }

            async fn list_tokens(&self, user: UserId) -> Result<Vec<TokenInfo>, MetadataError> {
                let rows: Vec<sql::TokenInfoRow> = sqlx::query_as(sql::LIST_TOKENS)
                    .bind(user.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing tokens"))?;
                Ok(rows
                    .into_iter()
                    .map(sql::token_info_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn revoke_token(
                &self,
                user: UserId,
                id: i64,
                now: i64,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(sql::REVOKE_TOKEN)
                    .bind(user.0)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("revoking a token"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn create_user(&self, name: &str) -> Result<User, MetadataError> {
                let id: i64 = sqlx::query_scalar(sql::INSERT_USER)
                    .bind(name)
                    .bind(sql::unix_now())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|error| -> MetadataError {
                        if sql::is_unique_violation(&error) {
                            MetadataError::UserExists {
                                name: name.to_owned(),
                            }
                        } else {
                            query_failed("creating a user")(error).into()
                        }
                    })?;
                Ok(User {
                    id: UserId(id),
                    name: name.to_owned(),
                    is_owner: false,
                })
            }

            async fn user_by_name(&self, name: &str) -> Result<Option<User>, MetadataError> {
                let row: Option<sql::UserRow> = sqlx::query_as(sql::SELECT_USER_BY_NAME)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("looking up a user"))?;
                Ok(row.map(sql::user_from_row))
            }

            async fn list_users(&self) -> Result<Vec<User>, MetadataError> {
                let rows: Vec<sql::UserRow> = sqlx::query_as(sql::LIST_USERS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing users"))?;
                Ok(rows.into_iter().map(sql::user_from_row).collect())
            }

            async fn delete_user(&self, id: UserId) -> Result<(), MetadataError> {
                let is_owner: Option<bool> = sqlx::query_scalar(sql::SELECT_USER_IS_OWNER)
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("looking up a user"))?;
                match is_owner {
                    None => return Err(MetadataError::UserNotFound),
                    Some(true) => return Err(MetadataError::OwnerCannotBeDeleted),
                    Some(false) => {}
                }
                let affected = sqlx::query(sql::DELETE_USER)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("deleting a user"))?
                    .rows_affected();
                if affected == 1 {
                    Ok(())
                } else {
                    Err(MetadataError::UserNotFound)
                }
            }

            async fn set_collaborator(
                &self,
                repo: RepoId,
                user: UserId,
                access: Access,
            ) -> Result<(), MetadataError> {
                sqlx::query(sql::UPSERT_COLLABORATOR)
                    .bind(repo.0)
                    .bind(user.0)
                    .bind(access.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(|error| -> MetadataError {
                        if matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
                        {
                            MetadataError::RepositoryNotFound
                        } else {
                            query_failed("setting a collaborator")(error).into()
                        }
                    })?;
                Ok(())
            }

            async fn remove_collaborator(
                &self,
                repo: RepoId,
                user: UserId,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(sql::DELETE_COLLABORATOR)
                    .bind(repo.0)
                    .bind(user.0)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("removing a collaborator"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn list_collaborators(
                &self,
                repo: RepoId,
            ) -> Result<Vec<Collaborator>, MetadataError> {
                let rows: Vec<(i64, String, bool, String)> =
                    sqlx::query_as(sql::LIST_COLLABORATORS)
                        .bind(repo.0)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing collaborators"))?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, is_owner, access)| {
                        Ok(Collaborator {
                            user: sql::user_from_row((id, name, is_owner)),
                            access: sql::access_from_str("collaborators.access", &access)?,
                        })
                    })
                    .collect::<Result<_, sql::StoredValueError>>()
                    .map_err($error::from)?)
            }

            async fn unpublished_events(
                &self,
                limit: u32,
            ) -> Result<Vec<nimbus_types::events::StoredEvent>, MetadataError> {
                let rows: Vec<sql::EventRow> = sqlx::query_as(sql::UNPUBLISHED_EVENTS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("reading the outbox"))?;
                Ok(rows
                    .into_iter()
                    .map(sql::event_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn events_after(
                &self,
                seq: i64,
                limit: u32,
            ) -> Result<Vec<nimbus_types::events::StoredEvent>, MetadataError> {
                let rows: Vec<sql::EventRow> = sqlx::query_as(sql::EVENTS_AFTER)
                    .bind(seq)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("reading events"))?;
                Ok(rows
                    .into_iter()
                    .map(sql::event_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn latest_event_seq(&self) -> Result<i64, MetadataError> {
                let seq: i64 = sqlx::query_scalar(sql::LATEST_EVENT_SEQ)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_failed("reading the newest event"))?;
                Ok(seq)
            }

            async fn mark_events_published(
                &self,
                seqs: &[i64],
                now: i64,
            ) -> Result<(), MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to mark events published"))?;
                for seq in seqs {
                    sqlx::query(sql::MARK_EVENT_PUBLISHED)
                        .bind(seq)
                        .bind(now)
                        .execute(&mut *transaction)
                        .await
                        .map_err(query_failed("marking an event published"))?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing published events"))?;
                Ok(())
            }

            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                now: i64,
                ttl: i64,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(sql::ACQUIRE_LEASE)
                    .bind(name)
                    .bind(holder)
                    .bind(now + ttl)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("taking a lease"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn collaborator_access(
                &self,
                repo: RepoId,
                user: UserId,
            ) -> Result<Option<Access>, MetadataError> {
                let access: Option<String> = sqlx::query_scalar(sql::SELECT_COLLABORATOR_ACCESS)
                    .bind(repo.0)
                    .bind(user.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("looking up a collaborator"))?;
                Ok(access
                    .map(|access| sql::access_from_str("collaborators.access", &access))
                    .transpose()
                    .map_err($error::from)?)
            }
        }
    };
}

pub(crate) use metadata_store;
