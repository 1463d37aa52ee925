/* A "legacy server" in miniature: reads requests as lines of
 *     KEY IP [INTEGRATION]
 * on stdin and answers each with a verdict line:
 *     200 <key id> generation <n>
 *     401 <reason> <key id or ->
 *     403 ip_not_allowed <key id>
 *     429 rate_limited <key id> retry-after-ms <n>
 *     429 quota_exhausted <key id>
 *
 * Build: make -C examples/c      Run: examples/c/legacy_server STORE_DIR < requests.txt
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward.h"

static const char *reason(kw_denial d) {
    switch (d) {
    case KW_DENIAL_NONE: return "none";
    case KW_DENIAL_MALFORMED: return "malformed";
    case KW_DENIAL_UNKNOWN_KEY: return "unknown_key";
    case KW_DENIAL_WRONG_SECRET: return "wrong_secret";
    case KW_DENIAL_ROTATED: return "rotated";
    case KW_DENIAL_EXPIRED: return "expired";
    case KW_DENIAL_DISABLED: return "disabled";
    case KW_DENIAL_IP_NOT_ALLOWED: return "ip_not_allowed";
    case KW_DENIAL_BUSY: return "busy";
    case KW_DENIAL_UNAVAILABLE: return "unavailable";
    case KW_DENIAL_RATE_LIMITED: return "rate_limited";
    case KW_DENIAL_QUOTA_EXHAUSTED: return "quota_exhausted";
    case KW_DENIAL_SCOPE_MISSING: return "scope_missing";
    }
    return "unknown";
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s STORE_DIR < requests\n", argv[0]);
        return 2;
    }
    kw_store *store = NULL;
    if (kw_store_open(argv[1], NULL, &store) != KW_STATUS_OK) {
        char msg[512];
        kw_last_error_message(msg, sizeof msg);
        fprintf(stderr, "cannot open %s: %s\n", argv[1], msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        char *save = NULL;
        char *key = strtok_r(line, " \t\r\n", &save);
        char *ip = strtok_r(NULL, " \t\r\n", &save);
        char *integration = strtok_r(NULL, "\r\n", &save);
        if (!key || !ip) {
            printf("400 expected: KEY IP [INTEGRATION]\n");
            continue;
        }
        kw_verdict v = { .size = sizeof v };
        if (kw_verify(store, key, strlen(key), ip, integration, &v) != KW_STATUS_OK) {
            char msg[256];
            kw_last_error_message(msg, sizeof msg);
            printf("400 %s\n", msg);
        } else if (v.valid) {
            printf("200 %s generation %u%s\n", v.key_id, v.generation, v.in_grace ? " (old secret, in grace)" : "");
        } else if (v.denial == KW_DENIAL_RATE_LIMITED) {
            printf("429 %s %s retry-after-ms %llu\n", reason(v.denial), v.key_id,
                   (unsigned long long)v.retry_after_ms);
        } else {
            int status = 401;
            if (v.denial == KW_DENIAL_IP_NOT_ALLOWED || v.denial == KW_DENIAL_SCOPE_MISSING) status = 403;
            if (v.denial == KW_DENIAL_QUOTA_EXHAUSTED) status = 429;
            printf("%d %s %s\n", status, reason(v.denial), v.key_id[0] ? v.key_id : "-");
        }
        fflush(stdout);
    }
    free(line);
    return kw_store_close(store) == KW_STATUS_OK ? 0 : 1;
}
