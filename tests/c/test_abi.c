/* The ABI policy of keyward.h, from a program's side: the version checks,
 * and structs that grow. A program built against a newer header (its
 * structs have a field appended) keeps working with this library: the
 * library fills only the fields it knows and leaves the new one alone,
 * and refuses a setting it does not know rather than ignore it. A struct
 * whose size is not set is refused before anything is written.
 * Usage: test_abi STORE_DIR */
#include <stdlib.h>

#include "check.h"

/* What the next header would declare: each struct with one field appended. */
typedef struct {
    kw_options current;
    uint64_t appended_option;
} next_options;

typedef struct {
    kw_verdict current;
    int64_t appended_answer;
} next_verdict;

int main(int argc, char **argv) {
    if (argc != 2) return 2;

    /* --- versions ----------------------------------------------------- */
    CHECK(kw_abi_version() == KW_ABI_VERSION);
    char expected[32];
    snprintf(expected, sizeof expected, "%u.%u.%u", KW_VERSION_MAJOR, KW_VERSION_MINOR, KW_VERSION_PATCH);
    CHECK(strcmp(kw_version(), expected) == 0);

    /* --- options: unset size, a newer program's zero and non-zero field -- */
    kw_store *store = NULL;
    kw_options unsized;
    memset(&unsized, 0, sizeof unsized);
    CHECK_STATUS(kw_store_open(argv[1], &unsized, &store), KW_STATUS_INVALID_OPTIONS);
    CHECK(store == NULL && strstr(last_error(), "sizeof(kw_options)") != NULL);

    next_options next;
    memset(&next, 0, sizeof next);
    next.current.size = sizeof next;
    next.current.argon2_memory_kib = 64;
    next.current.argon2_iterations = 1;
    next.appended_option = 1;
    CHECK_STATUS(kw_store_open(argv[1], &next.current, &store), KW_STATUS_INVALID_OPTIONS);
    CHECK(store == NULL && strstr(last_error(), "newer") != NULL);
    next.appended_option = 0; /* zero: "as before the field existed" */
    CHECK_STATUS(kw_store_open(argv[1], &next.current, &store), KW_STATUS_OK);

    char key[KW_KEY_BUFFER_LEN], id[KW_KEY_ID_BUFFER_LEN];
    CHECK_STATUS(kw_key_create(store, "abi", key, sizeof key, id, sizeof id), KW_STATUS_OK);

    /* --- verdict: unset size, then a newer program's struct ------------- */
    kw_verdict zero;
    memset(&zero, 0, sizeof zero);
    CHECK_STATUS(kw_verify(store, key, strlen(key), "10.0.0.1", NULL, &zero), KW_STATUS_INVALID_INPUT);
    CHECK(!zero.valid && zero.generation == 0 && zero.key_id[0] == 0);

    next_verdict answer;
    memset(&answer, 0, sizeof answer);
    answer.current.size = sizeof answer;
    answer.appended_answer = 12345;
    CHECK_STATUS(kw_verify(store, key, strlen(key), "10.0.0.1", NULL, &answer.current), KW_STATUS_OK);
    CHECK(answer.current.valid && answer.current.generation == 1 && strcmp(answer.current.key_id, id) == 0);
    CHECK(answer.current.size == sizeof answer); /* the program's size stays */
    CHECK(answer.appended_answer == 12345);      /* not written past what the library knows */

    /* --- a program built against this header ---------------------------- */
    kw_verdict v = { .size = sizeof v };
    CHECK_STATUS(kw_verify(store, key, strlen(key), "10.0.0.1", NULL, &v), KW_STATUS_OK);
    CHECK(v.valid && v.size == sizeof v);

    CHECK_STATUS(kw_store_close(store), KW_STATUS_OK);
    return report();
}
