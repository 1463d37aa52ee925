/* Two threads verify while a third regenerates: once kw_key_regenerate has
 * returned, no thread may accept the old secret.
 * Usage: test_threads STORE_DIR */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>

#include "check.h"

#define ROUNDS 60

static kw_store *store;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char current[KW_KEY_BUFFER_LEN];
static char revoked[KW_KEY_BUFFER_LEN];
static unsigned current_gen = 1, revoked_gen = 0;
static atomic_uint latest_gen = 1;

/* A superseded key answers ROTATED while its generation is remembered (8
 * back), WRONG_SECRET after that; never anything else, and never valid. */
static int superseded_ok(const kw_verdict *v, unsigned gen) {
    if (v->valid) return 0;
    if (v->denial == KW_DENIAL_ROTATED) return 1;
    return v->denial == KW_DENIAL_WRONG_SECRET && atomic_load(&latest_gen) - gen > 8;
}
static atomic_int done;
static atomic_long old_accepted, checked, current_refused;

static void *verifier(void *arg) {
    const char *ip = arg;
    char cur[KW_KEY_BUFFER_LEN], old[KW_KEY_BUFFER_LEN];
    unsigned cur_gen, old_gen;
    while (!atomic_load(&done)) {
        pthread_mutex_lock(&lock);
        memcpy(cur, current, sizeof cur);
        memcpy(old, revoked, sizeof old);
        cur_gen = current_gen;
        old_gen = revoked_gen;
        pthread_mutex_unlock(&lock);
        kw_verdict v = { .size = sizeof v };
        if (old[0]) {
            if (kw_verify(store, old, strlen(old), ip, "thread", &v) != KW_STATUS_OK || !superseded_ok(&v, old_gen))
                atomic_fetch_add(&old_accepted, 1);
            atomic_fetch_add(&checked, 1);
        }
        /* the current key may be superseded between the copy and the call */
        if (kw_verify(store, cur, strlen(cur), ip, "thread", &v) != KW_STATUS_OK ||
            (!v.valid && !superseded_ok(&v, cur_gen)))
            atomic_fetch_add(&current_refused, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    kw_options o = { .size = sizeof o };
    o.argon2_memory_kib = 64;
    o.argon2_iterations = 1;
    CHECK_STATUS(kw_store_open(argv[1], &o, &store), KW_STATUS_OK);
    char id[KW_KEY_ID_BUFFER_LEN];
    CHECK_STATUS(kw_key_create(store, "hot", current, sizeof current, id, sizeof id), KW_STATUS_OK);

    pthread_t a, b;
    pthread_create(&a, NULL, verifier, "10.0.0.1");
    pthread_create(&b, NULL, verifier, "10.0.0.2");
    for (int i = 0; i < ROUNDS; i++) {
        char fresh[KW_KEY_BUFFER_LEN];
        CHECK_STATUS(kw_key_regenerate(store, id, 0, fresh, sizeof fresh), KW_STATUS_OK);
        /* regenerate has returned: from now on the old key must be refused */
        atomic_store(&latest_gen, (unsigned)i + 2);
        pthread_mutex_lock(&lock);
        memcpy(revoked, current, sizeof revoked);
        memcpy(current, fresh, sizeof current);
        revoked_gen = current_gen;
        current_gen = (unsigned)i + 2;
        pthread_mutex_unlock(&lock);
        struct timespec pause = {0, 2 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    atomic_store(&done, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);

    CHECK(atomic_load(&old_accepted) == 0);
    CHECK(atomic_load(&current_refused) == 0);
    CHECK(atomic_load(&checked) > 0);
    char *json = NULL;
    CHECK_STATUS(kw_key_get_json(store, id, &json), KW_STATUS_OK);
    CHECK(json && strstr(json, "\"generation\":61") != NULL);
    kw_string_free(json);
    CHECK_STATUS(kw_store_close(store), KW_STATUS_OK);
    printf("checked %ld revoked-key verifications\n", atomic_load(&checked));
    return report();
}
