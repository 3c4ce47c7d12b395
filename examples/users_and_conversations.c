/*
 * users_and_conversations: the repositories a chat product calls — a user
 * with a profile, a conversation with messages (idempotent append, a batch,
 * keyset paging), a setting and an AI team with optimistic concurrency, a
 * service connection whose tokens are encrypted at rest — and, at the end,
 * GDPR erasure of everything the user owned.
 *
 *   DATABASE_URL=postgresql://... DS_TOKEN_KEYS=k1:base64key ./users_and_conversations
 *
 * Needs a migrated database (ds-migrate up). Without DS_TOKEN_KEYS it makes
 * an ephemeral key ring for this run only (tokens written with it cannot be
 * read by any other process, which is fine for a demo).
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        if ((call) != DS_OK)                                                   \
            goto fail;                                                         \
    } while (0)

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_crypto *crypto = NULL;
    ds_crypto_secret *key = NULL;
    ds_user *user = NULL;
    ds_conversation *conv = NULL;
    ds_message *msg = NULL, *again = NULL;
    ds_message_list *page = NULL;
    ds_setting *setting = NULL;
    ds_team *team = NULL, *team2 = NULL;
    ds_team_list *teams = NULL, *seen_teams = NULL;
    ds_connection *sc = NULL;
    ds_gdpr_erase_report *report = NULL;
    json_t *prefs = NULL, *value = NULL, *members = NULL, *tconfig = NULL;
    int rc = 1;

    CHECK(ds_config_from_env(&cfg, &err));
    CHECK(ds_pool_open(cfg, &pool, &err));
    if (getenv("DS_TOKEN_KEYS") && *getenv("DS_TOKEN_KEYS")) {
        CHECK(ds_crypto_open(cfg, &crypto, &err));
    } else {
        /* Ephemeral key ring: for this run only. */
        CHECK(ds_crypto_generate_key("demo", &key, &err));
        CHECK(ds_crypto_open_keys(ds_crypto_secret_data(key), &crypto, &err));
    }

    /* A user: the email is trimmed and lower-cased. */
    char email[96];
    snprintf(email, sizeof email, "  Ada.%ld.%ld@Example.COM ", (long)time(NULL),
             (long)clock());
    prefs = json_pack("{s:s}", "theme", "dark");
    ds_profile_fields profile = {sizeof(ds_profile_fields), "Ada", "en-GB", "Europe/London", prefs};
    CHECK(ds_user_create(pool, email, &profile, &user, &err));
    printf("user %lld <%s> %s (%s)\n", (long long)user->id, user->email,
           user->display_name, user->timezone);
    ds_profile_fields rename = {sizeof(ds_profile_fields), "Ada Lovelace", NULL, NULL, NULL};
    ds_user_free(user);
    user = NULL;
    int64_t uid;
    {
        ds_user *tmp;
        CHECK(ds_user_get_by_email(pool, email, &tmp, &err));
        uid = tmp->id;
        ds_user_free(tmp);
    }
    CHECK(ds_user_update_profile(pool, uid, &rename, &user, &err));
    printf("profile now: %s\n", user->display_name);

    /* A conversation and its messages. */
    CHECK(ds_conversation_create(pool, uid, "Trip planning", &conv, &err));
    ds_message_new first = {sizeof(ds_message_new), DS_ROLE_USER, "Where should I go in May?", 0, NULL,
                            "client-req-1"};
    CHECK(ds_message_append(pool, conv->id, &first, &msg, &err));
    /* The client retries (say, after a timeout): same key, same row. */
    CHECK(ds_message_append(pool, conv->id, &first, &again, &err));
    printf("append: id %lld, retry returned id %lld (created=%d)\n",
           (long long)msg->id, (long long)again->id, again->created);
    ds_message_new batch[20];
    char texts[20][48];
    for (int i = 0; i < 20; i++) {
        snprintf(texts[i], sizeof texts[i], "%s %d",
                 i % 2 ? "Suggestion" : "Follow-up", i);
        batch[i] = (ds_message_new){sizeof(ds_message_new), i % 2 ? DS_ROLE_ASSISTANT : DS_ROLE_USER,
                                    texts[i], 0, NULL, NULL};
    }
    CHECK(ds_message_append_batch(pool, conv->id, batch, 20, NULL, &err));
    int64_t count;
    CHECK(ds_message_count(pool, conv->id, &count, &err));
    printf("%lld messages; newest first, 8 per page:\n", (long long)count);
    ds_message_cursor cursor = {0, 0};
    for (int p = 1;; p++) {
        CHECK(ds_message_list_page(pool, conv->id, DS_NEWEST_FIRST, &cursor, 8,
                                   &page, &err));
        printf("  page %d:", p);
        for (size_t i = 0; i < page->count; i++)
            printf(" %lld", (long long)page->items[i]->id);
        printf("\n");
        bool more = page->has_more;
        cursor = page->next;
        ds_message_list_free(page);
        page = NULL;
        if (!more)
            break;
    }

    /* A per-user setting with optimistic concurrency. */
    value = json_pack("{s:b}", "beta_features", 1);
    CHECK(ds_setting_put(pool, uid, "ui.flags", value, DS_VERSION_NEW, &setting,
                         &err));
    ds_status st = ds_setting_put(pool, uid, "ui.flags", value, 99, NULL, &err);
    printf("setting v%lld; a write with a stale version: %s\n",
           (long long)setting->version, ds_status_str(st));

    /* An AI team: read, modify, write back with the version read. */
    members = json_pack("[{s:s, s:s}, {s:s, s:s}]", "name", "researcher",
                        "model", "large", "name", "writer", "model", "small");
    tconfig = json_pack("{s:f}", "temperature", 0.7);
    CHECK(ds_team_create(pool, uid, "Travel desk", members, tconfig, &team, &err));
    json_object_set_new(tconfig, "temperature", json_real(0.2));
    CHECK(ds_team_update(pool, team->id, team->version, NULL, NULL, tconfig,
                         &team2, &err));
    st = ds_team_update(pool, team->id, team->version, "Stale", NULL, NULL, NULL,
                        &err);
    printf("team %s v%lld -> v%lld; the stale editor got %s\n", team2->name,
           (long long)team->version, (long long)team2->version,
           ds_status_str(st));

    /* Every list pages the same way: pass `next` back until !has_more. A
     * string cursor points into its page, so free a page only after the
     * call that used its cursor. */
    CHECK(ds_team_create(pool, uid, "Archive desk", NULL, NULL, NULL, &err));
    {
        ds_team_cursor tcursor = {0};
        printf("teams by name, 1 per page:");
        do {
            CHECK(ds_team_list_for_owner(pool, uid, &tcursor, 1, &teams, &err));
            ds_team_list_free(seen_teams);
            seen_teams = teams;
            for (size_t i = 0; i < teams->count; i++)
                printf(" [%s]", teams->items[i]->name);
            tcursor = teams->next;
        } while (teams->has_more);
        printf("\n");
        ds_team_list_free(seen_teams);
        teams = seen_teams = NULL;
    }

    /* A service connection: tokens encrypted before they leave. */
    ds_connection_new conn = {sizeof(ds_connection_new), uid, "calendar", "ada-primary", "events.read",
                              "access-token-example", 0, "refresh-token-example",
                              0, 0};
    CHECK(ds_connection_upsert(pool, crypto, &conn, NULL, &err));
    {
        ds_connection_list *list;
        CHECK(ds_connection_list_for_user(pool, uid, NULL, 10, &list, &err));
        int64_t cid = list->count ? list->items[0]->id : 0; /* 0: INVALID */
        ds_connection_list_free(list);
        CHECK(ds_connection_get(pool, crypto, cid, &sc, &err));
    }
    printf("connection %s/%s under key '%s': access token %zu bytes decrypted\n",
           sc->provider, sc->external_account_id, sc->key_id,
           ds_crypto_secret_len(sc->access_token));

    /* GDPR: erase everything the user owned, in one statement. */
    CHECK(ds_gdpr_erase_user(pool, NULL, uid, NULL, &report, &err));
    printf("erased: %lld user, %lld conversations, %lld messages, %lld teams, "
           "%lld settings, %lld connections\n",
           (long long)report->users, (long long)report->conversations,
           (long long)report->messages, (long long)report->ai_teams,
           (long long)report->app_settings,
           (long long)report->service_connections);
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "users_and_conversations: %s: %s\n",
                ds_status_str(err.code), err.message);
    ds_gdpr_erase_report_free(report);
    ds_connection_free(sc);
    ds_team_free(team);
    ds_team_free(team2);
    if (teams != seen_teams)
        ds_team_list_free(teams);
    ds_team_list_free(seen_teams);
    ds_setting_free(setting);
    ds_message_list_free(page);
    ds_message_free(msg);
    ds_message_free(again);
    ds_conversation_free(conv);
    ds_user_free(user);
    json_decref(prefs);
    json_decref(value);
    json_decref(members);
    json_decref(tconfig);
    ds_crypto_close(crypto);
    ds_crypto_secret_free(key);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
