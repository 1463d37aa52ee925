/* An admin tool over the C ABI:
 *     admin STORE create NAME
 *     admin STORE list
 *     admin STORE whitelist ID ENTRY_NAME IP_OR_CIDR     (adds the entry, turns the restriction on)
 *     admin STORE regenerate ID [GRACE_SECONDS]
 *     admin STORE usage ID
 *     admin STORE import NAME OPTIONS_JSON    (a key another system issued, e.g.
 *         '{"kind": "sha256", "secret": "<hex>", "owner": "acct_42"}')
 *
 * Build: make -C examples/c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward.h"

static int fail(const char *what) {
    char msg[512];
    kw_last_error_message(msg, sizeof msg);
    fprintf(stderr, "%s: %s\n", what, msg);
    return 1;
}

/* Prints and frees the JSON a call returned through *json, or its error. */
static int print_json(kw_status st, char **json, const char *what) {
    if (st != KW_STATUS_OK) return fail(what);
    printf("%s\n", *json);
    kw_string_free(*json);
    return 0;
}

static int run(kw_store *store, int argc, char **argv) {
    const char *cmd = argv[2];
    char *json = NULL;
    if (strcmp(cmd, "create") == 0 && argc == 4) {
        char key[KW_KEY_BUFFER_LEN], id[KW_KEY_ID_BUFFER_LEN];
        if (kw_key_create(store, argv[3], key, sizeof key, id, sizeof id) != KW_STATUS_OK) return fail("create");
        printf("id %s\nkey %s\n(store the key now: it is not shown again)\n", id, key);
        return 0;
    }
    if (strcmp(cmd, "list") == 0 && argc == 3) return print_json(kw_key_list_json(store, &json), &json, "list");
    if (strcmp(cmd, "whitelist") == 0 && argc == 6) {
        char entry[KW_ENTRY_ID_BUFFER_LEN];
        if (kw_whitelist_add(store, argv[3], argv[4], argv[5], entry, sizeof entry) != KW_STATUS_OK)
            return fail("whitelist add");
        if (kw_whitelist_set_enabled(store, argv[3], true) != KW_STATUS_OK) return fail("whitelist enable");
        printf("entry %s\n", entry);
        return print_json(kw_whitelist_json(store, argv[3], &json), &json, "whitelist");
    }
    if (strcmp(cmd, "regenerate") == 0 && (argc == 4 || argc == 5)) {
        char key[KW_KEY_BUFFER_LEN];
        unsigned long long grace = argc == 5 ? strtoull(argv[4], NULL, 10) : 0;
        if (kw_key_regenerate(store, argv[3], grace, key, sizeof key) != KW_STATUS_OK) return fail("regenerate");
        printf("key %s\n(the old key %s)\n", key, grace ? "works until the grace period ends" : "no longer works");
        return 0;
    }
    if (strcmp(cmd, "usage") == 0 && argc == 4) return print_json(kw_usage_json(store, argv[3], &json), &json, "usage");
    if (strcmp(cmd, "import") == 0 && argc == 5) {
        char id[KW_KEY_ID_BUFFER_LEN];
        if (kw_key_import(store, argv[3], argv[4], id, sizeof id) != KW_STATUS_OK) return fail("import");
        printf("id %s\n(the key its holder has keeps working)\n", id);
        return 0;
    }
    fprintf(stderr, "unknown command or wrong arguments: %s\n", cmd);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s STORE create NAME | list | whitelist ID NAME CIDR | regenerate ID [GRACE] | usage ID | import NAME OPTIONS_JSON\n", argv[0]);
        return 2;
    }
    kw_store *store = NULL;
    if (kw_store_open(argv[1], NULL, &store) != KW_STATUS_OK) return fail("open");
    int rc = run(store, argc, argv);
    kw_store_free(store);
    return rc;
}
