/* Every function of the C ABI: success, NULL for every pointer, non-UTF-8
 * and 1 MiB strings, buffers too small, and the errors of each kind.
 * Usage: test_api STORE_DIR [NOTIFIER_COMPONENT_FILE] */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static kw_options cheap(void) {
    kw_options o = { .size = sizeof o };
    o.argon2_memory_kib = 64;
    o.argon2_iterations = 1;
    o.argon2_parallelism = 1;
    return o;
}

static kw_verdict verify(const kw_store *s, const char *key, const char *ip) {
    kw_verdict v;
    memset(&v, 0xAB, sizeof v);
    v.size = sizeof v;
    kw_status st = kw_verify(s, key, strlen(key), ip, "c-test", &v);
    CHECK(st == KW_STATUS_OK);
    return v;
}

static void pause_ms(long ms) {
    struct timespec t = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

static int json_has(const kw_store *s, const char *id, const char *needle) {
    char *json = NULL;
    if (kw_key_get_json(s, id, &json) != KW_STATUS_OK) return 0;
    int found = strstr(json, needle) != NULL;
    kw_string_free(json);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s STORE_DIR [NOTIFIER_COMPONENT_FILE]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    unsigned char *component = NULL;
    size_t component_len = 0;
    if (argc == 3) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) return 2;
        component = malloc(1 << 20);
        component_len = fread(component, 1, 1 << 20, f);
        fclose(f);
    }
    const char bad_utf8[] = {'k', (char)0xff, (char)0xfe, 0};
    char *huge = malloc((1 << 20) + 1);
    memset(huge, 'a', 1 << 20);
    huge[1 << 20] = 0;

    /* --- version, open ------------------------------------------------ */
    CHECK(kw_version() != NULL && kw_version()[0] >= '0' && kw_version()[0] <= '9');

    kw_options o = cheap();
    kw_store *store = NULL;
    CHECK_STATUS(kw_store_open(NULL, &o, &store), KW_STATUS_NULL_ARGUMENT);
    CHECK(strstr(last_error(), "path") != NULL);
    CHECK_STATUS(kw_store_open(path, &o, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_open(bad_utf8, &o, &store), KW_STATUS_INVALID_UTF8);
    kw_options bad = cheap();
    bad.prefix = "Not-A-Prefix";
    CHECK_STATUS(kw_store_open(path, &bad, &store), KW_STATUS_INVALID_OPTIONS);
    bad = cheap();
    bad.argon2_memory_kib = 1;
    CHECK_STATUS(kw_store_open(path, &bad, &store), KW_STATUS_INVALID_OPTIONS);
    bad = cheap();
    bad.actor = "tab\there";
    CHECK_STATUS(kw_store_open(path, &bad, &store), KW_STATUS_INVALID_OPTIONS);
    bad.actor = bad_utf8;
    CHECK_STATUS(kw_store_open(path, &bad, &store), KW_STATUS_INVALID_UTF8);
    CHECK(store == NULL); /* outputs only on success */

    o.prefix = "acme_live";
    o.actor = "billing-service"; /* data.actor of this handle's changes */
    CHECK_STATUS(kw_store_open(path, &o, &store), KW_STATUS_OK);
    CHECK(store != NULL);
    /* A second open of the same store in one process shares it. */
    kw_store *second = NULL;
    CHECK_STATUS(kw_store_open(path, NULL, &second), KW_STATUS_OK);
    CHECK(second != NULL && second != store);
    CHECK_STATUS(kw_store_close(second), KW_STATUS_OK); /* frees `second` only */
    char *status = NULL;
    CHECK_STATUS(kw_store_status_json(store, &status), KW_STATUS_OK);
    CHECK(status != NULL && strstr(status, "\"role\":\"owner\"") != NULL);
    kw_string_free(status);
    CHECK_STATUS(kw_store_status_json(NULL, &status), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_status_json(store, NULL), KW_STATUS_NULL_ARGUMENT);
    /* A new store agrees with itself; checked and repaired alike. */
    char *checked = NULL;
    CHECK_STATUS(kw_store_check_json(store, false, &checked), KW_STATUS_OK);
    CHECK(checked && strstr(checked, "\"clean\":true") && strstr(checked, "\"problems\":[]"));
    kw_string_free(checked);
    CHECK_STATUS(kw_store_check_json(store, true, &checked), KW_STATUS_OK);
    CHECK(checked && strstr(checked, "\"clean\":true"));
    kw_string_free(checked);
    CHECK_STATUS(kw_store_check_json(NULL, false, &checked), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_check_json(store, false, NULL), KW_STATUS_NULL_ARGUMENT);

    size_t key_len = kw_key_buffer_len(store);
    CHECK(key_len == strlen("acme_live") + 2 + 12 + 43 + 6 + 1);
    CHECK(key_len <= KW_KEY_BUFFER_LEN);
    CHECK(kw_key_buffer_len(NULL) == 0);

    /* --- create ------------------------------------------------------- */
    char key[KW_KEY_BUFFER_LEN], id[KW_KEY_ID_BUFFER_LEN];
    CHECK_STATUS(kw_key_create(NULL, "k", key, sizeof key, id, sizeof id), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_create(store, NULL, key, sizeof key, id, sizeof id), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_create(store, "k", NULL, sizeof key, id, sizeof id), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_create(store, "k", key, sizeof key, NULL, sizeof id), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_create(store, bad_utf8, key, sizeof key, id, sizeof id), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_key_create(store, "", key, sizeof key, id, sizeof id), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_create(store, huge, key, sizeof key, id, sizeof id), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_create(store, "k", key, 10, id, sizeof id), KW_STATUS_BUFFER_TOO_SMALL);
    CHECK(strstr(last_error(), "73") != NULL); /* says the size needed: 9 + 2 + 12 + 43 + 6 + NUL */
    CHECK_STATUS(kw_key_create(store, "k", key, sizeof key, id, 12), KW_STATUS_BUFFER_TOO_SMALL);
    char *list = NULL;
    CHECK_STATUS(kw_key_list_json(store, &list), KW_STATUS_OK);
    CHECK(list != NULL && strcmp(list, "[]") == 0); /* failed calls created nothing */
    kw_string_free(list);

    CHECK_STATUS(kw_key_create(store, "c key", key, key_len, id, 13), KW_STATUS_OK);
    CHECK(strncmp(key, "acme_live_", 10) == 0 && strlen(key) == key_len - 1);
    CHECK(strlen(id) == 12 && strncmp(key + 10, id, 12) == 0);

    /* --- verify ------------------------------------------------------- */
    kw_verdict v = verify(store, key, "203.0.113.7");
    CHECK(v.valid && v.denial == KW_DENIAL_NONE && v.generation == 1 && !v.in_grace);
    CHECK(strcmp(v.key_id, id) == 0);
    kw_verdict untouched;
    memset(&untouched, 0x5A, sizeof untouched);
    untouched.size = sizeof untouched;
    CHECK_STATUS(kw_verify(NULL, key, strlen(key), "10.0.0.1", NULL, &untouched), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_verify(store, NULL, 0, "10.0.0.1", NULL, &untouched), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_verify(store, key, strlen(key), NULL, NULL, &untouched), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_verify(store, key, strlen(key), "10.0.0.1", NULL, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_verify(store, key, strlen(key), "not-an-ip", NULL, &untouched), KW_STATUS_INVALID_IP);
    CHECK_STATUS(kw_verify(store, key, strlen(key), bad_utf8, NULL, &untouched), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_verify(store, key, strlen(key), "10.0.0.1", bad_utf8, &untouched), KW_STATUS_INVALID_UTF8);
    CHECK(untouched.generation == 0x5A5A5A5Au); /* outputs only on success */
    kw_verdict m = { .size = sizeof m };
    CHECK_STATUS(kw_verify(store, bad_utf8, 3, "10.0.0.1", NULL, &m), KW_STATUS_OK);
    CHECK(!m.valid && m.denial == KW_DENIAL_MALFORMED && m.key_id[0] == 0);
    CHECK_STATUS(kw_verify(store, huge, 1 << 20, "10.0.0.1", NULL, &m), KW_STATUS_OK);
    CHECK(m.denial == KW_DENIAL_MALFORMED);
    CHECK_STATUS(kw_verify(store, key, strlen(key) - 1, "10.0.0.1", NULL, &m), KW_STATUS_OK);
    CHECK(m.denial == KW_DENIAL_MALFORMED);
    CHECK_STATUS(kw_verify(store, "", 0, "::1", NULL, &m), KW_STATUS_OK);
    CHECK(m.denial == KW_DENIAL_MALFORMED);
    CHECK_STATUS(kw_verify(store, key, strlen(key), "::ffff:10.0.0.1", NULL, &m), KW_STATUS_OK);
    CHECK(m.valid);

    /* --- create_ex, get, list ----------------------------------------- */
    char key2[KW_KEY_BUFFER_LEN], id2[KW_KEY_ID_BUFFER_LEN];
    CHECK_STATUS(kw_key_create_ex(store, "with options", "{\"metadata\": {\"plan\": \"pro\"}, "
                 "\"whitelist\": [{\"name\": \"office\", \"network\": \"198.51.100.0/24\"}]}",
                 key2, sizeof key2, id2, sizeof id2), KW_STATUS_OK);
    CHECK(json_has(store, id2, "\"plan\":\"pro\""));
    CHECK(json_has(store, id2, "\"whitelist_enabled\":true"));
    CHECK(!verify(store, key2, "203.0.113.7").valid);
    CHECK(verify(store, key2, "198.51.100.7").valid);
    CHECK_STATUS(kw_key_create_ex(store, "x", "{not json", key2, sizeof key2, id2, sizeof id2), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_create_ex(store, "x", "{\"whitelist\": [{\"name\": \"n\", \"network\": \"10.0.0.1/8\"}]}",
                 key2, sizeof key2, id2, sizeof id2), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_create_ex(store, "x", bad_utf8, key2, sizeof key2, id2, sizeof id2), KW_STATUS_INVALID_UTF8);

    /* --- owners: set at creation, in the verdict, moved, listed, paged ---- */
    {
        char longest[KW_OWNER_BUFFER_LEN], too_long[KW_OWNER_BUFFER_LEN + 1], options[200];
        memset(longest, 'o', KW_OWNER_BUFFER_LEN - 1);
        longest[KW_OWNER_BUFFER_LEN - 1] = 0; /* 128 bytes: the most an owner holds */
        memset(too_long, 'o', KW_OWNER_BUFFER_LEN);
        too_long[KW_OWNER_BUFFER_LEN] = 0;
        snprintf(options, sizeof options, "{\"owner\": \"%s\"}", longest);
        char okey[KW_KEY_BUFFER_LEN], oid[KW_KEY_ID_BUFFER_LEN];
        CHECK_STATUS(kw_key_create_ex(store, "owned", options, okey, sizeof okey, oid, sizeof oid), KW_STATUS_OK);
        kw_verdict ov = verify(store, okey, "10.0.0.1"); /* filled with 0xAB first */
        CHECK(ov.valid && strlen(ov.owner) == KW_OWNER_BUFFER_LEN - 1);
        CHECK(ov.owner[KW_OWNER_BUFFER_LEN - 1] == 0 && strcmp(ov.owner, longest) == 0);
        CHECK_STATUS(kw_key_set_disabled(store, oid, true), KW_STATUS_OK);
        ov = verify(store, okey, "10.0.0.1"); /* a refusal of a key that exists names its owner */
        CHECK(!ov.valid && ov.denial == KW_DENIAL_DISABLED && strcmp(ov.owner, longest) == 0);
        CHECK_STATUS(kw_key_set_disabled(store, oid, false), KW_STATUS_OK);
        CHECK(verify(store, key, "203.0.113.7").owner[0] == 0); /* no owner: empty */
        CHECK(json_has(store, id, "\"owner\":null"));

        CHECK_STATUS(kw_key_set_owner(store, oid, "acct_b"), KW_STATUS_OK);
        CHECK(strcmp(verify(store, okey, "10.0.0.1").owner, "acct_b") == 0);
        char *owned = NULL;
        CHECK_STATUS(kw_key_list_owner_json(store, "acct_b", &owned), KW_STATUS_OK);
        CHECK(owned && strstr(owned, oid) && strstr(owned, "\"owner\":\"acct_b\""));
        kw_string_free(owned);
        CHECK_STATUS(kw_key_list_owner_json(store, longest, &owned), KW_STATUS_OK);
        CHECK(owned && strcmp(owned, "[]") == 0);
        kw_string_free(owned);
        CHECK_STATUS(kw_key_set_owner(store, oid, NULL), KW_STATUS_OK);

        /* One patch: every field or none. An invalid owner beside a valid
         * name and the disabled switch changes nothing. */
        char *patched = NULL;
        CHECK_STATUS(kw_key_update_json(store, oid, "{\"name\": \"renamed\", \"disabled\": true, \"owner\": \"\"}", &patched),
                     KW_STATUS_INVALID_INPUT);
        CHECK(patched == NULL && verify(store, okey, "10.0.0.1").valid && json_has(store, oid, "\"name\":\"owned\""));
        CHECK_STATUS(kw_key_update_json(store, oid, "{\"name\": null}", NULL), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_update_json(store, oid, "{\"colour\": \"red\"}", NULL), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_update_json(store, oid, "[]", NULL), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_update_json(store, oid, bad_utf8, NULL), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_key_update_json(store, oid, NULL, NULL), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_update_json(NULL, oid, "{}", NULL), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_update_json(store, "AAAAAAAAAAAA", "{}", NULL), KW_STATUS_NOT_FOUND);
        CHECK_STATUS(kw_key_update_json(store, oid,
                         "{\"name\": \"renamed\", \"disabled\": true, \"owner\": \"acct_c\","
                         " \"scopes\": [\"orders:read\"], \"metadata\": {\"plan\": \"pro\"}}", &patched),
                     KW_STATUS_OK);
        CHECK(patched && strstr(patched, "\"name\":\"renamed\"") && strstr(patched, "\"disabled\":true")
              && strstr(patched, "\"owner\":\"acct_c\"") && strstr(patched, "\"scopes\":[\"orders:read\"]"));
        kw_string_free(patched);
        ov = verify(store, okey, "10.0.0.1");
        CHECK(!ov.valid && ov.denial == KW_DENIAL_DISABLED && strcmp(ov.owner, "acct_c") == 0);
        /* null clears; what is left out stays. */
        CHECK_STATUS(kw_key_update_json(store, oid, "{\"owner\": null, \"metadata\": null, \"scopes\": null, \"disabled\": false}", NULL),
                     KW_STATUS_OK);
        CHECK(json_has(store, oid, "\"owner\":null") && json_has(store, oid, "\"metadata\":null")
              && json_has(store, oid, "\"scopes\":[]") && json_has(store, oid, "\"name\":\"renamed\""));
        CHECK(verify(store, okey, "10.0.0.1").valid);
        CHECK(json_has(store, oid, "\"owner\":null"));
        /* A description: given at creation, changed by a patch, cleared by null. */
        char dkey[KW_KEY_BUFFER_LEN], did[KW_KEY_ID_BUFFER_LEN];
        CHECK_STATUS(kw_key_create_ex(store, "described", "{\"description\": \"CRM sync\"}", dkey, sizeof dkey,
                                      did, sizeof did),
                     KW_STATUS_OK);
        CHECK(json_has(store, did, "\"description\":\"CRM sync\""));
        CHECK_STATUS(kw_key_update_json(store, did, "{\"description\": \"EU sync\"}", NULL), KW_STATUS_OK);
        CHECK(json_has(store, did, "\"description\":\"EU sync\""));
        CHECK_STATUS(kw_key_update_json(store, did, "{\"description\": null}", NULL), KW_STATUS_OK);
        CHECK(json_has(store, did, "\"description\":null"));
        CHECK_STATUS(kw_key_update_json(store, did, "{\"description\": 7}", NULL), KW_STATUS_INVALID_INPUT);
        /* The handle's metrics: counters of its verifications, gauges. */
        char *metrics = NULL;
        CHECK_STATUS(kw_metrics_json(store, &metrics), KW_STATUS_OK);
        CHECK(metrics && strstr(metrics, "\"verifications_allowed\":") && strstr(metrics, "\"ip_not_allowed\":")
              && strstr(metrics, "\"role\":\"owner\""));
        kw_string_free(metrics);
        CHECK_STATUS(kw_metrics_json(store, NULL), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_metrics_json(NULL, &metrics), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_set_owner(store, oid, too_long), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_owner(store, oid, "tab\there"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_owner(store, oid, bad_utf8), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_key_set_owner(NULL, oid, "a"), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_list_owner_json(store, NULL, &owned), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_list_owner_json(store, huge, &owned), KW_STATUS_INVALID_INPUT);

        char *page = NULL;
        CHECK_STATUS(kw_key_list_page_json(store, NULL, NULL, 1, &page), KW_STATUS_OK);
        CHECK(page && strstr(page, "\"keys\":[{") && strstr(page, "\"next\":\""));
        kw_string_free(page);
        CHECK_STATUS(kw_key_list_page_json(store, "acct_none", NULL, KW_MAX_PAGE, &page), KW_STATUS_OK);
        CHECK(page && strstr(page, "\"keys\":[]") && strstr(page, "\"next\":null"));
        kw_string_free(page);
        CHECK_STATUS(kw_key_list_page_json(store, NULL, NULL, 0, &page), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_list_page_json(store, NULL, NULL, KW_MAX_PAGE + 1, &page), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_list_page_json(store, NULL, "not an id", 5, &page), KW_STATUS_INVALID_KEY_ID);
        CHECK_STATUS(kw_key_list_page_json(store, NULL, NULL, 5, NULL), KW_STATUS_NULL_ARGUMENT);

        /* accounts: every owner, one account's usage, closing it */
        char ck[KW_KEY_BUFFER_LEN], cid[KW_KEY_ID_BUFFER_LEN];
        for (int i = 0; i < 2; i++)
            CHECK_STATUS(kw_key_create_ex(store, "closing", "{\"owner\": \"acct_closing\"}", ck, sizeof ck, cid, sizeof cid), KW_STATUS_OK);
        CHECK(verify(store, ck, "10.0.0.1").valid);
        char *accounts = NULL;
        CHECK_STATUS(kw_owners_json(store, &accounts), KW_STATUS_OK);
        CHECK(accounts && strstr(accounts, "{\"owner\":\"acct_closing\",\"keys\":2}"));
        kw_string_free(accounts);
        CHECK_STATUS(kw_owner_usage_json(store, "acct_closing", &accounts), KW_STATUS_OK);
        CHECK(accounts && strstr(accounts, "\"keys\":2") && strstr(accounts, "\"allowed\":1"));
        kw_string_free(accounts);
        size_t deleted = 99;
        CHECK_STATUS(kw_owner_delete_keys(store, "acct_closing", &deleted), KW_STATUS_OK);
        CHECK(deleted == 2);
        CHECK(verify(store, ck, "10.0.0.1").denial == KW_DENIAL_UNKNOWN_KEY);
        CHECK_STATUS(kw_owner_delete_keys(store, "acct_closing", &deleted), KW_STATUS_OK);
        CHECK(deleted == 0);
        CHECK_STATUS(kw_owner_delete_keys(store, "acct_closing", NULL), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_owner_delete_keys(store, too_long, &deleted), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_owner_usage_json(store, bad_utf8, &accounts), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_owners_json(NULL, &accounts), KW_STATUS_NULL_ARGUMENT);
    }

    char *json = NULL;
    CHECK_STATUS(kw_key_get_json(store, id, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"name\":\"c key\"") && strstr(json, "\"generation\":1"));
    CHECK(json && strstr(json, "\"last_used_at\":\"") != NULL);
    CHECK(json && strstr(json, key + 17) == NULL); /* no secret */
    kw_string_free(json);
    json = NULL;
    CHECK_STATUS(kw_key_get_json(NULL, id, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_get_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_get_json(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_get_json(store, "short", &json), KW_STATUS_INVALID_KEY_ID);
    CHECK_STATUS(kw_key_get_json(store, huge, &json), KW_STATUS_INVALID_KEY_ID);
    CHECK_STATUS(kw_key_get_json(store, bad_utf8, &json), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_key_get_json(store, "AAAAAAAAAAAA", &json), KW_STATUS_NOT_FOUND);
    CHECK(json == NULL);
    CHECK_STATUS(kw_key_list_json(NULL, &list), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_list_json(store, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_list_json(store, &list), KW_STATUS_OK);
    CHECK(list && strstr(list, id) && strstr(list, id2));
    kw_string_free(list);

    /* --- whitelist ---------------------------------------------------- */
    char entry[KW_ENTRY_ID_BUFFER_LEN];
    CHECK_STATUS(kw_whitelist_add(store, id, "office", "10.0.0.1/8", entry, sizeof entry), KW_STATUS_INVALID_NETWORK);
    CHECK(strstr(last_error(), "10.0.0.0/8") != NULL);
    CHECK_STATUS(kw_whitelist_add(store, id, "office", "nope", entry, sizeof entry), KW_STATUS_INVALID_NETWORK);
    CHECK_STATUS(kw_whitelist_add(store, id, "office", "10.0.0.0/8", entry, 4), KW_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(kw_whitelist_add(NULL, id, "office", "10.0.0.0/8", entry, sizeof entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_add(store, NULL, "office", "10.0.0.0/8", entry, sizeof entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_add(store, id, NULL, "10.0.0.0/8", entry, sizeof entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_add(store, id, "office", NULL, entry, sizeof entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_add(store, id, "office", "10.0.0.0/8", NULL, sizeof entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_add(store, id, huge, "10.0.0.0/8", entry, sizeof entry), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_whitelist_add(store, id, "office", "10.0.0.0/8", entry, sizeof entry), KW_STATUS_OK);
    CHECK(strlen(entry) == 10);
    CHECK_STATUS(kw_whitelist_set_enabled(NULL, id, true), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_set_enabled(store, NULL, true), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_set_enabled(store, id, true), KW_STATUS_OK);
    v = verify(store, key, "203.0.113.7");
    CHECK(!v.valid && v.denial == KW_DENIAL_IP_NOT_ALLOWED && strcmp(v.key_id, id) == 0);
    CHECK(verify(store, key, "10.20.30.40").valid);
    CHECK_STATUS(kw_whitelist_json(store, id, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"enabled\":true") && strstr(json, entry) && strstr(json, "\"network\":\"10.0.0.0/8\""));
    kw_string_free(json);
    CHECK_STATUS(kw_whitelist_json(NULL, id, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_json(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_remove(store, id, "nope"), KW_STATUS_ENTRY_NOT_FOUND);
    CHECK_STATUS(kw_whitelist_remove(NULL, id, entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_remove(store, NULL, entry), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_remove(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_whitelist_remove(store, id, entry), KW_STATUS_OK);
    CHECK(!verify(store, key, "10.20.30.40").valid); /* enabled, no entries: nobody */
    CHECK_STATUS(kw_whitelist_set_enabled(store, id, false), KW_STATUS_OK);
    CHECK(verify(store, key, "10.20.30.40").valid);

    /* --- updates ------------------------------------------------------ */
    CHECK_STATUS(kw_key_set_disabled(NULL, id, true), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_disabled(store, NULL, true), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_disabled(store, id, true), KW_STATUS_OK);
    CHECK(verify(store, key, "10.0.0.1").denial == KW_DENIAL_DISABLED);
    CHECK_STATUS(kw_key_set_disabled(store, id, false), KW_STATUS_OK);
    CHECK(verify(store, key, "10.0.0.1").valid);
    CHECK_STATUS(kw_key_rename(store, id, "renamed"), KW_STATUS_OK);
    CHECK(json_has(store, id, "\"name\":\"renamed\""));
    CHECK_STATUS(kw_key_rename(store, id, ""), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_rename(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_rename(NULL, id, "x"), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_rename(store, NULL, "x"), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_expiry(store, id, "2001-01-01T00:00:00Z"), KW_STATUS_OK);
    CHECK(verify(store, key, "10.0.0.1").denial == KW_DENIAL_EXPIRED);
    CHECK_STATUS(kw_key_set_expiry(store, id, NULL), KW_STATUS_OK);
    CHECK(verify(store, key, "10.0.0.1").valid);
    CHECK_STATUS(kw_key_set_expiry(store, id, "next tuesday"), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_set_expiry(NULL, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_expiry(store, NULL, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_metadata(store, id, "{\"tier\": 3}"), KW_STATUS_OK);
    CHECK(json_has(store, id, "\"tier\":3"));
    CHECK_STATUS(kw_key_set_metadata(store, id, "[1]"), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_set_metadata(store, id, "{"), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_set_metadata(store, id, NULL), KW_STATUS_OK);
    CHECK(json_has(store, id, "\"metadata\":null"));
    CHECK_STATUS(kw_key_set_metadata(NULL, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_set_metadata(store, NULL, NULL), KW_STATUS_NULL_ARGUMENT);

    /* --- regenerate --------------------------------------------------- */
    char fresh[KW_KEY_BUFFER_LEN];
    CHECK_STATUS(kw_key_regenerate(store, id, 0, fresh, 20), KW_STATUS_BUFFER_TOO_SMALL);
    CHECK(json_has(store, id, "\"generation\":1")); /* nothing changed */
    CHECK(verify(store, key, "10.0.0.1").valid);
    CHECK_STATUS(kw_key_regenerate(NULL, id, 0, fresh, sizeof fresh), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_regenerate(store, NULL, 0, fresh, sizeof fresh), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_regenerate(store, id, 0, NULL, sizeof fresh), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_regenerate(store, "AAAAAAAAAAAA", 0, fresh, sizeof fresh), KW_STATUS_NOT_FOUND);
    CHECK_STATUS(kw_key_regenerate(store, id, 400ull * 86400, fresh, sizeof fresh), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_key_regenerate(store, id, 0, fresh, sizeof fresh), KW_STATUS_OK);
    CHECK(strcmp(fresh, key) != 0 && strncmp(fresh, key, 23) == 0); /* same prefix and id */
    v = verify(store, key, "10.0.0.1");
    CHECK(!v.valid && v.denial == KW_DENIAL_ROTATED && v.rotated_at_unix_ms > 0);
    v = verify(store, fresh, "10.0.0.1");
    CHECK(v.valid && v.generation == 2);
    char graced[KW_KEY_BUFFER_LEN];
    CHECK_STATUS(kw_key_regenerate(store, id, 3600, graced, sizeof graced), KW_STATUS_OK);
    v = verify(store, fresh, "10.0.0.1");
    CHECK(v.valid && v.in_grace && v.generation == 2);
    /* The _json forms return the Overview with the key: no second read. */
    char third[KW_KEY_BUFFER_LEN];
    char *info = NULL;
    CHECK_STATUS(kw_key_regenerate_json(store, id, 0, third, sizeof third, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_regenerate_json(store, id, 0, third, sizeof third, &info), KW_STATUS_OK);
    CHECK(info && strstr(info, "\"generation\":4") && strstr(info, id));
    CHECK(info && strstr(info, third + 23) == NULL); /* the secret is not in it */
    kw_string_free(info);
    CHECK(verify(store, third, "10.9.9.9").generation == 4);

    /* --- fork: a child must open the store itself ----------------------- */
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        kw_verdict cv;
        memset(&cv, 0, sizeof cv);
        cv.size = sizeof cv;
        int ok = kw_verify(store, third, strlen(third), "10.9.9.9", NULL, &cv) == KW_STATUS_FORKED
                 && strstr(last_error(), "post_fork") != NULL
                 && kw_key_delete(store, id) == KW_STATUS_FORKED
                 && kw_store_close(store) == KW_STATUS_FORKED;
        _exit(ok ? 0 : 1);
    }
    int child_status = 0;
    CHECK(child > 0 && waitpid(child, &child_status, 0) == child);
    CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0);
    CHECK(verify(store, third, "10.9.9.9").generation == 4); /* the parent's is untouched */
    char made[KW_KEY_BUFFER_LEN];
    CHECK_STATUS(kw_key_create_json(store, "with-info", "{\"metadata\":{\"plan\":\"pro\"}}", made, sizeof made, &info), KW_STATUS_OK);
    CHECK(info && strstr(info, "\"name\":\"with-info\"") && strstr(info, "\"plan\":\"pro\""));
    kw_string_free(info);
    CHECK(verify(store, made, "10.9.9.9").valid);
    CHECK_STATUS(kw_key_create_json(store, "with-info", NULL, made, 10, &info), KW_STATUS_BUFFER_TOO_SMALL);

    /* --- usage, events, flush ----------------------------------------- */
    CHECK_STATUS(kw_usage_json(store, id, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"rotated\":1") && strstr(json, "\"c-test\"") && strstr(json, "\"stale_secret\":true"));
    kw_string_free(json);
    CHECK_STATUS(kw_usage_json(NULL, id, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_usage_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_usage_json(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_usage_json(store, "AAAAAAAAAAAA", &json), KW_STATUS_NOT_FOUND);
    /* The key's last verifications, newest first: the old secret's came from c-test. */
    CHECK_STATUS(kw_recent_requests_json(store, id, &json), KW_STATUS_OK);
    CHECK(json && json[0] == '[' && strstr(json, "\"allowed\":true") && strstr(json, "\"stale_secret\":true"));
    CHECK(json && strstr(json, "\"integration\":\"c-test\"") && strstr(json, fresh + 23) == NULL);
    kw_string_free(json);
    CHECK_STATUS(kw_recent_requests_json(NULL, id, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_recent_requests_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_recent_requests_json(store, id, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_recent_requests_json(store, "\xff\xfe", &json), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_recent_requests_json(store, "AAAAAAAAAAAA", &json), KW_STATUS_NOT_FOUND);
    CHECK_STATUS(kw_events_json(store, 0, 1000, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"key.created\"") && strstr(json, "\"key.regenerated\"") && strstr(json, "\"whitelist.updated\""));
    CHECK(json && strstr(json, fresh + 23) == NULL && strstr(json, "argon2") == NULL);
    kw_string_free(json);
    CHECK_STATUS(kw_events_json(store, 1000000, 10, &json), KW_STATUS_OK);
    CHECK(json && strcmp(json, "[]") == 0);
    kw_string_free(json);
    /* Queries: one key's regenerations; every event, newest first, a page of one. */
    char query[128];
    snprintf(query, sizeof query, "{\"key_id\": \"%s\", \"kinds\": [\"key.regenerated\"]}", id);
    CHECK_STATUS(kw_events_query_json(store, query, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"key.regenerated\"") && !strstr(json, "\"key.created\"") && strstr(json, "\"next\":null"));
    CHECK(json && strstr(json, "\"actor\":\"billing-service\""));
    kw_string_free(json);
    CHECK_STATUS(kw_events_query_json(store, "{\"newest_first\": true, \"limit\": 1, \"actor\": \"billing-service\"}", &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"next\":") && !strstr(json, "\"next\":null"));
    kw_string_free(json);
    CHECK_STATUS(kw_events_query_json(store, "{\"owner\": \"nobody\"}", &json), KW_STATUS_OK);
    CHECK(json && strcmp(json, "{\"events\":[],\"next\":null}") == 0);
    kw_string_free(json);
    CHECK_STATUS(kw_events_query_json(NULL, "{}", &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_events_query_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_events_query_json(store, "{}", NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_events_query_json(store, bad_utf8, &json), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_events_query_json(store, huge, &json), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_events_query_json(store, "[]", &json), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_events_query_json(store, "{\"colour\": 1}", &json), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_events_query_json(store, "{\"limit\": 0}", &json), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_events_query_json(store, "{\"kinds\": [\"key.exploded\"]}", &json), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_events_json(NULL, 0, 10, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_events_json(store, 0, 10, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_flush(store), KW_STATUS_OK);
    CHECK_STATUS(kw_store_flush(NULL), KW_STATUS_NULL_ARGUMENT);

    /* --- plugins ------------------------------------------------------ */
    const char *manifest = "name = \"c-logger\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"*\"]\n";
    const unsigned char junk[] = "not a component";
    CHECK_STATUS(kw_plugin_install(store, junk, sizeof junk, manifest, NULL), KW_STATUS_PLUGIN_INVALID_COMPONENT);
    CHECK_STATUS(kw_plugin_install(store, junk, sizeof junk, "name = 1", NULL), KW_STATUS_PLUGIN_INVALID_MANIFEST);
    CHECK_STATUS(kw_plugin_install(NULL, junk, sizeof junk, manifest, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_install(store, NULL, 0, manifest, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_install(store, junk, sizeof junk, NULL, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_install(store, junk, sizeof junk, bad_utf8, NULL), KW_STATUS_INVALID_UTF8);
    if (component_len > 0) {
        CHECK_STATUS(kw_plugin_install(store, component, component_len, manifest, &json), KW_STATUS_OK);
        CHECK(json && strstr(json, "\"name\":\"c-logger\"") && strstr(json, "\"enabled\":true"));
        kw_string_free(json);
        CHECK_STATUS(kw_plugin_install(store, component, component_len, manifest, NULL), KW_STATUS_PLUGIN_EXISTS);
        CHECK_STATUS(kw_plugin_set_enabled(store, "c-logger", false), KW_STATUS_OK);
        CHECK_STATUS(kw_plugin_status_json(store, "c-logger", &json), KW_STATUS_OK);
        CHECK(json && strstr(json, "\"enabled\":false"));
        kw_string_free(json);
        size_t queued = 99;
        CHECK_STATUS(kw_plugin_retry(store, "c-logger", &queued), KW_STATUS_OK);
        CHECK(queued == 0);
        CHECK_STATUS(kw_plugin_retry(store, "c-logger", NULL), KW_STATUS_OK);
        CHECK_STATUS(kw_plugin_dead_letters_json(store, "c-logger", &json), KW_STATUS_OK);
        CHECK(json && strcmp(json, "[]") == 0);
        kw_string_free(json);
        CHECK_STATUS(kw_plugin_log_json(store, "c-logger", &json), KW_STATUS_OK);
        CHECK(json && json[0] == '[');
        kw_string_free(json);
        CHECK_STATUS(kw_plugin_list_json(store, &json), KW_STATUS_OK);
        CHECK(json && strstr(json, "c-logger"));
        kw_string_free(json);
        CHECK_STATUS(kw_plugin_remove(store, "c-logger"), KW_STATUS_OK);
    }
    CHECK_STATUS(kw_plugin_list_json(store, &json), KW_STATUS_OK);
    CHECK(json && strcmp(json, "[]") == 0);
    kw_string_free(json);
    CHECK_STATUS(kw_plugin_list_json(NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_list_json(store, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_status_json(store, "nope", &json), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_status_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_status_json(store, "nope", NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_dead_letters_json(store, "nope", &json), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_dead_letters_json(NULL, "nope", &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_log_json(store, "nope", &json), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_log_json(store, NULL, &json), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_remove(store, "nope"), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_remove(NULL, "nope"), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_remove(store, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_set_enabled(store, "nope", true), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_set_enabled(NULL, "nope", true), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_plugin_retry(store, "nope", NULL), KW_STATUS_PLUGIN_NOT_FOUND);
    CHECK_STATUS(kw_plugin_retry(store, NULL, NULL), KW_STATUS_NULL_ARGUMENT);

    /* --- last error --------------------------------------------------- */
    CHECK_STATUS(kw_key_delete(store, "AAAAAAAAAAAA"), KW_STATUS_NOT_FOUND);
    size_t full = kw_last_error_message(NULL, 0);
    CHECK(full > 10);
    char small[5];
    CHECK(kw_last_error_message(small, sizeof small) == full);
    CHECK(strlen(small) == 4);
    char *whole = malloc(full + 1);
    CHECK(kw_last_error_message(whole, full + 1) == full && strlen(whole) == full);
    CHECK(strstr(whole, "AAAAAAAAAAAA") != NULL);
    free(whole);

    /* --- keys imported from another system ---------------------------- */
    {
        char iid[KW_KEY_ID_BUFFER_LEN];
        const char *legacy = "sk_live_c_legacy_0001";
        CHECK_STATUS(kw_key_import(store, "legacy", "{\"kind\": \"plaintext\", \"secret\": \"sk_live_c_legacy_0001\", \"owner\": \"acct_c\"}", iid, sizeof iid), KW_STATUS_OK);
        kw_verdict v = verify(store, legacy, "10.0.0.1");
        CHECK(v.valid && strcmp(v.key_id, iid) == 0 && strcmp(v.owner, "acct_c") == 0);
        CHECK(verify(store, "sk_live_c_legacy_0002", "10.0.0.1").denial == KW_DENIAL_MALFORMED);
        /* The same key twice: refused, nothing made. */
        char again[KW_KEY_ID_BUFFER_LEN] = "unchanged";
        CHECK_STATUS(kw_key_import(store, "again", "{\"kind\": \"plaintext\", \"secret\": \"sk_live_c_legacy_0001\"}", again, sizeof again), KW_STATUS_INVALID_INPUT);
        CHECK(strcmp(again, "unchanged") == 0);
        /* sha256("legacy-c-key-sha") */
        CHECK_STATUS(kw_key_import(store, "sha", "{\"kind\": \"sha256\", \"secret\": \"14b8f2034b4e2c356213f778f3595b869b057d90bc596c6a46c152b66d7f6d00\"}", iid, sizeof iid), KW_STATUS_OK);
        v = verify(store, "legacy-c-key-sha", "10.0.0.1");
        CHECK(v.valid && strcmp(v.key_id, iid) == 0);
        CHECK_STATUS(kw_key_import(store, "bcrypt", "{\"kind\": \"phc\", \"prefix\": \"CKEY0001\", \"secret\": \"$2b$04$ZJrW4aSBBZsUQyhTPKel2OarUOSJT.MyEfHkjUq46gFArkG.mAn9i\", \"whitelist\": [{\"name\": \"lan\", \"network\": \"10.0.0.0/8\"}]}", iid, sizeof iid), KW_STATUS_OK);
        v = verify(store, "CKEY0001.the-rest-of-the-c-key", "10.0.0.1");
        CHECK(v.valid && strcmp(v.key_id, iid) == 0);
        CHECK(verify(store, "CKEY0001.the-rest-of-the-c-key", "192.0.2.1").denial == KW_DENIAL_IP_NOT_ALLOWED);
        v = verify(store, "CKEY0001.wrong", "10.0.0.1");
        CHECK(!v.valid && v.denial == KW_DENIAL_WRONG_SECRET && strcmp(v.key_id, iid) == 0);
        /* Bad input: typed errors, and the secret is not in the message. */
        CHECK_STATUS(kw_key_import(store, "x", "{\"kind\": \"phc\", \"secret\": \"$2b$04$x\"}", iid, sizeof iid), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_import(store, "x", "{\"kind\": \"md5\", \"secret\": \"s\"}", iid, sizeof iid), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_import(store, "x", "{\"kind\": 7, \"secret\": \"topsecret-in-json\"}", iid, sizeof iid), KW_STATUS_INVALID_INPUT);
        CHECK(strstr(last_error(), "topsecret") == NULL);
        CHECK_STATUS(kw_key_import(store, "x", NULL, iid, sizeof iid), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_import(store, "x", bad_utf8, iid, sizeof iid), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_key_import(store, "x", huge, iid, sizeof iid), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_import(store, "y", "{\"kind\": \"plaintext\", \"secret\": \"fits-no-buffer\"}", iid, 5), KW_STATUS_BUFFER_TOO_SMALL);
        CHECK(verify(store, "fits-no-buffer", "10.0.0.1").denial == KW_DENIAL_MALFORMED);
    }

    /* --- limits, quota, scopes ------------------------------------------ */
    {
        char lkey[KW_KEY_BUFFER_LEN], lid[KW_KEY_ID_BUFFER_LEN];
        CHECK_STATUS(kw_key_create_ex(store, "limited",
                                      "{\"scopes\": [\"orders:read\"], "
                                      "\"limits\": [{\"name\": \"burst\", \"limit\": 2, \"window_seconds\": 1}], "
                                      "\"quota\": {\"remaining\": 4}}",
                                      lkey, sizeof lkey, lid, sizeof lid), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"scopes\":[\"orders:read\"]"));
        CHECK(json_has(store, lid, "{\"name\":\"burst\",\"limit\":2,\"window_seconds\":1.0}"));
        CHECK(json_has(store, lid, "\"quota\":{\"remaining\":4,\"refill\":null}"));
        kw_verdict v;
        memset(&v, 0xAB, sizeof v);
        v.size = sizeof v;
        size_t n = strlen(lkey);
        /* A missing scope is refused before the limits: nothing is spent. */
        for (int i = 0; i < 5; i++) {
            CHECK_STATUS(kw_verify_scoped(store, lkey, n, "10.0.0.1", NULL, "orders:write", &v), KW_STATUS_OK);
            CHECK(!v.valid && v.denial == KW_DENIAL_SCOPE_MISSING && v.retry_after_ms == 0);
        }
        CHECK_STATUS(kw_verify_scoped(store, lkey, n, "10.0.0.1", NULL, "orders:read", &v), KW_STATUS_OK);
        CHECK(v.valid && v.retry_after_ms == 0);
        CHECK_STATUS(kw_verify_scoped(store, lkey, n, "10.0.0.1", NULL, NULL, &v), KW_STATUS_OK);
        CHECK(v.valid);
        /* 2 per second: the third at once waits until they have left the
           window, counted in parts of 33 ms. */
        CHECK_STATUS(kw_verify(store, lkey, n, "10.0.0.1", NULL, &v), KW_STATUS_OK);
        CHECK(!v.valid && v.denial == KW_DENIAL_RATE_LIMITED);
        CHECK(v.retry_after_ms > 0 && v.retry_after_ms <= 1033);
        /* Admitted again once it has passed (polled, with a deadline). */
        int admitted = 0;
        for (int i = 0; i < 200 && !admitted; i++) {
            pause_ms(50);
            CHECK_STATUS(kw_verify(store, lkey, n, "10.0.0.1", NULL, &v), KW_STATUS_OK);
            admitted = v.valid;
        }
        CHECK(admitted);
        /* The quota of 4: one left, then refused. */
        int refused = 0;
        for (int i = 0; i < 200 && !refused; i++) {
            pause_ms(50);
            CHECK_STATUS(kw_verify(store, lkey, n, "10.0.0.1", NULL, &v), KW_STATUS_OK);
            refused = v.denial == KW_DENIAL_QUOTA_EXHAUSTED;
        }
        CHECK(refused);
        CHECK(json_has(store, lid, "\"remaining\":0"));
        /* Set and cleared. */
        CHECK_STATUS(kw_key_set_quota(store, lid, "{\"remaining\": 7, \"refill\": {\"amount\": 9, \"period\": \"daily\"}}"), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"quota\":{\"remaining\":7,\"refill\":{\"amount\":9,\"period\":\"daily\"}}"));
        CHECK_STATUS(kw_key_set_quota(store, lid, NULL), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"quota\":null"));
        CHECK_STATUS(kw_key_set_scopes(store, lid, "[\"contacts:write\", \"a:b\"]"), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"scopes\":[\"a:b\",\"contacts:write\"]"));
        CHECK_STATUS(kw_key_set_limits(store, lid, "[]"), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"limits\":[]"));
        CHECK_STATUS(kw_key_set_limits(store, lid, "[{\"name\": \"daily\", \"limit\": 10000, \"window_seconds\": 86400}]"), KW_STATUS_OK);
        CHECK(json_has(store, lid, "\"name\":\"daily\""));
        /* Bad input: typed errors, nothing changed. */
        CHECK_STATUS(kw_key_set_limits(store, lid, "[{\"name\": \"x\", \"limit\": 0, \"window_seconds\": 1}]"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_limits(store, lid, "[{\"name\": \"x\", \"limit\": 1}]"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_limits(store, lid, "not json"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_limits(store, lid, bad_utf8), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_key_set_limits(store, lid, huge), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_limits(NULL, lid, "[]"), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_set_scopes(store, lid, "[\"has space\"]"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_scopes(store, NULL, "[]"), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_set_quota(store, lid, "{\"remaining\": -1}"), KW_STATUS_INVALID_INPUT);
        CHECK_STATUS(kw_key_set_quota(store, "AAAAAAAAAAAA", "{\"remaining\": 1}"), KW_STATUS_NOT_FOUND);
        CHECK(json_has(store, lid, "\"name\":\"daily\"") && json_has(store, lid, "\"quota\":null"));
        CHECK_STATUS(kw_verify_scoped(store, lkey, n, "10.0.0.1", NULL, bad_utf8, &v), KW_STATUS_INVALID_UTF8);
        CHECK_STATUS(kw_verify_scoped(store, lkey, n, "10.0.0.1", NULL, huge, &v), KW_STATUS_OK);
        CHECK(v.denial == KW_DENIAL_SCOPE_MISSING);
        CHECK_STATUS(kw_verify_scoped(NULL, lkey, n, "10.0.0.1", NULL, NULL, &v), KW_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(kw_key_create_ex(store, "bad", "{\"limits\": [{\"name\": \"\", \"limit\": 1, \"window_seconds\": 1}]}", lkey, sizeof lkey, lid, sizeof lid), KW_STATUS_INVALID_INPUT);
    }

    /* --- delete, close, reopen ---------------------------------------- */
    CHECK_STATUS(kw_key_delete(NULL, id), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_delete(store, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_key_delete(store, bad_utf8), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_key_delete(store, id), KW_STATUS_OK);
    CHECK(verify(store, graced, "10.0.0.1").denial == KW_DENIAL_UNKNOWN_KEY);
    CHECK_STATUS(kw_key_delete(store, id), KW_STATUS_NOT_FOUND);

    /* --- backup: a new sled store that opens directly --------------- */
    char backup[4096], backup_json[4096];
    snprintf(backup, sizeof backup, "%s-backup", path);
    snprintf(backup_json, sizeof backup_json, "%s-backup-json", path);
    CHECK_STATUS(kw_store_backup(NULL, backup), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_backup(store, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_backup(store, bad_utf8), KW_STATUS_INVALID_UTF8);
    CHECK_STATUS(kw_store_backup(store, backup), KW_STATUS_OK);
    CHECK_STATUS(kw_store_backup(store, backup), KW_STATUS_INVALID_INPUT); /* not empty now */
    CHECK(strstr(last_error(), "not empty") != NULL);
    CHECK_STATUS(kw_store_backup(store, path), KW_STATUS_INVALID_INPUT);
    char *copied = NULL;
    CHECK_STATUS(kw_store_backup_json(store, backup_json, NULL), KW_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(kw_store_backup_json(store, backup_json, &copied), KW_STATUS_OK);
    CHECK(copied && strstr(copied, "\"keys\":") && strstr(copied, "\"last_event\":"));
    kw_string_free(copied);
    CHECK_STATUS(kw_store_copy_json(store, backup_json, &copied), KW_STATUS_INVALID_INPUT);
    CHECK_STATUS(kw_store_copy_json(store, NULL, &copied), KW_STATUS_NULL_ARGUMENT);
    {
        kw_store *restored = NULL;
        kw_options cheap = { .size = sizeof cheap, .argon2_memory_kib = 64, .argon2_iterations = 1 };
        CHECK_STATUS(kw_store_open(backup, &cheap, &restored), KW_STATUS_OK);
        CHECK(verify(restored, key2, "198.51.100.7").valid);
        CHECK(verify(restored, graced, "10.0.0.1").denial == KW_DENIAL_UNKNOWN_KEY);
        char *again = NULL;
        CHECK_STATUS(kw_store_check_json(restored, false, &again), KW_STATUS_OK);
        CHECK(again && strstr(again, "\"clean\":true"));
        kw_string_free(again);
        kw_store_free(restored);
    }

    kw_string_free(NULL);
    kw_store_free(NULL);
    CHECK_STATUS(kw_store_close(NULL), KW_STATUS_OK);
    CHECK_STATUS(kw_store_close(store), KW_STATUS_OK);

    kw_options plain = { .size = sizeof plain };
    plain.argon2_memory_kib = 64;
    plain.argon2_iterations = 1;
    CHECK_STATUS(kw_store_open(path, &plain, &store), KW_STATUS_OK);
    CHECK(verify(store, key2, "198.51.100.7").valid); /* persisted; prefix kept */
    CHECK_STATUS(kw_key_get_json(store, id, &json), KW_STATUS_NOT_FOUND);
    kw_store_free(store);

    free(huge);
    free(component);
    return report();
}
