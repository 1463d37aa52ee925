/* Verify through the C ABI: nanoseconds per warm kw_verify call.
 * Usage: bench_verify [ITERATIONS]   (a temporary store with 1,000 keys) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward.h"

#define KEYS 1000

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 5000000;
    char dir[] = "/tmp/keyward-bench-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[64];
    snprintf(path, sizeof path, "%s/store", dir);
    kw_options o = { .size = sizeof o };
    o.argon2_memory_kib = 64; /* cheap hashes: this measures the warm path */
    o.argon2_iterations = 1;
    kw_store *store = NULL;
    if (kw_store_open(path, &o, &store) != KW_STATUS_OK) return 1;
    static char keys[KEYS][KW_KEY_BUFFER_LEN];
    static size_t lens[KEYS];
    for (int i = 0; i < KEYS; i++) {
        char id[KW_KEY_ID_BUFFER_LEN];
        if (kw_key_create(store, "bench", keys[i], sizeof keys[i], id, sizeof id) != KW_STATUS_OK) return 1;
        lens[i] = strlen(keys[i]);
    }
    kw_verdict v = { .size = sizeof v };
    for (int i = 0; i < KEYS; i++) { /* warm the cache */
        if (kw_verify(store, keys[i], lens[i], "203.0.113.7", "bench", &v) != KW_STATUS_OK || !v.valid) return 1;
    }
    long valid = 0;
    double start = now_ns();
    for (long n = 0; n < iterations; n++) {
        int i = (int)(n % KEYS);
        kw_verify(store, keys[i], lens[i], "203.0.113.7", "bench", &v);
        valid += v.valid;
    }
    double elapsed = now_ns() - start;
    printf("kw_verify warm: %.0f ns/op over %ld calls (%ld valid)\n", elapsed / (double)iterations, iterations, valid);
    kw_store_free(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 && valid == iterations ? 0 : 1;
}
